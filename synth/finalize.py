"""The last step of a synth run: the shards' rows -> exact dedup, decontamination, totals ->
`<output>/final/{data,rejected}.parquet` + stats (committed by the engine, `synth.engine.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataproc.dedup.config import DecontamConfig
from dataproc.dedup.decontam import Decontaminator
from dataproc.dedup.exact import exact_normalise
from q3.engine.io import read_corpus
from q3.engine.schema import conform
from q3.engine.write import SplitCounts
from q3.log import get_logger
from q3.schemas import content_id
from synth.engine_config import SYNTH_SCHEMA, EngineConfig, run_config_hash
from synth.shards import CLIENT_COUNTERS, shard_dir

log = get_logger("synth.engine")
TOTALS = ("requests", "cache_hits", "failed", "prompt_tokens", "completion_tokens", *CLIENT_COUNTERS)


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


def finalize(cfg: EngineConfig, output: Path, shard_stats: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """Write the final kept/rejected files into `tmp` (the commit's work dir); returns the stats."""
    n_shards = len(shard_stats)
    # this run's shards only (a folder may also hold shards of an earlier, longer plan)
    tables = [read_corpus(shard_dir(output, k) / "rows.parquet", keep_extra=True) for k in range(n_shards)]
    t = pa.concat_tables([pa.Table.from_batches([conform(x, SYNTH_SCHEMA)]) for x in tables]) if tables \
        else SYNTH_SCHEMA.empty_table()
    rows = t.to_pylist()
    seen: dict[str, str] = {}
    if cfg.dedup:
        for r in rows:
            if r["reason"] is None:
                key = _exact_key(r["text"])
                if key in seen:
                    r["reason"], r["detail"] = "duplicate", seen[key]
                else:
                    seen[key] = r["id"]
    live = [i for i, r in enumerate(rows) if r["reason"] is None]
    for i, (reason, detail) in zip(live, decontaminate([rows[i] for i in live], cfg.decontam), strict=True):
        if reason:
            rows[i]["reason"], rows[i]["detail"] = reason, detail
    kept = [r for r in rows if r["reason"] is None]
    rejected = [r for r in rows if r["reason"] is not None]
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    SplitCounts(len(kept), len(rejected)).check(t.num_rows, "synth")   # kept + rejected = generated rows
    by_template: dict[str, dict[str, int]] = {}
    for r in rows:
        p = r["provenance"]
        d = by_template.setdefault(p["template"], {"kept": 0, "rejected": 0, "completion_tokens": 0})
        d["kept" if r["reason"] is None else "rejected"] += 1
        if p["item"] == 0:            # one row per reply carries the reply's tokens into the total
            d["completion_tokens"] += p["completion_tokens"] or 0
    pq.write_table(pa.Table.from_pylist(kept, schema=SYNTH_SCHEMA), tmp / "data.parquet")
    pq.write_table(pa.Table.from_pylist(rejected, schema=SYNTH_SCHEMA), tmp / "rejected.parquet")
    totals = {k: sum(s.get(k, 0) for s in shard_stats) for k in TOTALS}
    return {"config_hash": run_config_hash(cfg), "kept": len(kept), "rejected": len(rejected),
            "rejected_by_reason": dict(sorted(reasons.items())), "by_template": dict(sorted(by_template.items())),
            **totals, "shards": n_shards, "shards_skipped": sum(bool(s.get("skipped")) for s in shard_stats)}
