"""`q3 post select`: the RL query set, chosen the way the Qwen3 report describes (section 4.2).

The report's RL pairs are (1) not used in the cold-start phase, (2) learnable for the cold-start
model, (3) as challenging as possible, (4) spread over many sub-domains. Read top to bottom:

1. exclusion: every user turn of the cold-start chat files (`exclude=`, /think and /no_think
   flags stripped) is a seen query. A pair is dropped when its query equals one after
   normalisation (`seen_exact`), or is a near-duplicate of one (`seen_near_duplicate`: MinHash-LSH
   candidates over word shingles, confirmed by their exact Jaccard — `dataproc.dedup`'s functions),
   or repeats an earlier pair of the file (`duplicate`). Each exclusion goes to `excluded.jsonl`;
2. learnability: k replies per remaining query from the checkpoint (`train.post.evals.Evaluator`:
   the rollout engine with the report's sampling preset of the mode), scored with synth's
   verifiers; pass rate = c/k. Scores are appended per batch to `scores.jsonl`, so a killed run
   continues where it stopped (and gives the same result as an uninterrupted one);
3. selection (`select_pairs`, a pure function): keep 0 < pass rate < 1 (no GRPO signal outside),
   optionally inside [min_pass, max_pass]; hardest first, a cap per (domain, subdomain), round-robin
   over sub-domains, up to `max_pairs`.

Writes `<out>/rl_pairs.jsonl` (original fields + `pass_rate`, `k`, `select_model`), `<out>/select.json`
(counts per reason, pass-rate histogram, kept per subdomain) and prints a table:

    q3 post select --config select load=runs/post/coldstart pairs=data/post/eval_pairs.jsonl \
        exclude=[data/post/coldstart.jsonl,data/post/fusion.jsonl] out=data/post/rl
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dataproc.dedup.config import MinHashConfig
from q3.atomic import atomic_write_text
from q3.config import ConfigError, Q3Config, load_config
from q3.jsonl import read_jsonl
from q3.log import get_logger, print_table
from q3.paths import data_dir

log = get_logger("q3.post.select")


class NearDupConfig(MinHashConfig):
    """dataproc's MinHash config with defaults for short queries (so `near_dup.threshold=0.8`
    alone keeps them). Word bigrams: one changed word in a 20-word query leaves J ~ 0.8, while two
    instances of one synth template (other numbers / names) stay <= ~0.7. The banding is tuned for
    recall (P(candidate) 0.98 at J=0.75): every candidate is confirmed by its exact Jaccard."""

    word_ngram: int = Field(2, ge=1)
    char_ngram: int = Field(3, ge=1)
    threshold: float = Field(0.75, gt=0.0, lt=1.0)
    num_perm: int = Field(128, ge=2)
    fp_weight: float = 0.02
    fn_weight: float = 0.98


class SelectConfig(Q3Config):
    pairs: str                                   # RL pairs JSONL (`q3 synth verifiable`, eval_pairs.jsonl)
    exclude: list[str] = Field(default_factory=list)   # chat JSONL used in cold start (or RL pairs)
    load: str                                    # the cold-start checkpoint or an HF folder
    model: str | None = None                     # conf/model name for checkpoints without a sidecar
    out: str | None = None                       # default: <data>/post/select
    k: int = Field(default=8, ge=1)              # replies per query
    mode: Literal["think", "no_think"] = "think"  # flag appended to each query (as `q3 post eval`)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float | None = None             # None: the mode's preset
    seed: int = 0
    batch: int = Field(default=16, ge=1)         # queries per engine call: progress + resume unit
    min_pass: float = Field(default=0.0, ge=0.0, le=1.0)   # optional band inside 0 < p < 1
    max_pass: float = Field(default=1.0, ge=0.0, le=1.0)
    per_subdomain: int | None = Field(default=None, ge=1)  # cap per (domain, subdomain)
    max_pairs: int | None = Field(default=None, ge=1)
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)

    @model_validator(mode="after")
    def _band(self) -> SelectConfig:
        if self.min_pass > self.max_pass:
            raise ValueError(f"min_pass={self.min_pass} is above max_pass={self.max_pass}")
        return self


# ---------------------------------------------------------------- 1. exclusion

_FLAG = re.compile(r"(?<!\S)/(?:no_)?think(?!\S)")


def strip_flags(text: str) -> str:
    """A query without the soft-switch flags the fusion data adds to user turns."""
    return _FLAG.sub(" ", text).strip()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):              # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def seen_queries(paths: Iterable[str]) -> list[str]:
    """Every user turn of chat JSONL rows (`messages`), or the `query` of RL pair rows."""
    out: list[str] = []
    for p in paths:
        for where, row in read_jsonl(p, "exclude"):
            if isinstance(row.get("messages"), list):
                out += [strip_flags(_text(m.get("content"))) for m in row["messages"]
                        if isinstance(m, dict) and m.get("role") == "user"]
            elif isinstance(row.get("query"), str):
                out.append(strip_flags(row["query"]))
            else:
                raise ConfigError(f"{where}: neither a chat row ('messages') nor an RL pair ('query')")
    return [q for q in out if q]


class SeenIndex:
    """Exact keys and an LSH index of the seen queries; `match_many(qs)` -> (reason, seen text, jaccard)
    or None per query. Per band a sorted array of bucket keys (16 bytes per query and band, no
    Python objects per entry), so millions of cold-start turns fit; LSH candidates are confirmed
    by their exact Jaccard, so the banding only costs recall (~0.98 at the threshold by default)."""

    CHUNK = 8192                                # queries signed at once: bounded signature memory

    def __init__(self, texts: list[str], cfg: MinHashConfig):
        import numpy as np

        from dataproc.dedup.exact import exact_normalise
        from dataproc.dedup.lsh import bands_rows

        self.cfg, self.texts = cfg, texts
        self.exact = {exact_normalise(t): i for i, t in enumerate(texts)}
        self.b, self.r = bands_rows(cfg)
        self.bands = []                         # per band: (sorted keys, seen index of each)
        if not cfg.enabled:                     # near_dup.enabled=false: exact matches only
            return
        keys, has = self._keys(texts)
        idx = np.flatnonzero(has)
        for j in range(self.b):
            order = idx[np.argsort(keys[idx, j], kind="stable")]
            self.bands.append((keys[order, j], order))

    def _keys(self, texts: list[str]):
        import numpy as np

        from dataproc.dedup.lsh import band_keys
        from dataproc.dedup.minhash import Signer

        signer = Signer(self.cfg)
        keys, has = np.empty((len(texts), self.b), np.int64), np.zeros(len(texts), bool)
        for s in range(0, len(texts), self.CHUNK):
            part = texts[s:s + self.CHUNK]
            sigs, h = signer.sign(part, [_lang(t) for t in part])
            keys[s:s + len(part)], has[s:s + len(part)] = band_keys(sigs, self.b, self.r), h
        return keys, has

    def match_many(self, queries: list[str]) -> list[tuple[str, str, float] | None]:
        import numpy as np

        from dataproc.dedup.exact import exact_normalise
        from dataproc.dedup.minhash import jaccard_pairs

        out: list[tuple[str, str, float] | None] = [None] * len(queries)
        if not queries or not self.texts:
            return out
        cands: list[set[int]] = [set() for _ in queries]
        keys, has = self._keys(queries) if self.bands else (None, None)
        for j, (sorted_keys, order) in enumerate(self.bands):
            lo = np.searchsorted(sorted_keys, keys[:, j], "left")
            hi = np.searchsorted(sorted_keys, keys[:, j], "right")
            for n in np.flatnonzero((hi > lo) & has):
                cands[n].update(order[lo[n]:hi[n]].tolist())
        pending: list[tuple[int, int]] = []          # (query, candidate) pairs left after exact hits
        for n, q in enumerate(queries):
            i = self.exact.get(exact_normalise(q))
            if i is not None:
                out[n] = ("seen_exact", self.texts[i], 1.0)
                continue
            pending.extend((n, i) for i in sorted(cands[n]))
        if not pending:
            return out
        # one batched Jaccard: each query's and candidate's shingle set is computed once
        used = sorted({i for _, i in pending})
        slot = {i: len(queries) + k for k, i in enumerate(used)}
        texts = [*queries, *(self.texts[i] for i in used)]
        js = jaccard_pairs(texts, [_lang(t) for t in texts], np.array([n for n, _ in pending]),
                           np.array([slot[i] for _, i in pending]), self.cfg)
        best: dict[int, tuple[float, int]] = {}
        for (n, i), j in zip(pending, js.tolist(), strict=True):
            best[n] = max(best.get(n, (0.0, -1)), (j, i))
        for n, (j, i) in best.items():
            if j >= self.cfg.threshold:
                out[n] = ("seen_near_duplicate", self.texts[i], round(j, 4))
        return out


def _lang(text: str) -> str | None:
    """Character shingles for CJK/Thai queries (no word spaces), word shingles otherwise."""
    from dataproc.dedup.decontam import looks_unsegmented

    return "cmn_Hans" if looks_unsegmented(text) else None


def exclude_seen(items: list[dict], seen: list[str], cfg: MinHashConfig) -> tuple[list[dict], list[dict]]:
    """(remaining pairs, exclusion records {id, query, reason, seen, jaccard})."""
    from dataproc.dedup.exact import exact_normalise

    index = SeenIndex(seen, cfg)
    matches = index.match_many([strip_flags(it["query"]) for it in items])
    keep, excluded, firsts = [], [], set()
    for it, m in zip(items, matches, strict=True):
        key = exact_normalise(strip_flags(it["query"]))
        if m is None and key in firsts:
            m = ("duplicate", it["query"], 1.0)
        if m is not None:
            excluded.append({"id": it.get("id"), "query": it["query"], "reason": m[0], "seen": m[1], "jaccard": m[2]})
            continue
        firsts.add(key)
        keep.append(it)
    return keep, excluded


# ---------------------------------------------------------------- 3. selection (pure)

def _group(it: dict) -> str:
    return f"{it.get('domain', '?')}/{it.get('subdomain', '?')}"


def select_pairs(items: list[dict], min_pass: float = 0.0, max_pass: float = 1.0, per_subdomain: int | None = None,
                 max_pairs: int | None = None) -> tuple[list[dict], dict[str, int]]:
    """Pairs with a `pass_rate` -> (kept in selection order, dropped counts per reason).

    Kept: 0 < p < 1 and min_pass <= p <= max_pass. Within a (domain, subdomain) the hardest come first
    (lower p, then higher difficulty, then id); each round takes the next pair of every sub-domain
    under its cap, hardest of the round first, until max_pairs: balance first, then difficulty."""
    dropped: Counter[str] = Counter()
    groups: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        p = it["pass_rate"]
        if p <= 0.0:
            dropped["unlearnable"] += 1
        elif p >= 1.0:
            dropped["solved"] += 1
        elif not min_pass <= p <= max_pass:
            dropped["outside_band"] += 1
        else:
            groups[_group(it)].append(it)
    for g in groups.values():
        g.sort(key=lambda it: (it["pass_rate"], -int(it.get("difficulty") or 0), str(it.get("id"))))
        if per_subdomain is not None and len(g) > per_subdomain:
            dropped["over_subdomain_cap"] += len(g) - per_subdomain
            del g[per_subdomain:]
    kept: list[dict] = []
    depth = 0
    while True:
        layer = sorted((g[depth] for g in groups.values() if depth < len(g)),
                       key=lambda it: (it["pass_rate"], _group(it)))
        if not layer:
            break
        kept += layer
        depth += 1
    if max_pairs is not None and len(kept) > max_pairs:
        dropped["over_max_pairs"] += len(kept) - max_pairs
        kept = kept[:max_pairs]
    return kept, {r: dropped[r] for r in ("unlearnable", "solved", "outside_band", "over_subdomain_cap",
                                          "over_max_pairs")}


# ---------------------------------------------------------------- 2. learnability

def _cache_key(cfg: SelectConfig) -> str:
    """Scores are reusable only when sampled the same way from the same checkpoint path."""
    d = {"load": str(Path(cfg.load).resolve()), "k": cfg.k, "mode": cfg.mode, "max_tokens": cfg.max_tokens,
         "temperature": cfg.temperature, "seed": cfg.seed, "batch": cfg.batch}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def read_scores(path: Path, key: str) -> dict[str, dict]:
    """Cached scores of this sampling setup (a torn last line of a killed run is ignored)."""
    out: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("key") == key:
                out[row["id"]] = row
    return out


def score_pairs(items: list[dict], cfg: SelectConfig, cache: Path) -> tuple[dict[str, dict], str | None]:
    """{id: {c, k, truncated, tokens}} for every item, sampling only batches not in the cache.
    Batches are fixed slices of `items` with seed + 2*index, so a resumed run samples what an
    uninterrupted one would. Returns (scores, model name or None when nothing was sampled)."""
    from synth.verifiers import verify_item
    from train.post.evals import EvalConfig, Evaluator, flag

    key = _cache_key(cfg)
    scores = read_scores(cache, key)
    batches = [items[s:s + cfg.batch] for s in range(0, len(items), cfg.batch)]
    todo = [(b, chunk) for b, chunk in enumerate(batches) if any(str(it["id"]) not in scores for it in chunk)]
    done = len(items) - sum(len(c) for _, c in todo)
    if done:
        log.info("resuming: %d of %d queries already scored in %s", done, len(items), cache)
    if not todo:
        return scores, None
    from train.generate import load_lm

    lm, tok, name = load_lm(cfg.load, cfg.model)
    ecfg = EvalConfig(load=cfg.load, pairs=cfg.pairs, max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    ev = Evaluator(lm.engine, tok, ecfg)
    t0, n = time.time(), 0
    learnable = sum(0 < s["c"] < s["k"] for s in scores.values())
    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.is_file() and cache.stat().st_size and not cache.read_bytes().endswith(b"\n"):
        with cache.open("a", encoding="utf-8") as fh:     # close a torn line, or it eats the next row
            fh.write("\n")
    for b, chunk in todo:
        dialogues = [[{"role": "user", "content": it["query"] + flag(cfg.mode)}] for it in chunk]
        groups = ev.replies(dialogues, [cfg.mode == "think"] * len(chunk), cfg.k, cfg.seed + 2 * b)
        rows = []
        for it, group in zip(chunk, groups, strict=True):
            c = sum(verify_item(r.text, it).passed for r in group)
            rows.append({"id": str(it["id"]), "key": key, "c": c, "k": len(group),
                         "truncated": sum(r.finish_reason == "length" for r in group),
                         "tokens": sum(r.tokens for r in group)})
        with cache.open("a", encoding="utf-8") as fh:     # one write per batch: the resume unit
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
        for r in rows:
            scores[r["id"]] = r
        n += len(chunk)
        learnable += sum(0 < r["c"] < r["k"] for r in rows)
        el = time.time() - t0
        log.info("sampled %d/%d queries (k=%d): %.2f s/query, eta %.0f s, learnable so far %d",
                 done + n, len(items), cfg.k, el / n, el / n * (len(items) - done - n), learnable)
    return scores, name


# ---------------------------------------------------------------- the verb

def _read_pairs(path: Path) -> list[dict]:
    from synth.verifiers import VERIFIERS

    if not path.is_file():
        raise ConfigError(f"pairs file not found: {path} (make it with `q3 synth verifiable` or `q3 post prepare`)")
    items: list[dict] = []
    ids: dict[str, str] = {}
    for where, it in read_jsonl(path, "pairs"):
        if not all(k in it for k in ("id", "query", "verifier_type")):
            raise ConfigError(f"{where}: not an RL pair (needs id, query, verifier_type, verifier_data)")
        if it["verifier_type"] not in VERIFIERS or not isinstance(it.get("verifier_data"), dict):
            # an unknown verifier scores 0: every such pair would pass as "unlearnable"
            raise ConfigError(f"{where}: verifier_type {it['verifier_type']!r} with verifier_data "
                              f"{type(it.get('verifier_data')).__name__}; known verifiers: {', '.join(VERIFIERS)}")
        if str(it["id"]) in ids:                  # scores are cached per id
            raise ConfigError(f"{where}: duplicate id {it['id']!r} (also at {ids[str(it['id'])]})")
        ids[str(it["id"])] = where
        items.append(it)
    if not items:
        raise ConfigError(f"{path}: no RL pairs in the file")
    return items


def histogram(scores: Iterable[dict]) -> dict[str, int]:
    """Queries per c/k, in order of c (k is the same for all in one run)."""
    cnt = Counter((s["c"], s["k"]) for s in scores)
    return {f"{c}/{k}": cnt[(c, k)] for c, k in sorted(cnt)}


def run(cfg: SelectConfig) -> dict:
    src = Path(cfg.pairs)
    items = _read_pairs(src)
    if not Path(cfg.load).exists():
        raise ConfigError(f"load={cfg.load}: no such checkpoint or HF folder")
    seen = seen_queries(cfg.exclude)
    out = Path(cfg.out) if cfg.out else data_dir() / "post" / "select"
    out.mkdir(parents=True, exist_ok=True)

    remaining, excluded = exclude_seen(items, seen, cfg.near_dup)
    atomic_write_text(out / "excluded.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in excluded))
    reasons = Counter(e["reason"] for e in excluded)
    summary: dict[str, Any] = {
        "pairs": str(src), "exclude": cfg.exclude, "load": cfg.load, "k": cfg.k, "mode": cfg.mode,
        "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "seed": cfg.seed,
        "band": [cfg.min_pass, cfg.max_pass], "per_subdomain": cfg.per_subdomain, "max_pairs": cfg.max_pairs,
        "counts": {"pairs": len(items), "seen_queries": len(seen),
                   "excluded": {r: reasons[r] for r in ("seen_exact", "seen_near_duplicate", "duplicate")},
                   "candidates": len(remaining)}}
    log.info("%d pairs, %d seen queries: excluded %s, %d candidates", len(items), len(seen),
             dict(summary["counts"]["excluded"]), len(remaining))
    if not remaining:
        atomic_write_text(out / "select.json", json.dumps(summary, indent=1, sort_keys=True))
        raise ConfigError(f"all {len(items)} pairs of {src} were seen in cold start ({dict(reasons)}); "
                          f"pass fresh pairs, or raise near_dup.threshold (now {cfg.near_dup.threshold})")

    scores, name = score_pairs(remaining, cfg, out / "scores.jsonl")
    scored = [{**it, "pass_rate": scores[str(it["id"])]["c"] / scores[str(it["id"])]["k"],
               "k": scores[str(it["id"])]["k"], "select_model": cfg.load} for it in remaining]
    kept, dropped = select_pairs(scored, cfg.min_pass, cfg.max_pass, cfg.per_subdomain, cfg.max_pairs)
    sc = [scores[str(it["id"])] for it in remaining]
    total = sum(s["k"] for s in sc)
    summary.update(model=name, pass_rate_histogram=histogram(sc),
                   truncated_share=round(sum(s["truncated"] for s in sc) / max(total, 1), 4),
                   mean_tokens=round(sum(s["tokens"] for s in sc) / max(total, 1), 2),
                   candidates_per_subdomain=dict(sorted(Counter(_group(it) for it in remaining).items())),
                   kept_per_subdomain=dict(sorted(Counter(_group(it) for it in kept).items())))
    summary["counts"].update(dropped=dropped, kept=len(kept))
    summary["rl_pairs"] = str(out / "rl_pairs.jsonl") if kept else None
    atomic_write_text(out / "select.json", json.dumps(summary, indent=1, sort_keys=True))
    _print(summary, out)
    if not kept:
        hint = (f"{dropped['unlearnable']} never solved, {dropped['solved']} always solved, "
                f"{dropped['outside_band']} outside [{cfg.min_pass}, {cfg.max_pass}]")
        more = " and max_tokens (most replies hit it)" if summary["truncated_share"] > 0.5 else ""
        raise ConfigError(f"no pair has 0 < pass rate < 1 among {len(remaining)} candidates ({hint}); "
                          f"sample more (k={cfg.k}), raise temperature{more}, widen the band, "
                          f"or select with a stronger/weaker checkpoint (see {out / 'select.json'})")
    atomic_write_text(out / "rl_pairs.jsonl", "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in kept))
    print(f"rl pairs: {out / 'rl_pairs.jsonl'}")
    return summary


def _print(summary: dict, out: Path) -> None:
    c = summary["counts"]
    rows: list[tuple[str, Any]] = [("pairs", c["pairs"])]
    rows += [(f"excluded: {r}", n) for r, n in c["excluded"].items()]
    rows.append(("candidates (sampled)", c["candidates"]))
    rows += [(f"pass rate {h}", n) for h, n in summary["pass_rate_histogram"].items()]
    rows += [(f"dropped: {r}", n) for r, n in c["dropped"].items()]
    rows += [(f"kept: {g}", n) for g, n in summary["kept_per_subdomain"].items()]
    rows.append(("kept", c["kept"]))
    print_table(f"post select: {out}", ["what", "pairs"], rows)


def cli(config: str | None, overrides: list[str]) -> int:
    """RL query set: q3 post select load=CKPT pairs=pairs.jsonl exclude=[coldstart.jsonl] out=DIR [k=8]"""
    run(load_config(SelectConfig, "post", config, overrides))
    return 0
