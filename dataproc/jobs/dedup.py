"""`q3 data dedup`: exact + MinHash-LSH fuzzy (+ optional line-level) dedup of kept documents.

    q3 data dedup [--config default] input=data/pipeline/kept output=data/dedup runner=spark
    spark-submit dataproc/jobs/dedup.py --config conf/dedup/default.yaml input=... output=...

Input: Parquet in q3.schemas.DOC_SCHEMA (partitioned by lang or not). Output (atomic, with
`_Q3_SUCCESS`): `kept/` (DOC_SCHEMA, dup_cluster + dup_cluster_size set, partitioned by lang),
`rejected/` (+ reason/stage/detail: exact_duplicate | near_duplicate | line_dedup_empty, detail =
survivor id), `stats.json` (cluster-size histogram, bytes removed per language).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataproc.dedup.config import DedupConfig
from dataproc.dedup.stats import compute_stats, print_stats
from q3.commit import job_key
from q3.config import load_config
from q3.engine.io import dataset, read_corpus, scan_corpus
from q3.engine.job import run_committed
from q3.engine.runner import choose_runner
from q3.engine.schema import conform
from q3.engine.write import write_split
from q3.errors import require_nonempty, require_path
from q3.log import get_logger, timed
from q3.schemas import STAGE_OUTPUT_SCHEMA

log = get_logger("dedup")
STAGE = "dedup"


def read_docs_local(path: str | Path) -> pa.Table:
    """All documents under `path` in memory (small inputs and tests; the local runner streams)."""
    return read_corpus(path)


def _run_local(cfg: DedupConfig, input_dir: str, out: Path) -> dict[str, Any]:
    """Bounded memory (issue 17): two streamed passes over the input, no text kept (local_spill)."""
    from dataproc.dedup import local_spill as ls

    data = dataset(input_dir)
    n_in = ls.check_fits(data, cfg)
    work = out / "_work"
    rows, res = ls.dedup_streamed(data, cfg, work)
    stats = compute_stats(ls.stats_frame(rows, res))
    rows = rows.select(["id"])                                   # for the row-order check only
    frequent, rem = None, None
    if cfg.lines.enabled:
        from dataproc.dedup.lines import LineRemover, frequent_units

        def live_texts():
            r0 = 0
            for b in ls.scan(data, pa.schema([("text", pa.string())]), cfg.local.batch_rows):
                reason = pa.array(ls.REASONS[res.reason[r0:r0 + b.num_rows]], pa.string())
                r0 += b.num_rows
                yield pa.RecordBatch.from_arrays([b.column("text"), reason], names=["text", "reason"])

        with timed(log, "dedup: line counts"):
            frequent = frequent_units(live_texts(), cfg.lines)
        rem = LineRemover(frequent, cfg.lines)
    line_stats = {"frequent_units": 0 if frequent is None else int(len(frequent)), "chars_removed": 0,
                  "docs_emptied": 0}

    def results():
        """Pass 2: the input again, with each row's cluster and reason (STAGE_OUTPUT_SCHEMA)."""
        r0 = 0
        for b in scan_corpus(data, cfg.local.batch_rows):
            n = b.num_rows
            if not pa.chunked_array([b.column("id")]).equals(rows.column("id").slice(r0, n)):
                raise RuntimeError("dedup: the input changed while it was read (row order differs)")
            dc = res.dup_cluster.slice(r0, n)
            reason = pa.array(ls.REASONS[res.reason[r0:r0 + n]], pa.string())
            out_ = pc.is_valid(reason)
            t = conform(b.set_column(b.schema.get_field_index("dup_cluster"), "dup_cluster", dc)
                         .set_column(b.schema.get_field_index("dup_cluster_size"), "dup_cluster_size",
                                     pa.array(res.size[r0:r0 + n])), STAGE_OUTPUT_SCHEMA)
            t = (t.set_column(t.schema.get_field_index("reason"), "reason", reason)
                  .set_column(t.schema.get_field_index("stage"), "stage",
                              pc.if_else(out_, STAGE, pa.scalar(None, pa.string())))
                  .set_column(t.schema.get_field_index("detail"), "detail",
                              pc.if_else(out_, dc, pa.scalar(None, pa.string()))))
            r0 += n
            if rem is not None:
                before = pc.sum(pc.utf8_length(pc.fill_null(t.column("text"), ""))).as_py() or 0
                t = rem(t)
                after = pc.sum(pc.utf8_length(pc.fill_null(t.column("text"), ""))).as_py() or 0
                line_stats["chars_removed"] += int(before - after)
                line_stats["docs_emptied"] += int(pc.sum(pc.equal(t.column("reason"), "line_dedup_empty")).as_py() or 0)
            yield t

    with timed(log, "dedup: writing kept/ and rejected/ (streamed)"):
        write_split(results(), out, n_in=n_in, job="dedup")
    shutil.rmtree(work, ignore_errors=True)
    if cfg.lines.enabled:
        stats["lines"] = line_stats
        stats["docs_kept"] -= line_stats["docs_emptied"]
    return stats


