"""Spark candidate-pair pass alone, old plan vs new, on a synthetic meta table (issue 15).

    PYTHONPATH=$PWD python -m bench.dedup_pairs_bench [--docs 1000000] [--rounds 2] [--work /tmp/...]

`--docs` rows of (rk, scope, sig=null, bands: 14 random keys); half of the docs copy each band of
another doc with probability 1/2, so buckets of 2+ members exist as in a corpus with near duplicates.
Times the former plan (a window min over (scope, band, bucket): a sort of docs x 14 rows) against
`bucket_edges_spark` (hash repartition + Arrow hash aggregate/join per partition), alternating, in
one local[2] session, and asserts both give the same edges.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make_meta(p: Path, n: int, bands: int = 14, files: int = 4) -> None:
    rng = np.random.default_rng(0)
    b = rng.integers(0, 2**62, size=(n, bands), dtype=np.int64)
    src, dst = rng.integers(0, n, size=n // 2), rng.integers(0, n, size=n // 2)
    b[dst] = np.where(rng.random((n // 2, bands)) < 0.5, b[src], b[dst])
    p.mkdir(parents=True)
    step = -(-n // files)
    for i, s in enumerate(range(0, n, step)):
        e = min(n, s + step)
        pq.write_table(pa.table({
            "rk": pa.array(np.arange(s, e), pa.int64()), "scope": pa.array(["all"] * (e - s)),
            "sig": pa.nulls(e - s, pa.list_(pa.int32())),
            "bands": pa.FixedSizeListArray.from_arrays(b[s:e].ravel(), bands).cast(pa.list_(pa.int64()))}),
            p / f"part-{i}.parquet")


def window_plan(meta):
    """The plan before this change (HEAD 61501b7)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    ex = meta.where(F.col("bands").isNotNull()).select("rk", "scope", F.posexplode("bands").alias("band", "bucket"))
    return (ex.withColumn("root", F.min("rk").over(Window.partitionBy("scope", "band", "bucket")))
              .where(F.col("rk") != F.col("root")).select(F.col("rk").alias("u"), F.col("root").alias("v")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    from dataproc.dedup.components import bucket_edges_spark
    from dataproc.dedup.config import MinHashConfig
    from q3.engine.session import get_spark

    work = Path(args.work or tempfile.mkdtemp(prefix="q3-pairs-bench-"))
    if not (work / "meta").exists():
        make_meta(work / "meta", args.docs)
    spark = get_spark("q3-pairs-bench", master="local[2]", conf={"spark.sql.shuffle.partitions": "8"})
    meta = spark.read.schema("rk long, scope string, sig array<int>, bands array<long>").parquet(str(work / "meta"))
    cfg = MinHashConfig(preset="fineweb", verify="none")
    spark.range(10).count()                                     # JVM warm-up outside the timing
    plans = {"window": window_plan, "arrow": lambda m: bucket_edges_spark(m, cfg, None)}
    for rnd in range(args.rounds):
        for name, plan in plans.items():
            load, t0 = os.getloadavg()[0], time.perf_counter()
            plan(meta).write.mode("overwrite").parquet(str(work / name))
            print(f"round {rnd} {name}: {time.perf_counter() - t0:.1f} s, "
                  f"{pq.ParquetDataset(str(work / name)).read().num_rows} edges, load {load:.1f}", flush=True)
    spark.stop()
    edges = [sorted(zip(*pq.ParquetDataset(str(work / k)).read().to_pydict().values(), strict=True)) for k in plans]
    assert edges[0] == edges[1], "the two plans gave different edges"
    print("same edges: True")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
