"""`q3 label judge`: judge a stratified sample of documents on every judge dimension.

Sampling is stratified by (lang, source, length bucket) and deterministic: inside a stratum,
documents are ordered by a hash of (seed, id), and strata contribute in turn (round robin) until
`judge.sample_size` is reached, so small languages are not drowned by big ones. Each (document,
dimension) is one chat request through q3/llm.py with the dimension's JSON schema; the prompt names
the document's language and asks for JSON. Invalid, refused or failed judgements are kept as rows
with `ok=false` and the reason in `error`.

Output: <output>/judgements/judgements.parquet (committed atomically; reruns hit the LLM cache).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from labeling.config import LabelConfig
from labeling.dimensions import Dimension, load_dimensions
from q3.atomic import atomic_dir
from q3.config import config_hash, load_config
from q3.engine.io import read_corpus
from q3.errors import require_nonempty, require_path
from q3.llm import ChatRequest, LLMClient, LLMConfigError
from q3.log import get_logger, print_table

log = get_logger("labeling.judge")

JUDGEMENT_SCHEMA = pa.schema([
    ("id", pa.string()), ("lang", pa.string()), ("source", pa.string()), ("n_chars", pa.int64()),
    ("stratum", pa.string()), ("text", pa.string()), ("dimension", pa.string()), ("ok", pa.bool_()),
    ("error", pa.string()), ("answer", pa.string()), ("model", pa.string()), ("cached", pa.bool_()),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
])


@functools.cache
def _registry_names() -> dict[str, str]:
    """`lang` code -> English name, from the corpus's language registry (conf/languages.yaml)."""
    from q3.languages import load_registry

    return {code: lang.name for code, lang in load_registry().by_code.items()}


def language_name(lang: str) -> str:
    """How the judge prompt names a document's language (any of the registry's 119)."""
    if lang.startswith("code_"):
        return f"the {lang[5:]} programming language (source code)"
    return _registry_names().get(lang, lang)


def length_bucket(n: int, bounds: list[int]) -> str:
    for i, b in enumerate(bounds):
        if n < b:
            return f"len{i}<{b}"
    return f"len{len(bounds)}>={bounds[-1]}" if bounds else "all"


def stratified_sample(docs: pa.Table, size: int, seed: int, bounds: list[int]) -> list[tuple[int, str]]:
    """(row index, stratum) of up to `size` documents, round robin over sorted strata."""
    ids, langs, sources = docs["id"].to_pylist(), docs["lang"].to_pylist(), docs["source"].to_pylist()
    n_chars = docs["n_chars"].to_pylist()
    strata: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for i, (id_, lang, src, n) in enumerate(zip(ids, langs, sources, n_chars, strict=True)):
        key = f"{lang}|{src}|{length_bucket(n or 0, bounds)}"
        strata[key].append((hashlib.sha256(f"{seed}:{id_}".encode()).hexdigest(), i))
    queues = {k: sorted(v) for k, v in sorted(strata.items())}
    picked: list[tuple[int, str]] = []
    depth = 0
    while len(picked) < size and any(len(q) > depth for q in queues.values()):
        for k, q in queues.items():
            if depth < len(q) and len(picked) < size:
                picked.append((q[depth][1], k))
        depth += 1
    return picked


def build_request(dim: Dimension, text: str, lang: str, cfg: LabelConfig) -> ChatRequest:
    prompt = dim.render(text[: cfg.judge.max_doc_chars], language_name(lang))
    system = ("You are a careful data annotator. Documents may be in any language; judge the content "
              "and answer with a single JSON object that matches the requested format, nothing else.")
    params = {"temperature": cfg.judge.temperature, "max_tokens": cfg.judge.max_tokens}
    req = ChatRequest.user(prompt, system=system, schema=dim.schema_, schema_name=dim.name, params=params)
    if dim.examples:            # few-shot: (user, assistant) turns between the system and the real question
        shots = [m for ex in dim.examples for m in (
            {"role": "user", "content": dim.render(ex.text, "English")},
            {"role": "assistant", "content": json.dumps(ex.answer, ensure_ascii=False)})]
        req.messages = [req.messages[0], *shots, req.messages[-1]]
    return req


