"""Shards of a synth run: seeds x templates -> requests -> rows, one keyed commit per shard.

The seeds (sorted by id: a stable plan) are cut into shards of `shard_size` documents; the plan is a
table with one row per shard (its number and its seed documents as a list column), so one batch
function - `ShardWork`, built by a picklable factory - processes shards by `q3.engine.map`'s local
loop or inside Spark's mapInArrow, and reports each shard as a `STATUS_SCHEMA` row.

Each shard commits `<output>/shards/shard-NNNNN/` through `q3.engine.job.run_committed` under a
part key (`q3.engine.parts`: the run's key + the shard's seed ids), so a killed run redoes only the
shard in flight, and inside it every request that already got a reply is answered from the
client's on-disk cache.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from q3.commit import JobKey
from q3.engine.job import committed_stats, run_committed
from q3.engine.parts import key_from_dict, key_to_dict, part_key
from q3.llm import extract_json
from q3.log import get_logger
from q3.schemas import content_id
from synth.engine_config import SYNTH_SCHEMA, EngineConfig, run_config_hash, template_for
from synth.llm_calls import EndpointUnavailable, ask_sync
from synth.templates import Template

log = get_logger("synth.engine")

SEED_COLS = ["id", "text", "lang", "source"]
SEED_TYPE = pa.struct([(c, pa.string()) for c in SEED_COLS])
PLAN_SCHEMA = pa.schema([("shard", pa.int64()), ("docs", pa.list_(SEED_TYPE))])
STATUS_SCHEMA = pa.schema([("shard", pa.int64()), ("stats", pa.string())])   # stats: the shard's JSON
# q3.llm.Stats counters kept per shard and summed in final/ (what happened on the wire)
CLIENT_COUNTERS = ("retries", "malformed", "duplicate_sends")
SHARD_STATS = "stats.json"


def shard_dir(output: Path, shard: int) -> Path:
    return output / "shards" / f"shard-{shard:05d}"


def shard_key(run_key: JobKey, shard: int, seed_ids: list[str]) -> JobKey:
    return part_key(run_key, f"shard-{shard:05d}", seed_ids)


def shard_plan(seeds: pa.Table, size: int) -> pa.Table:
    """One row per shard: its number and its seed documents (consecutive in id order)."""
    n = seeds.num_rows
    docs = pa.StructArray.from_arrays([seeds.column(c).combine_chunks().cast(pa.string()) for c in SEED_COLS],
                                      fields=list(SEED_TYPE))
    offsets = pa.array(list(range(0, n, size)) + [n], pa.int32())
    lists = pa.ListArray.from_arrays(offsets, docs) if n else pa.array([], pa.list_(SEED_TYPE))
    return pa.table({"shard": pa.array(range(len(lists)), pa.int64()), "docs": lists}, schema=PLAN_SCHEMA)


def shard_seed_ids(plan: pa.Table) -> list[list[str]]:
    return [[d["id"] for d in docs] for docs in plan.column("docs").to_pylist()]


# ---- requests and rows ---------------------------------------------------------------------------------


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


def rows_from_reply(req: dict[str, Any], res: dict[str, Any], chash: str, min_chars: int, model: str,
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


# ---- one shard -------------------------------------------------------------------------------------------


def process_shard(shard: int, docs: list[dict[str, Any]], cfg: EngineConfig, output: Path,
                  run_key: JobKey) -> dict[str, Any]:
    """Generate one shard and commit it (rows.parquet + stats.json); a shard committed under the same
    part key is reused. Returns its stats."""
    target = shard_dir(output, shard)
    key = shard_key(run_key, shard, [d["id"] for d in docs])

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:
        stats, rows = generate(shard, docs, cfg, output)
        _maybe_crash(shard)
        pq.write_table(pa.Table.from_pylist(rows, schema=SYNTH_SCHEMA), tmp / "rows.parquet")
        return stats

    stats = run_committed(target, key, body, stats_file=SHARD_STATS)
    return {**stats, "skipped": bool(stats.get("skipped"))}


def generate(shard: int, docs: list[dict[str, Any]], cfg: EngineConfig, output: Path
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A shard's requests sent (bounded async pool, cache, retries) and its rows built."""
    chash = run_config_hash(cfg)
    reqs = plan_requests(docs, cfg, [template_for(n, cfg) for n in cfg.templates])
    cache = Path(cfg.endpoint.cache_dir) if cfg.endpoint.cache_dir else output / "cache"
    t0 = time.time()
    client: dict[str, Any] = {}
    results = ask_sync(cfg.endpoint, cache, [r["request"] for r in reqs], stats=client)
    transient = [r["error"] for r in results if (r.get("error") or "").startswith("gave_up")]
    if transient:   # endpoint down or overloaded: commit nothing, so a rerun retries (answers are cached)
        raise EndpointUnavailable(f"shard {shard}: {len(transient)} of {len(reqs)} requests failed after "
                                  f"retries ({transient[0][:200]}); finished replies are cached - rerun to resume")
    model = cfg.endpoint.resolved_model()
    rows = [r for req, res in zip(reqs, results, strict=True)
            for r in rows_from_reply(req, res, chash, cfg.min_output_chars, model, cfg.reject_truncated)]
    stats = {"shard": shard, "docs": len(docs), "requests": len(reqs),
             "cache_hits": sum(bool(r.get("cached")) for r in results),
             "failed": sum(r.get("error") is not None for r in results),
             "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in results),
             "completion_tokens": sum(r.get("completion_tokens") or 0 for r in results),
             **{k: client.get(k, 0) for k in CLIENT_COUNTERS},
             "rows": len(rows), "seconds": round(time.time() - t0, 3), "config_hash": chash,
             "seed_ids": [d["id"] for d in docs]}
    return stats, rows


def _maybe_crash(shard: int) -> None:
    """Fault injection for the resume tests: Q3_SYNTH_CRASH_AT_SHARD=k ends the process as SIGKILL
    would (exit 137, no cleanup) after shard k's replies came back but before it is committed."""
    if os.environ.get("Q3_SYNTH_CRASH_AT_SHARD") == str(shard):
        os._exit(137)


# ---- the batch function: plan rows -> status rows, on either runner --------------------------------------


def _shard_work(cfg_json: dict[str, Any], output: str, run_key: dict[str, str]):
    """Built once per process (q3.engine.map): the config parsed and the key rebuilt once."""
    cfg, out, key = EngineConfig.model_validate(cfg_json), Path(output), key_from_dict(run_key)

    def fn(batch: pa.RecordBatch) -> pa.RecordBatch:
        status = [{"shard": row["shard"],
                   "stats": json.dumps(process_shard(row["shard"], row["docs"], cfg, out, key))}
                  for row in batch.to_pylist()]
        return pa.RecordBatch.from_pylist(status, schema=STATUS_SCHEMA)
    return fn


def shard_work(cfg: EngineConfig, output: Path, run_key: JobKey) -> functools.partial:
    """The picklable factory of the shard batch function (plain JSON-able arguments)."""
    return functools.partial(_shard_work, cfg.model_dump(mode="json"), str(output), key_to_dict(run_key))


def committed_shard(output: Path, run_key: JobKey, shard: int, seed_ids: list[str]) -> dict[str, Any] | None:
    """The stats of a shard committed under its part key (the driver skips it), else None."""
    return committed_stats(shard_dir(output, shard), shard_key(run_key, shard, seed_ids), SHARD_STATS)