def _run_spark(cfg: DedupConfig, input_dir: str, out: Path, spark=None) -> dict[str, Any]:
    """Spark passes: signatures (materialised: read twice), edges, result rows, kept + rejected.
    Stats come from the result rows' Parquet on the driver (Arrow, four small columns) and the
    row-count check from the written files' footers: neither costs a Spark job."""
    from dataproc.dedup.spark_dedup import JobCounter
    from q3.engine.session import get_spark

    spark = spark or get_spark("q3-dedup")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_size))
    if cfg.partitions:
        spark.conf.set("spark.sql.shuffle.partitions", str(cfg.partitions))
    t0 = time.perf_counter()
    with JobCounter(spark, "q3-dedup") as jc:
        stats = _spark_passes(spark, cfg, input_dir, out)
    log.info("dedup: %d Spark jobs (%d stages) in %.1f s", jc.jobs, jc.stages, time.perf_counter() - t0)
    stats["spark_jobs"] = jc.jobs
    return stats


def _spark_passes(spark, cfg: DedupConfig, input_dir: str, out: Path) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from dataproc.dedup.annotate import META_DDL
    from dataproc.dedup.spark_dedup import (
        BROADCAST_MAX_ROWS,
        RES_DDL,
        annotate,
        dedup_meta,
        read_parquet,
        with_row_key,
    )

    work = out / "_work"
    docs = with_row_key(read_corpus(input_dir, spark=spark))
    with timed(log, "dedup: hashes, MinHash signatures and band keys"):
        annotate(docs, cfg).write.mode("overwrite").parquet(str(work / "meta"))
    meta = read_parquet(spark, str(work / "meta"), META_DDL)
    res_path = dedup_meta(meta, cfg, str(work), texts=docs.select("rk", "text", "lang"))
    with timed(log, "dedup: stats"):
        stats = compute_stats(dataset(res_path))
    res = read_parquet(spark, res_path, RES_DDL).select("rk", "dup_cluster", "dup_cluster_size", "reason")
    if stats["docs_in"] <= BROADCAST_MAX_ROWS:       # join without shuffling the texts
        res = F.broadcast(res)
    full = docs.drop("dup_cluster", "dup_cluster_size").join(res, "rk")
    full = (full.withColumn("stage", F.when(F.col("reason").isNotNull(), F.lit(STAGE)))
                .withColumn("detail", F.when(F.col("reason").isNotNull(), F.col("dup_cluster"))))
    if cfg.lines.enabled:
        from dataproc.dedup.lines import line_dedup_spark
        full, stats["lines"] = line_dedup_spark(full, cfg.lines, str(work / "lines"))
        stats["docs_kept"] -= stats["lines"]["docs_emptied"]
    # Two writes, each one pass over the documents joined to the broadcast result rows (cheaper
    # than caching the joined corpus for both); the engine checks kept + rejected = input.
    with timed(log, "dedup: writing kept/ and rejected/"):
        write_split(full.select(*STAGE_OUTPUT_SCHEMA.names), out, n_in=stats["docs_in"], job="dedup",
                    persist=False)
    shutil.rmtree(work, ignore_errors=True)
    return stats


def run_dedup(input_dir: str | Path, output_dir: str | Path, cfg: DedupConfig | None = None,
              spark=None) -> dict[str, Any]:
    """Dedup the DOC_SCHEMA Parquet under `input_dir` into `output_dir`; returns the stats dict.

    Idempotent: a committed output with the same job key (config, input content, code; `q3.commit`)
    is not recomputed (the stats come back with `skipped: true`)."""
    cfg = cfg or DedupConfig()
    key = job_key("dedup", cfg.model_dump(mode="json", exclude={"allow_empty", "input", "output", "runner",
                                                                "auto", "cluster", "local", "partitions",
                                                                "batch_size"}),
                  inputs=[input_dir])

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:
        runner = choose_runner(cfg.runner, [input_dir], cfg.auto, cfg.cluster, job="dedup").runner
        stats = _run_local(cfg, str(input_dir), tmp) if runner == "local" else \
            _run_spark(cfg, str(input_dir), tmp, spark)
        stats["runner"] = runner
        meta.update({"stage": STAGE, "input": str(input_dir)})
        return stats

    stats = run_committed(output_dir, key, body)
    print_stats(stats)
    return stats


def cli(config: str | None, overrides: list[str]) -> int:
    """Exact + MinHash-LSH fuzzy + line-level dedup (Spark). Keys: input, output, runner, scope, minhash.*"""
    cfg = load_config(DedupConfig, "dedup", config or "default", overrides)
    require_path(cfg.input, "input", "kept documents: the Parquet output of `q3 data run` (<output>/kept)")
    stats = run_dedup(cfg.input, cfg.output, cfg)
    require_nonempty(stats["docs_in"], "0 documents in", f"input {cfg.input} holds no rows",
                     allow_empty=cfg.allow_empty)
    return 0


if __name__ == "__main__":
    from q3.verbs import script_main

    sys.exit(script_main(cli, __doc__))
