"""The synthetic generation engine: seed documents x templates -> requests -> rows with provenance.

    q3 synth run input=seeds.parquet output=data/synth/run endpoint.base_url=http://host:8000/v1

Plan: seed documents are sorted by id and cut into shards of `shard_size`; each shard's requests
(document x applicable template [x target language]) go through q3.llm's client with a bounded
async pool, and the shard's rows are committed atomically (q3.atomic) under <output>/shards/.
The same `process_shard` runs locally or inside Spark's mapInArrow (one async pool per partition).

Resumable: committed shards are skipped, and inside an unfinished shard every request that already
got a response is answered from the client's on-disk cache, so a killed run re-sends nothing that
had finished. `finalize` then removes exact duplicates (normalised-text hash), decontaminates
against benchmark n-grams, and writes <output>/final/{data,rejected}.parquet with token totals.
Every row carries provenance: template (+hash), model, seed document id, target language, config
hash, request key, token usage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from dataproc.dedup.config import DecontamConfig
from dataproc.dedup.decontam import Decontaminator
from dataproc.dedup.exact import exact_normalise
from q3.atomic import atomic_dir, is_committed, read_marker
from q3.commit import JobKey, commit, job_key, reuse_if_committed
from q3.config import Q3Config, config_hash, load_config
from q3.errors import InputMissing, require_nonempty
from q3.llm import extract_json
from q3.log import get_logger, print_table, progress
from q3.paths import data_dir
from q3.schemas import DOC_SCHEMA, content_id
from synth.llm_calls import EndpointConfig, EndpointUnavailable, ask_sync, run_cli_job
from synth.templates import Template, load_template

log = get_logger("synth.engine")

PROVENANCE_TYPE = pa.struct([
    ("template", pa.string()),
    ("template_hash", pa.string()),
    ("model", pa.string()),
    ("seed_id", pa.string()),
    ("seed_source", pa.string()),
    ("target_lang", pa.string()),
    ("item", pa.int32()),               # index within a JSON reply holding several pairs
    ("config_hash", pa.string()),
    ("request_key", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("cached", pa.bool_()),
])
SYNTH_SCHEMA = pa.schema(list(DOC_SCHEMA) + [pa.field("provenance", PROVENANCE_TYPE),
                                             pa.field("reason", pa.string()), pa.field("detail", pa.string())])


class EngineConfig(Q3Config):
    input: str = ""
    output: str = ""
    templates: list[str] = Field(default_factory=lambda: ["textbook", "qa", "instructions", "code_exercise",
                                                          "multilingual", "ocr_refine"])
    target_languages: list[str] = Field(default_factory=lambda: ["eng_Latn", "deu_Latn", "fra_Latn", "cmn_Hans"])
    n_items: int = 3
    max_docs: int | None = None
    shard_size: int = Field(8, ge=1)
    runner: Literal["local", "spark"] = "local"
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    dedup: bool = True                # exact: normalised-text hash over the whole output
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)   # evals: [] = not checked
    min_output_chars: int = 20
    params: dict[str, Any] = Field(default_factory=dict)   # overrides every template's sampling params
    reject_truncated: bool = True     # replies cut by max_tokens are rejected (the demo's tiny model never stops)
    allow_empty: bool = False         # True: no seed rows / no answered request is not a failure
    max_seed_chars: int | None = Field(None, ge=1)   # caps every template's max_input_chars (CPU models: short prompts)


# ---- seeds and requests ----------------------------------------------------------------------------


def read_seeds(path: str, max_docs: int | None = None) -> pa.Table:
    """Seed documents as a table with id, text, lang, source, sorted by id (a stable shard plan)."""
    p = Path(path)
    if not path or not p.exists():
        raise InputMissing(f"seed input not found: {path!r}")
    if p.suffix in (".jsonl", ".json"):
        from q3.jsonl import read_text_rows

        rows = read_text_rows(p, "seed input", "seed rows need text (optional: id, lang, source)")
        table = pa.table({
            "id": [r.get("id") or content_id(r["text"]) for r in rows],
            "text": [r["text"] for r in rows],
            "lang": [r.get("lang") or r.get("lang_hint") or "und_Zyyy" for r in rows],
            "source": [r.get("source") or "seed" for r in rows],
        })
    else:
        table = pq.read_table(p, columns=["id", "text", "lang", "source"])
    table = table.sort_by("id")
    return table.slice(0, max_docs) if max_docs else table


def plan_requests(docs: list[dict[str, Any]], cfg: EngineConfig, templates: list[Template]
                  ) -> list[dict[str, Any]]:
    """Every (document, template[, target language]) that applies, in a deterministic order."""
    out = []
    for doc in docs:
        for t in templates:
            if not t.applies(doc):
                continue
            langs = [lang for lang in cfg.target_languages if lang != doc["lang"]] if t.per_language \
                else [doc["lang"]]
            for lang in langs:
                request = {"messages": t.messages(doc, lang, cfg.n_items), "params": {**t.params, **cfg.params},
                           "schema": t.json_schema if t.output == "json" else None, "schema_name": t.name}
                out.append({"doc": doc, "template": t, "lang": lang, "request": request})
    return out


# ---- one shard ---------------------------------------------------------------------------------------


def _rows_from_reply(req: dict[str, Any], res: dict[str, Any], chash: str, min_chars: int, model: str,
                     reject_truncated: bool = True) -> list[dict[str, Any]]:
    t: Template = req["template"]
    doc = req["doc"]
    prov = {"template": t.name, "template_hash": t.digest(), "model": model,
            "seed_id": doc["id"], "seed_source": doc["source"], "target_lang": req["lang"], "item": 0,
            "config_hash": chash, "request_key": res.get("key"), "prompt_tokens": res.get("prompt_tokens"),
            "completion_tokens": res.get("completion_tokens"), "finish_reason": res.get("finish_reason"),
            "cached": res.get("cached")}

    def row(text: str, item: int = 0, reason: str | None = None, detail: str | None = None) -> dict:
        lang = req["lang"]
        return {"id": content_id(text or f"{doc['id']}:{t.name}:{req['lang']}:{item}"), "text": text or "",
                "source": f"synth/{t.name}", "url": f"synth://{t.name}/{doc['id']}/{req['lang']}/{item}",
                "lang": lang, "n_chars": len(text or ""), "n_tokens": None,
                "provenance": {**prov, "item": item}, "reason": reason, "detail": detail}

    text = (res.get("text") or "").strip()
    if res.get("error"):
        if res["error"].startswith(("invalid_json", "schema_mismatch")):   # structured output unusable
            return [row(text, reason="bad_json", detail=res["error"][:300])]
        return [row(text, reason="request_failed", detail=res["error"][:300])]
    if res.get("finish_reason") == "length" and reject_truncated:
        return [row(text, reason="truncated", detail="finish_reason=length")]
    if t.output == "json":
        try:
            data = res.get("data") if res.get("data") is not None else extract_json(text)
            pairs = data["pairs"]
            if not isinstance(pairs, list):
                raise TypeError("pairs is not a list")
        except (ValueError, KeyError, TypeError):
            return [row(text, reason="bad_json", detail=text[:200])]
        rows = []
        for i, p in enumerate(pairs):
            vals = [str(v).strip() for v in p.values()] if isinstance(p, dict) else []
            body = "\n\n".join(v for v in vals if v)
            if len(vals) != 2 or not all(vals):
                rows.append(row(body, i, "bad_item", json.dumps(p, ensure_ascii=False)[:200]))
            else:
                rows.append(row(body, i, None if len(body) >= min_chars else "too_short"))
        return rows or [row(text, reason="empty", detail="no pairs")]
    if len(text) < min_chars:
        return [row(text, reason="too_short" if text else "empty")]
    return [row(text)]


def shard_dir(output: Path, shard: int) -> Path:
    return output / "shards" / f"shard-{shard:05d}"


def shard_done(target: Path, chash: str, seed_ids: list[str], job: str = "") -> bool:
    """Committed by a run with the same job key (config, input content, code: `q3.commit`) and the
    same seeds (else it is redone)."""
    if not is_committed(target):
        return False
    m = read_marker(target)
    return m.get("config_hash") == chash and m.get("seed_ids") == seed_ids and m.get("job", "") == job


# q3.llm.Stats counters kept per shard and summed in final/ (what happened on the wire)
CLIENT_COUNTERS = ("retries", "malformed", "duplicate_sends")


def process_shard(shard: int, docs: list[dict[str, Any]], cfg_json: dict[str, Any], output: str,
                  job: str = "") -> dict[str, Any]:
    """Generate one shard and commit it atomically; a shard committed under the same job key `job`
    is skipped. Returns its stats."""
    cfg = EngineConfig.model_validate(cfg_json)
    out = Path(output)
    target = shard_dir(out, shard)
    chash = run_config_hash(cfg)
    if shard_done(target, chash, [d["id"] for d in docs], job):
        return {**read_marker(target), "skipped": True}
    # not committed, or committed by another config / shard plan: (re)generate (the cache still helps)
    templates = [_template(n, cfg) for n in cfg.templates]
    reqs = plan_requests(docs, cfg, templates)
    cache = Path(cfg.endpoint.cache_dir) if cfg.endpoint.cache_dir else out / "cache"
    t0 = time.time()

    client: dict[str, Any] = {}
    results = ask_sync(cfg.endpoint, cache, [r["request"] for r in reqs], stats=client)
    transient = [r["error"] for r in results if (r.get("error") or "").startswith("gave_up")]
    if transient:   # endpoint down or overloaded: commit nothing, so a rerun retries (answers are cached)
        raise EndpointUnavailable(f"shard {shard}: {len(transient)} of {len(reqs)} requests failed after "
                                  f"retries ({transient[0][:200]}); finished replies are cached - rerun to resume")
    model = cfg.endpoint.resolved_model()
    rows = [r for req, res in zip(reqs, results, strict=True)
            for r in _rows_from_reply(req, res, chash, cfg.min_output_chars, model, cfg.reject_truncated)]
    _maybe_crash(shard)
    stats = {"shard": shard, "docs": len(docs), "requests": len(reqs),
             "cache_hits": sum(bool(r.get("cached")) for r in results),
             "failed": sum(r.get("error") is not None for r in results),
             "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in results),
             "completion_tokens": sum(r.get("completion_tokens") or 0 for r in results),
             **{k: client.get(k, 0) for k in CLIENT_COUNTERS},
             "rows": len(rows), "seconds": round(time.time() - t0, 3), "config_hash": chash,
             "seed_ids": [d["id"] for d in docs], "job": job}
    with atomic_dir(target, dict(stats)) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=SYNTH_SCHEMA), tmp / "rows.parquet")
    return {**stats, "skipped": False}


def _maybe_crash(shard: int) -> None:
    """Fault injection for the resume test: Q3_SYNTH_CRASH_AT_SHARD=k kills the process (no cleanup,
    like SIGKILL) after shard k's requests completed but before it is committed."""
    if os.environ.get("Q3_SYNTH_CRASH_AT_SHARD") == str(shard):
        os._exit(17)


