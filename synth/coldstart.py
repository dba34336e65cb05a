"""The long-CoT cold-start builder (Qwen3 report, post-training stage 1).

    q3 synth coldstart queries=data/synth/verifiable/pairs.jsonl validation=val.jsonl \
        endpoint.base_url=http://host:8000/v1 candidates.n=4

1. Query filters: unverifiable, multi-part (synth/filters.py), then "answerable without CoT": one
   (or more) non-thinking samples (`/no_think`, non-thinking sampling: T=0.7, top-p 0.8); if a
   non-thinking answer already verifies, the query teaches no reasoning and is dropped.
2. Domain labels for balance: each query's `domain` (or a keyword guess); `max_per_domain` caps the
   kept queries per domain, taken in a deterministic order.
3. N candidate thinking-mode responses per query (T=0.6, top-p 0.95; distinct `seed` per candidate,
   so they are distinct requests for the cache), through the same client as everything else.
4. Response filters: wrong answer, repetition, guessing, thinking vs summary, language mixing, too
   similar to validation items. The first `keep_per_query` surviving candidates are kept.
5. Output <out>/sft.jsonl in the Qwen3 chat format: messages with the assistant turn
   "<think>\\n...\\n</think>\\n\\n<summary>", plus rejected_queries.jsonl / rejected_responses.jsonl
   (every drop with its reason) and counts in the success marker.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from q3.atomic import atomic_dir
from q3.config import ConfigError, Q3Config, config_hash, load_config
from q3.errors import require_nonempty, require_path
from q3.jsonl import read_jsonl
from q3.log import get_logger, print_table
from q3.paths import data_dir
from q3.tokenizer import THINK
from synth import filters
from synth.llm_calls import EndpointConfig, EndpointUnavailable, ask_sync, run_cli_job
from synth.verifiers import verify

log = get_logger("synth.coldstart")


class Sampling(Q3Config):
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.8
    max_tokens: int = 1024
    extra: dict[str, Any] = Field(default_factory=dict)   # e.g. top_k, presence_penalty (server-specific)


class FilterConfig(Q3Config):
    repetition: dict[str, Any] = Field(default_factory=dict)       # n, max_dup_frac, max_line_repeats
    guessing: dict[str, Any] = Field(default_factory=dict)         # min_think_words
    language_mixing: dict[str, Any] = Field(default_factory=dict)  # max_foreign_frac
    validation_ngram: int = 8
    validation_threshold: float = 0.5


class ColdStartConfig(Q3Config):
    aliases = {"queries": "input"}
    input: str = ""                    # JSONL: query, verifier_type, verifier_data, domain?, id?
    validation: str = ""               # JSONL with `query` (or `text`) fields: held-out items
    output: str = ""                   # default: <data>/synth/coldstart
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    no_think: Sampling = Field(default_factory=lambda: Sampling(n=1, temperature=0.7, top_p=0.8, max_tokens=512))
    no_think_suffix: str = " /no_think"     # Qwen3's soft switch; the last flag in a dialogue wins
    candidates: Sampling = Field(default_factory=lambda: Sampling(n=4, temperature=0.6, top_p=0.95,
                                                                   max_tokens=4096))
    keep_per_query: int = 1
    max_per_domain: int | None = None
    filters: FilterConfig = Field(default_factory=FilterConfig)


_DOMAIN_WORDS = {
    "code": r"\b(?:python|function|def |code|program|algorithm|array|string)\b",
    "math": r"\b(?:solve|compute|integer|equation|prime|divisor|fraction|sum|remainder|\d+\s*[-+*/^]\s*\d+)",
    "logic": r"\b(?:knights?|knaves?|puzzle|clues?|who is|order)\b",
}


def domain_of(item: dict[str, Any]) -> str:
    if item.get("domain"):
        return str(item["domain"])
    q = item.get("query", "").lower()
    scores = {d: len(re.findall(p, q)) for d, p in _DOMAIN_WORDS.items()}
    best = max(scores, key=lambda d: scores[d])
    return best if scores[best] else "general"


def _read_jsonl(path: str, what: str) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(path, what)]   # missing file / bad line: one line, file:line


def _body(content: str, s: Sampling, seed: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}],
            "params": {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": seed,
                       **s.extra}}


def as_thinking_response(res: dict[str, Any]) -> str:
    """Qwen3 assistant text: servers either inline <think>...</think> or return it as `reasoning`."""
    text = (res.get("text") or "").strip()
    if res.get("reasoning") and THINK not in text:
        return f"<think>\n{res['reasoning'].strip()}\n</think>\n\n{text}"
    return text


def to_sft(item: dict[str, Any], response: str) -> dict[str, Any]:
    think, summary = filters.split_think(response) or ("", response)
    assistant = f"<think>\n{think}\n</think>\n\n{summary}"
    return {"messages": [{"role": "user", "content": item["query"]}, {"role": "assistant", "content": assistant}]}


def build(cfg: ColdStartConfig) -> dict[str, Any]:
    out = Path(cfg.output) if cfg.output else data_dir() / "synth" / "coldstart"
    cache = Path(cfg.endpoint.cache_dir) if cfg.endpoint.cache_dir else out.parent / f"{out.name}.cache"
    t0 = time.time()
    require_path(cfg.input, "input", "a JSONL of query-verifier pairs (`q3 synth verifiable` writes one)")
    items = _read_jsonl(cfg.input, "input (queries)")
    require_nonempty(len(items), "0 queries", f"input {cfg.input} holds no rows")
    if bad := next((i for i, it in enumerate(items) if not isinstance(it.get("query"), str)), None):
        raise ConfigError(f"{cfg.input}: row {bad + 1} has no string field 'query' (its fields: "
                          f"{', '.join(items[bad]) or '(none)'}); `q3 synth verifiable` writes such rows")
    for i, it in enumerate(items):
        it.setdefault("id", f"q{i}")
        it["domain"] = domain_of(it)
    val_texts = [v.get("query") or v.get("text") or "" for v in _read_jsonl(cfg.validation, "validation")] if cfg.validation else []
    validation = filters.NgramIndex(val_texts, cfg.filters.validation_ngram, cfg.filters.validation_threshold) \
        if val_texts else None
    rejected_q: list[dict[str, Any]] = []

    # 1. static query filters
    live = []
    for it in items:
        why = filters.unverifiable(it) or filters.multi_part(it.get("query", ""))
        if not why and validation is not None:
            why = validation.too_similar(it["query"])
        (rejected_q.append({"id": it["id"], "reason": why}) if why else live.append(it))

    # 1b. answerable without CoT: a non-thinking sample that already verifies
    bodies = [_body(it["query"] + cfg.no_think_suffix, cfg.no_think, seed=k)
              for it in live for k in range(cfg.no_think.n)]
    res = ask_sync(cfg.endpoint, cache, bodies)
    tokens = Counter()
    _count(tokens, res, "no_think")
    still = []
    for j, it in enumerate(live):
        answers = res[j * cfg.no_think.n:(j + 1) * cfg.no_think.n]
        solved = [a for a in answers if a.get("text") is not None
                  and verify(filters.strip_to_answer(a["text"]), it["verifier_type"], it["verifier_data"]).passed]
        if solved:
            rejected_q.append({"id": it["id"], "reason": "answerable_without_cot"})
        else:
            still.append(it)

    # 2. balance by domain
    per_domain: Counter = Counter()
    balanced = []
    for it in still:
        if cfg.max_per_domain is not None and per_domain[it["domain"]] >= cfg.max_per_domain:
            rejected_q.append({"id": it["id"], "reason": "domain_cap"})
            continue
        per_domain[it["domain"]] += 1
        balanced.append(it)

    # 3. N thinking-mode candidates per query
    n = cfg.candidates.n
    bodies = [_body(it["query"], cfg.candidates, seed=1000 + k) for it in balanced for k in range(n)]
    res = ask_sync(cfg.endpoint, cache, bodies)
    _count(tokens, res, "candidates")

    # 4. response filters
    fcfg = cfg.filters.model_dump()
    sft, rejected_r = [], []
    for j, it in enumerate(balanced):
        kept = 0
        for k, r in enumerate(res[j * n:(j + 1) * n]):
            if r.get("error"):
                rejected_r.append({"id": it["id"], "candidate": k, "reason": "request_failed", "detail": r["error"]})
                continue
            resp = as_thinking_response(r)
            why = filters.response_filters(it, resp, validation, fcfg) if kept < cfg.keep_per_query else "surplus"
            if why:
                rejected_r.append({"id": it["id"], "candidate": k, "reason": why, "response": resp[:2000]})
                continue
            kept += 1
            sft.append({**to_sft(it, resp), "id": f"{it['id']}-c{k}", "query_id": it["id"], "domain": it["domain"],
                        "subdomain": it.get("subdomain"), "difficulty": it.get("difficulty"),
                        "provenance": {"model": cfg.endpoint.resolved_model(), "candidate": k, "request_key": r.get("key"),
                                       "query_source": it.get("source"), "config_hash": config_hash(cfg)}})
        if kept == 0:
            rejected_q.append({"id": it["id"], "reason": "no_candidate_survived"})

    reasons_r = Counter(r["reason"].split(":")[0] for r in rejected_r)
    reasons_q = Counter(r["reason"] for r in rejected_q)
    meta = {"queries": len(items), "sft": len(sft), "queries_rejected": dict(reasons_q),
            "responses_rejected": dict(reasons_r), "domains": dict(Counter(s["domain"] for s in sft)),
            "tokens": dict(tokens), "seconds": round(time.time() - t0, 2), "config_hash": config_hash(cfg)}
    with atomic_dir(out, meta) as tmp:
        for name, rows in (("sft.jsonl", sft), ("rejected_queries.jsonl", rejected_q),
                           ("rejected_responses.jsonl", rejected_r)):
            with (tmp / name).open("w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print_table(f"cold-start SFT -> {out}/sft.jsonl ({meta['seconds']}s)", ["stage", "reason", "count"],
                [("query", k, v) for k, v in sorted(reasons_q.items())]
                + [("response", k, v) for k, v in sorted(reasons_r.items())]
                + [("kept", d, c) for d, c in sorted(meta["domains"].items())])
    return meta


def _check_transient(res: list[dict[str, Any]]) -> None:
    bad = [r["error"] for r in res if (r.get("error") or "").startswith("gave_up")]
    if bad:   # endpoint down: stop, write nothing; finished replies are cached, so a rerun resumes
        raise EndpointUnavailable(f"{len(bad)} of {len(res)} requests failed after retries ({bad[0][:200]}); "
                                  "rerun to resume")


def _count(tokens: Counter, res: list[dict[str, Any]], phase: str) -> None:
    _check_transient(res)
    tokens[f"{phase}_requests"] += len(res)
    tokens[f"{phase}_cache_hits"] += sum(bool(r.get("cached")) for r in res)
    tokens[f"{phase}_prompt_tokens"] += sum(r.get("prompt_tokens") or 0 for r in res)
    tokens[f"{phase}_completion_tokens"] += sum(r.get("completion_tokens") or 0 for r in res)


def cli(config: str | None, overrides: list[str]) -> int:
    """Build the filtered long-CoT cold-start SFT set (Qwen3 chat format, messages JSONL).

    keys: input (queries), validation, output, endpoint.*, no_think.*, candidates.{n,temperature,top_p,max_tokens},
    keep_per_query, max_per_domain, filters.*
    """
    cfg = load_config(ColdStartConfig, "synth", config or "coldstart", overrides)
    meta = run_cli_job(lambda: build(cfg), log)
    if meta is None:
        return 1
    print(json.dumps({k: meta[k] for k in ("queries", "sft", "seconds")}))
    return 0
