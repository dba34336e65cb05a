"""The Spark runner: exact groups, LSH edges, connected components, survivors.

Signatures and band keys are computed by `Annotator` inside `mapInArrow` and materialised once as
Parquet (they are read by two later passes). After that the runner costs three Spark passes:
candidate edges (written), per-row results (written), and the final kept/rejected writes
(`dataproc/jobs/dedup.py`). What reaches the driver is bounded by the edges, not the corpus:
below `driver_max_edges` verified edges the connected components are computed there (scipy, one
call, instead of ~5 large-star/small-star Spark rounds of 3 jobs each); above it they stay in
Spark (`components.connected_components`). Row counts are read from Parquet footers, never counted
with a Spark job.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pds
import pyarrow.parquet as pq

from dataproc.dedup.annotate import META_DDL, annotate_batches
from dataproc.dedup.components import bucket_edges_spark, connected_components, driver_components
from dataproc.dedup.config import DedupConfig
from dataproc.dedup.lsh import min_matches
from q3.engine.write import written_rows
from q3.log import get_logger, timed

log = get_logger("dedup")

EDGE_DDL = "u long, v long"
CC_DDL = "node long, comp long"
# Small tables (two longs, or the seven result columns) up to this many rows are broadcast to the
# joins that use them rather than shuffling the big side (the documents, with their texts).
BROADCAST_MAX_ROWS = 4_000_000
RES_DDL = ("rk long, id string, lang string, n_bytes long, dup_cluster string, dup_cluster_size long, "
           "reason string")


def with_row_key(docs):
    from pyspark.sql import functions as F
    return docs.withColumn("rk", F.monotonically_increasing_id())


def annotate(docs_rk, cfg: DedupConfig):
    from pyspark.sql import functions as F
    score = (F.col("quality.score") if "quality" in docs_rk.columns else F.lit(None)).cast("float")
    cols = [F.col(c) if c in docs_rk.columns else F.lit(None).cast("string").alias(c)
            for c in ("id", "url", "source", "lang", "text")]
    inp = docs_rk.select("rk", *cols, score.alias("score"))
    # A Parquet row group is never split between tasks, so an input of a few big files (one row
    # group each) would be hashed by one core; spread it first (row keys are already assigned).
    par = docs_rk.sparkSession.sparkContext.defaultParallelism
    if len(docs_rk.inputFiles()) < 2 * par:
        inp = inp.repartition(2 * par)
    fn = annotate_batches(cfg.model_dump_json())
    if cfg.minhash.verify != "none":
        return inp.mapInArrow(fn, META_DDL)
    # unverified, nobody reads the signatures again: drop them in the worker (not sent back to
    # the JVM nor written: 4 bytes x num_perm per document); reading `meta` with META_DDL gives nulls

    def no_sig(it):
        for b in fn(it):
            yield b.drop_columns(["sig"])

    return inp.mapInArrow(no_sig, META_DDL.replace(" sig array<int>,", ""))


def read_parquet(spark, path: str, ddl: str):
    """Read our own intermediate Parquet with its known schema (no schema-inference job)."""
    return spark.read.schema(ddl).parquet(path)


def _order(prefix: str = ""):
    from pyspark.sql import functions as F
    return F.struct(*[F.col(f"{prefix}{c}").alias(c) for c in ("neg_score", "id", "url", "source", "rk")])


def _with_rep(meta, cfg: DedupConfig):
    """+ rep: the row key of the exact-duplicate group's survivor (the row itself without exact)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    if not cfg.exact.enabled:
        return meta.withColumn("rep", F.col("rk"))
    # a window: one shuffle (a groupBy joined back costs two)
    return meta.withColumn("rep", F.min(_order()).over(Window.partitionBy("scope", "nh")).getField("rk"))