def _template(name: str, cfg: EngineConfig) -> Template:
    """A template as this run uses it (seed cut at `max_seed_chars`; its digest says so)."""
    t = load_template(name)
    if cfg.max_seed_chars and cfg.max_seed_chars < t.max_input_chars:
        t = t.model_copy(update={"max_input_chars": cfg.max_seed_chars})
    return t


def run_config_hash(cfg: EngineConfig) -> str:
    """What determines the outputs (not where they go or how fast)."""
    d = cfg.model_dump(mode="json")
    d.pop("output", None)
    d.pop("runner", None)
    d.pop("allow_empty", None)
    if d.get("max_seed_chars") is None:          # unset: the hash of configs written before the key
        d.pop("max_seed_chars", None)
    ep = cfg.endpoint
    d["endpoint"] = {"model": ep.resolved_model(), "default_params": ep.default_params,
                     "cache_namespace": ep.cache_namespace}
    d["template_hashes"] = {n: _template(n, cfg).digest() for n in cfg.templates}
    return config_hash(d)


# ---- runners -----------------------------------------------------------------------------------------


def _shards(seeds: pa.Table, size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    rows = seeds.to_pylist()
    for k in range(0, len(rows), size):
        yield k // size, rows[k:k + size]


def run_local(cfg: EngineConfig, seeds: pa.Table, output: Path, job: str = "") -> list[dict[str, Any]]:
    cj = cfg.model_dump(mode="json")
    n = (seeds.num_rows + cfg.shard_size - 1) // cfg.shard_size
    return [process_shard(k, docs, cj, str(output), job)
            for k, docs in progress(_shards(seeds, cfg.shard_size), "synth shards", total=n, unit="shard")]


STATUS_SCHEMA = pa.schema([("shard", pa.int64()), ("stats", pa.string())])


def run_spark(cfg: EngineConfig, seeds: pa.Table, output: Path, spark=None, job: str = "") -> list[dict[str, Any]]:
    """Shards as Spark tasks: mapInArrow runs `process_shard` (with its async pool) per shard."""
    from q3.engine.session import get_spark

    own = spark is None
    spark = spark or get_spark("q3-synth")
    try:
        return _run_spark(cfg, seeds, output, spark, job)
    finally:
        if own:   # a session we started is ours to stop (a caller's stays up)
            spark.stop()


def _run_spark(cfg: EngineConfig, seeds: pa.Table, output: Path, spark, job: str = "") -> list[dict[str, Any]]:
    n_shards = (seeds.num_rows + cfg.shard_size - 1) // cfg.shard_size
    chash, ids = run_config_hash(cfg), seeds.column("id").to_pylist()
    pending = [k for k in range(n_shards) if not shard_done(shard_dir(output, k), chash,
                                                            ids[k * cfg.shard_size:(k + 1) * cfg.shard_size], job)]
    shard_col = pa.array([i // cfg.shard_size for i in range(seeds.num_rows)], pa.int64())
    table = seeds.append_column("shard", shard_col)
    table = table.filter(pc.is_in(table.column("shard"), pa.array(pending, pa.int64())))
    results: list[dict[str, Any]] = [{**read_marker(shard_dir(output, k)), "skipped": True}
                                     for k in range(n_shards) if k not in pending]
    if pending:
        cj, out = cfg.model_dump(mode="json"), str(output)

        def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            rows = [r for b in batches for r in b.to_pylist()]
            if not rows:
                return
            for k in sorted({r["shard"] for r in rows}):
                docs = [{c: r[c] for c in ("id", "text", "lang", "source")} for r in rows if r["shard"] == k]
                stats = process_shard(k, docs, cj, out, job)
                yield pa.RecordBatch.from_pylist([{"shard": k, "stats": json.dumps(stats)}], schema=STATUS_SCHEMA)

        df = spark.createDataFrame(table.to_pandas()).repartition(min(len(pending), 64), "shard")
        got = df.mapInArrow(per_partition, "shard long, stats string").collect()
        results += [json.loads(r["stats"]) for r in got]
    return sorted(results, key=lambda s: s["shard"])


# ---- finalize: dedup, decontam, totals ---------------------------------------------------------------


def _exact_key(text: str) -> str:
    """The corpus pipeline's exact-dedup normalisation, so synthetic and web duplicates agree."""
    return content_id(exact_normalise(text))


def decontaminate(rows: list[dict[str, Any]], cfg: DecontamConfig) -> list[tuple[str | None, str | None]]:
    """(reason, detail) per row from dataproc's decontamination stage (n-gram overlap with the eval
    sets in `cfg.evals`); (None, None) = clean. No eval sets configured: everything is clean."""
    if not cfg.evals or not rows:
        if not cfg.evals:
            log.info("decontam.evals is empty: synthetic outputs are not checked against benchmarks")
        return [(None, None)] * len(rows)
    stage = Decontaminator(cfg.model_copy(update={"mode": "reject"}))
    batch = pa.RecordBatch.from_pylist([{k: r[k] for k in ("id", "text", "source", "url", "lang", "n_chars")}
                                        for r in rows])
    out = stage(batch)
    return list(zip(out.column("reason").to_pylist(), out.column("detail").to_pylist(), strict=True))


def finalize(cfg: EngineConfig, output: Path, n_shards: int, job: JobKey | None = None) -> dict[str, Any]:
    tables = [pq.read_table(shard_dir(output, k) / "rows.parquet") for k in range(n_shards)]
    t = pa.concat_tables(tables) if tables else SYNTH_SCHEMA.empty_table()
    rows = t.to_pylist()
    seen: dict[str, str] = {}
    live = [i for i, r in enumerate(rows) if r["reason"] is None]
    if cfg.dedup:
        for i in live:
            key = _exact_key(rows[i]["text"])
            if key in seen:
                rows[i]["reason"], rows[i]["detail"] = "duplicate", seen[key]
            else:
                seen[key] = rows[i]["id"]
    live = [i for i, r in enumerate(rows) if r["reason"] is None]
    for i, (reason, detail) in zip(live, decontaminate([rows[i] for i in live], cfg.decontam), strict=True):
        if reason:
            rows[i]["reason"], rows[i]["detail"] = reason, detail
    kept = [r for r in rows if r["reason"] is None]
    rejected = [r for r in rows if r["reason"] is not None]
    shard_stats = [read_marker(shard_dir(output, k)) for k in range(n_shards)]
    totals = {k: sum(s.get(k, 0) for s in shard_stats)
              for k in ("requests", "cache_hits", "failed", "prompt_tokens", "completion_tokens", *CLIENT_COUNTERS)}
    by_template: dict[str, dict[str, int]] = {}
    for r in rows:
        d = by_template.setdefault(r["provenance"]["template"], {"kept": 0, "rejected": 0, "completion_tokens": 0})
        d["kept" if r["reason"] is None else "rejected"] += 1
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    meta = {"config_hash": run_config_hash(cfg), "kept": len(kept), "rejected": len(rejected),
            "rejected_by_reason": reasons, "by_template": by_template, **totals, "shards": n_shards}
    with commit(output / "final", job or synth_key(cfg), meta) as tmp:
        pq.write_table(pa.Table.from_pylist(kept, schema=SYNTH_SCHEMA), tmp / "data.parquet")
        pq.write_table(pa.Table.from_pylist(rejected, schema=SYNTH_SCHEMA), tmp / "rejected.parquet")
    return meta


def synth_key(cfg: EngineConfig) -> JobKey:
    """The job key (`q3.commit`): the run's config hash, the seed input's content, the code."""
    return job_key("synth", {"config": run_config_hash(cfg)}, inputs=[cfg.input])


def run(cfg: EngineConfig, spark=None) -> dict[str, Any]:
    output = Path(cfg.output) if cfg.output else data_dir() / "synth" / "run"
    seeds = read_seeds(cfg.input, cfg.max_docs)
    require_nonempty(seeds.num_rows, "0 seed documents", f"input {cfg.input} holds no rows",
                     allow_empty=cfg.allow_empty)
    key = synth_key(cfg)
    if (done := reuse_if_committed(output / "final", key)) is not None:
        print(f"synthetic generation -> {output}/final: up to date ({done['kept']} kept, {done['rejected']} "
              "rejected); nothing sent")
        return {**done, "seconds": 0.0, "skipped": True}
    t0 = time.time()
    shards = run_spark(cfg, seeds, output, spark, key.id) if cfg.runner == "spark" else \
        run_local(cfg, seeds, output, key.id)
    meta = finalize(cfg, output, len(shards), key)
    meta["seconds"] = round(time.time() - t0, 2)
    print_table(f"synthetic generation -> {output}/final ({meta['seconds']}s)",
                ["template", "kept", "rejected"],
                [(k, v["kept"], v["rejected"]) for k, v in sorted(meta["by_template"].items())])
    print_table("requests and tokens", ["requests", "cache hits", "failed", "retries", "malformed", "dup sends",
                                        "prompt tokens", "completion tokens", "shards skipped"],
                [(meta["requests"], meta["cache_hits"], meta["failed"], meta["retries"], meta["malformed"],
                  meta["duplicate_sends"], meta["prompt_tokens"], meta["completion_tokens"],
                  sum(bool(s.get("skipped")) for s in shards))])
    if meta["requests"]:   # the empty-run rule (q3.errors): an endpoint that answered nothing failed
        require_nonempty(meta["requests"] - meta["failed"], f"0 of {meta['requests']} requests answered",
                         f"every request to {cfg.endpoint.resolved_base_url()} failed; check endpoint.base_url "
                         f"/ endpoint.model", allow_empty=cfg.allow_empty)
    return meta


def cli(config: str | None, overrides: list[str]) -> int:
    """Generate synthetic data from seed documents and templates against an OpenAI-compatible endpoint.

    keys: input, output, templates, target_languages, n_items, max_docs, shard_size, runner (local|spark),
    endpoint.{base_url,model,concurrency,timeout_s,max_retries,cache_dir}, dedup, decontam
    """
    cfg = load_config(EngineConfig, "synth", config or "default", overrides)
    meta = run_cli_job(lambda: run(cfg), log)
    if meta is None:
        return 1
    print(json.dumps({k: meta[k] for k in ("kept", "rejected", "requests", "cache_hits", "prompt_tokens",
                                           "completion_tokens", "seconds")}))
    return 0