def run_judge(cfg: LabelConfig) -> Path:
    t0 = time.time()
    dims = [d for d in load_dimensions(cfg.dimensions_dir, cfg.dimensions) if d.source == "judge"]
    docs = read_corpus(require_path(cfg.input_path(), "input", "kept documents from `q3 data run` or a JSONL"),
                     ["id", "text", "source", "lang", "n_chars"])
    require_nonempty(docs.num_rows, "0 documents to judge", f"input {cfg.input_path()} holds no rows",
                     allow_empty=cfg.allow_empty)
    picked = stratified_sample(docs, cfg.judge.sample_size, cfg.judge.seed, cfg.judge.length_buckets)
    log.info("judging %d documents (%d strata) x %d dimensions via %s model %s", len(picked),
             len({s for _, s in picked}), len(dims), cfg.endpoint.resolved_base_url(), cfg.endpoint.resolved_model())
    endpoint = cfg.endpoint.model_copy(update={"cache_dir": cfg.cache_dir()})
    client = LLMClient(endpoint)
    texts, langs = docs["text"].to_pylist(), docs["lang"].to_pylist()
    reqs = [build_request(d, texts[i], langs[i], cfg) for i, _ in picked for d in dims]
    results = client.complete_many(reqs)

    cols: dict[str, list] = {f.name: [] for f in JUDGEMENT_SCHEMA}
    ids, sources, n_chars = docs["id"].to_pylist(), docs["source"].to_pylist(), docs["n_chars"].to_pylist()
    model = endpoint.resolved_model()
    it = iter(results)
    for i, stratum in picked:
        for d in dims:
            r = next(it)
            row = {"id": ids[i], "lang": langs[i], "source": sources[i], "n_chars": n_chars[i],
                   "stratum": stratum, "text": texts[i], "dimension": d.name, "ok": r.ok, "error": r.error,
                   "answer": json.dumps(r.data, ensure_ascii=False) if r.ok else r.text, "model": model,
                   "cached": r.cached, "prompt_tokens": r.usage.get("prompt_tokens", 0),
                   "completion_tokens": r.usage.get("completion_tokens", 0)}
            for k, v in row.items():
                cols[k].append(v)
    table = pa.Table.from_pydict(cols, schema=JUDGEMENT_SCHEMA)

    per_dim = defaultdict(lambda: {"n": 0, "ok": 0, "errors": defaultdict(int)})
    for dname, ok, err in zip(cols["dimension"], cols["ok"], cols["error"], strict=True):
        s = per_dim[dname]
        s["n"] += 1
        s["ok"] += ok
        if err:
            s["errors"][err.split(":")[0]] += 1
    # the one empty-run rule (q3.errors): an endpoint that answered nothing is a failed run, and
    # nothing is committed (`q3 label train` would otherwise "train" on 0 judgements)
    errors: dict[str, int] = defaultdict(int)
    for v in per_dim.values():
        for e, c in v["errors"].items():
            errors[e] += c
    first = next((e for e in cols["error"] if e), "")
    require_nonempty(sum(cols["ok"]), f"0 of {len(cols['ok'])} judgements valid",
                     f"the endpoint {endpoint.resolved_base_url()} (model {model!r}) answered nothing usable "
                     f"({', '.join(f'{e}={c}' for e, c in sorted(errors.items())) or 'no requests'}; "
                     f"e.g. {first[:200]!r}); check endpoint.base_url / endpoint.model",
                     allow_empty=cfg.allow_empty)
    out = cfg.work() / "judgements"
    meta = {"config_hash": config_hash(cfg), "model": model, "documents": len(picked),
            "stats": client.stats.as_dict(), "dimensions": {k: {"n": v["n"], "ok": v["ok"],
                                                                "errors": dict(v["errors"])}
                                                            for k, v in per_dim.items()}}
    with atomic_dir(out, meta) as tmp:
        pq.write_table(table, tmp / "judgements.parquet")
    st = client.stats
    print_table(f"judgements ({model}): {out}", ["dimension", "judged", "valid", "invalid (reasons)"],
                [(k, v["n"], v["ok"], ", ".join(f"{e}={c}" for e, c in sorted(v["errors"].items())) or "-")
                 for k, v in sorted(per_dim.items())])
    print_table("LLM client", ["requests", "sent", "retries", "malformed", "dup sends", "cache hits",
                               "prompt tok", "completion tok", "cost", "seconds"],
                [(st.requests, st.sent, st.retries, st.malformed, st.duplicate_sends, st.cache_hits,
                  st.prompt_tokens, st.completion_tokens, round(st.cost, 4), round(time.time() - t0, 1))])
    return out


def cli(config: str | None, overrides: list[str]) -> int:
    """LLM-judge a stratified sample on every dimension."""
    cfg = load_config(LabelConfig, "labeling", config, overrides)
    try:
        run_judge(cfg)
    except LLMConfigError as e:       # no endpoint / wrong model / bad key: say what to fix, no traceback
        log.error("%s", e)
        return 2
    return 0