def _components(spark, cfg: DedupConfig, edges_path: str, workdir: str):
    """(node, comp) of the verified edges: on the driver below `driver_max_edges`, else in Spark."""
    n = written_rows(edges_path)
    if n <= cfg.driver_max_edges:
        with timed(log, f"dedup: connected components of {n} edges on the driver"):
            edges = pds.dataset(edges_path, format="parquet").to_table(columns=["u", "v"])
            Path(f"{workdir}/cc").mkdir(parents=True, exist_ok=True)
            pq.write_table(driver_components(edges), f"{workdir}/cc/part-0.parquet")
        return read_parquet(spark, f"{workdir}/cc", CC_DDL)
    log.info("dedup: %d edges > driver_max_edges=%d: connected components in Spark", n, cfg.driver_max_edges)
    with timed(log, "dedup: connected components (Spark)"):
        cc = connected_components(read_parquet(spark, edges_path, EDGE_DDL), f"{workdir}/cc_spark")
        cc.write.mode("overwrite").parquet(f"{workdir}/cc")
    return read_parquet(spark, f"{workdir}/cc", CC_DDL)


def dedup_meta(meta, cfg: DedupConfig, workdir: str, texts=None) -> str:
    """meta (materialised) -> path of the Parquet result rows
    (rk, id, lang, n_bytes, dup_cluster, dup_cluster_size, reason), schema `RES_DDL`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = meta.sparkSession
    small = meta.drop("sig", "bands")
    if cfg.minhash.enabled:
        mh = cfg.minhash
        m = _with_rep(meta, cfg).where(F.col("rk") == F.col("rep")).select("rk", "scope", "sig", "bands")
        need = None if mh.verify == "none" else min_matches(
            mh.threshold - (mh.prefilter_margin if mh.verify == "exact" else 0.0), mh.num_perm)
        if mh.verify == "exact" and texts is None:
            raise ValueError("minhash.verify=exact needs the documents' texts")
        edges = bucket_edges_spark(m, mh, need, texts if mh.verify == "exact" else None)
        with timed(log, "dedup: candidate pairs and verification"):
            edges.write.mode("overwrite").parquet(f"{workdir}/edges")
        cc = _components(spark, cfg, f"{workdir}/edges", workdir)
        cc = cc.withColumnRenamed("node", "rep")
        if written_rows(f"{workdir}/cc") <= BROADCAST_MAX_ROWS:     # no shuffle of the rows for it
            cc = F.broadcast(cc)
        rows = _with_rep(small, cfg).join(cc, "rep", "left").withColumn("comp", F.coalesce("comp", "rep"))
    else:
        rows = _with_rep(small, cfg).withColumn("comp", F.col("rep"))
    w = Window.partitionBy("comp")
    res = (rows.withColumn("s", F.min(_order()).over(w)).withColumn("dup_cluster_size", F.count(F.lit(1)).over(w))
               .select("rk", "id", "lang", "n_bytes",
                       F.col("s.id").alias("dup_cluster"), "dup_cluster_size",
                       F.when(F.col("rk") == F.col("s.rk"), F.lit(None).cast("string"))
                        .when(F.col("rk") != F.col("rep"), F.lit("exact_duplicate"))
                        .otherwise(F.lit("near_duplicate")).alias("reason")))
    with timed(log, "dedup: clusters and survivors"):
        res.write.mode("overwrite").parquet(f"{workdir}/res")
    return f"{workdir}/res"


class JobCounter:
    """Counts the Spark jobs and stages a block of driver code starts (its own job group; the
    caller's group is restored afterwards)."""

    def __init__(self, spark, name: str):
        import uuid
        self.sc, self.group = spark.sparkContext, f"{name}-{uuid.uuid4().hex[:8]}"
        self.jobs = self.stages = 0

    def __enter__(self) -> JobCounter:
        self.prev = (self.sc.getLocalProperty("spark.jobGroup.id"),
                     self.sc.getLocalProperty("spark.job.description"))
        self.sc.setJobGroup(self.group, self.group)
        return self

    def __exit__(self, *exc) -> None:
        tr = self.sc.statusTracker()
        ids = tr.getJobIdsForGroup(self.group)
        self.jobs = len(ids)
        self.stages = sum(len(info.stageIds) for info in map(tr.getJobInfo, ids) if info is not None)
        if self.prev[0] is not None:
            self.sc.setJobGroup(self.prev[0], self.prev[1] or "")
        else:
            self.sc.setLocalProperty("spark.jobGroup.id", None)
            self.sc.setLocalProperty("spark.job.description", None)
