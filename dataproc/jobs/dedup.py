"""`q3 data dedup`: exact + MinHash-LSH fuzzy (+ optional line-level) dedup of kept documents.

    q3 data dedup [--config default] input=data/pipeline/kept output=data/dedup runner=spark
    spark-submit dataproc/jobs/dedup.py --config conf/dedup/default.yaml input=... output=...

Input: Parquet in q3.schemas.DOC_SCHEMA (partitioned by lang or not). Output (atomic, with
`_Q3_SUCCESS`): `kept/` (DOC_SCHEMA, dup_cluster + dup_cluster_size set, partitioned by lang),
`rejected/` (+ reason/stage/detail: exact_duplicate | near_duplicate | line_dedup_empty, detail =
survivor id), `stats.json` (cluster-size histogram, bytes removed per language).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dataproc.dedup.config import DedupConfig
from dataproc.dedup.stats import compute_stats, print_stats
from q3.commit import commit, job_key, reuse_if_committed
from q3.config import load_config
from q3.errors import require_nonempty, require_path
from q3.log import get_logger, timed
from q3.schemas import DOC_SCHEMA, STAGE_OUTPUT_SCHEMA

log = get_logger("dedup")
STAGE = "dedup"


def read_docs_local(path: str | Path) -> pa.Table:
    """All Parquet under `path` (hive `lang=` partitions understood), conformed to DOC_SCHEMA."""
    p = Path(path)
    dataset = ds.dataset(str(p), format="parquet", partitioning="hive") if p.is_dir() else ds.dataset(str(p))
    t = dataset.to_table()
    cols = []
    for f in DOC_SCHEMA:
        if f.name in t.schema.names:
            c = t.column(f.name)
            cols.append(c.cast(f.type) if c.type != f.type else c)
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=DOC_SCHEMA)


def _run_local(cfg: DedupConfig, input_dir: str, out: Path) -> dict[str, Any]:
    from dataproc.dedup.local import dedup_table

    docs = read_docs_local(input_dir)
    res = dedup_table(docs, cfg)
    stats = compute_stats(res)
    t = docs.set_column(docs.schema.get_field_index("dup_cluster"), "dup_cluster",
                        pa.array(res["dup_cluster"].tolist(), pa.string()))
    t = t.set_column(t.schema.get_field_index("dup_cluster_size"), "dup_cluster_size",
                     pa.array(res["dup_cluster_size"].astype("int64").to_numpy()))
    reason = pa.array(res["reason"].tolist(), pa.string())
    full = (t.append_column("reason", reason)
             .append_column("stage", pc.if_else(pc.is_valid(reason), STAGE, pa.scalar(None, pa.string())))
             .append_column("detail", pc.if_else(pc.is_valid(reason), t.column("dup_cluster"),
                                                 pa.scalar(None, pa.string()))))
    if cfg.lines.enabled:
        from dataproc.dedup.lines import line_dedup_table
        full, stats["lines"] = line_dedup_table(full, cfg.lines)
        stats["docs_kept"] -= stats["lines"]["docs_emptied"]
    live = pc.is_null(full.column("reason"))
    kept = full.filter(live).select(DOC_SCHEMA.names)
    rejected = full.filter(pc.invert(live)).cast(STAGE_OUTPUT_SCHEMA)
    if kept.num_rows:
        pq.write_to_dataset(kept, str(out / "kept"), partitioning=["lang"], partitioning_flavor="hive")
    else:
        (out / "kept").mkdir(parents=True, exist_ok=True)
    (out / "rejected").mkdir(parents=True, exist_ok=True)
    pq.write_table(rejected, str(out / "rejected" / "part-0.parquet"))
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
        parquet_rows,
        read_parquet,
        with_row_key,
    )

    work = out / "_work"
    docs = with_row_key(spark.read.parquet(str(input_dir)))
    with timed(log, "dedup: hashes, MinHash signatures and band keys"):
        annotate(docs, cfg).write.mode("overwrite").parquet(str(work / "meta"))
    meta = read_parquet(spark, str(work / "meta"), META_DDL)
    res_path = dedup_meta(meta, cfg, str(work), texts=docs.select("rk", "text", "lang"))
    with timed(log, "dedup: stats"):
        stats = compute_stats(ds.dataset(res_path, format="parquet"))
    res = read_parquet(spark, res_path, RES_DDL).select("rk", "dup_cluster", "dup_cluster_size", "reason")
    if stats["docs_in"] <= BROADCAST_MAX_ROWS:       # join without shuffling the texts
        res = F.broadcast(res)
    full = docs.drop("dup_cluster", "dup_cluster_size").join(res, "rk")
    full = (full.withColumn("stage", F.when(F.col("reason").isNotNull(), F.lit(STAGE)))
                .withColumn("detail", F.when(F.col("reason").isNotNull(), F.col("dup_cluster"))))
    for f in DOC_SCHEMA:
        if f.name not in full.columns:
            full = full.withColumn(f.name, F.lit(None).cast(_ddl(f.type)))
    if cfg.lines.enabled:
        from dataproc.dedup.lines import line_dedup_spark
        full, stats["lines"] = line_dedup_spark(full, cfg.lines, str(work / "lines"))
        stats["docs_kept"] -= stats["lines"]["docs_emptied"]
    live = F.col("reason").isNull()
    # Two writes, each one pass over the documents joined to the broadcast result rows (cheaper
    # than materialising the joined corpus once and reading it back twice).
    with timed(log, "dedup: writing kept/ and rejected/"):
        full.where(live).select(*DOC_SCHEMA.names).write.partitionBy("lang").parquet(str(out / "kept"))
        full.where(~live).select(*STAGE_OUTPUT_SCHEMA.names).write.parquet(str(out / "rejected"))
    n_out = parquet_rows(out / "kept") + parquet_rows(out / "rejected")
    if n_out != stats["docs_in"]:
        raise RuntimeError(f"dedup lost rows: {stats['docs_in']} in, {n_out} out (row keys unstable?)")
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _ddl(t: pa.DataType) -> str:
    return {pa.string(): "string", pa.int64(): "bigint", pa.float32(): "float"}.get(t, "string")


def run_dedup(input_dir: str | Path, output_dir: str | Path, cfg: DedupConfig | None = None,
              spark=None) -> dict[str, Any]:
    """Dedup the DOC_SCHEMA Parquet under `input_dir` into `output_dir`; returns the stats dict.

    Idempotent: a committed output with the same job key (config, input content, code; `q3.commit`)
    is not recomputed."""
    cfg = cfg or DedupConfig()
    out = Path(output_dir)
    key = job_key("dedup", cfg.model_dump(mode="json", exclude={"allow_empty", "input", "output"}),
                  inputs=[input_dir])
    if reuse_if_committed(out, key) is not None and (out / "stats.json").exists():
        return json.loads((out / "stats.json").read_text())
    t0 = time.time()
    meta: dict[str, Any] = {"stage": STAGE, "config_hash": key.config, "input": str(input_dir)}
    with commit(out, key, meta) as tmp:
        if cfg.runner == "local":
            stats = _run_local(cfg, str(input_dir), tmp)
        else:
            stats = _run_spark(cfg, str(input_dir), tmp, spark)
        stats["seconds"] = round(time.time() - t0, 2)
        stats["runner"] = cfg.runner
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        meta.update({"docs_in": stats["docs_in"], "docs_kept": stats["docs_kept"]})
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
