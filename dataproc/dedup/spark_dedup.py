"""The Spark runner: exact groups, LSH edges, connected components, survivors — all in Spark.

Nothing proportional to the corpus reaches the driver: signatures and band keys are computed by
`Annotator` inside `mapInArrow`, intermediate tables are materialised as Parquet under `workdir`.
"""

from __future__ import annotations

from dataproc.dedup.annotate import META_DDL, annotate_batches
from dataproc.dedup.components import bucket_edges_spark, connected_components
from dataproc.dedup.config import DedupConfig
from dataproc.dedup.lsh import min_matches
from q3.log import get_logger, timed

log = get_logger("dedup")


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
    return inp.mapInArrow(annotate_batches(cfg.model_dump_json()), META_DDL)


def _order(prefix: str = ""):
    from pyspark.sql import functions as F
    return F.struct(*[F.col(f"{prefix}{c}").alias(c) for c in ("neg_score", "id", "url", "source", "rk")])


def dedup_meta(meta, cfg: DedupConfig, workdir: str, texts=None):
    """meta (materialised) -> DataFrame(rk, id, lang, n_bytes, dup_cluster, dup_cluster_size, reason)."""
    from pyspark.sql import functions as F

    spark = meta.sparkSession
    if cfg.exact.enabled:
        reps = meta.groupBy("scope", "nh").agg(F.min(_order()).alias("best"))
        meta = (meta.join(reps, ["scope", "nh"])
                    .withColumn("rep", F.col("best.rk")).drop("best"))
    else:
        meta = meta.withColumn("rep", F.col("rk"))
    meta = meta.drop("sig", "bands") if not cfg.minhash.enabled else meta
    if cfg.minhash.enabled:
        m = meta.where(F.col("rk") == F.col("rep")).select("rk", "scope", "sig", "bands")
        mh = cfg.minhash
        need = None if mh.verify == "none" else min_matches(
            mh.threshold - (mh.prefilter_margin if mh.verify == "exact" else 0.0), mh.num_perm)
        if mh.verify == "exact" and texts is None:
            raise ValueError("minhash.verify=exact needs the documents' texts")
        edges = bucket_edges_spark(m, mh, need, texts if mh.verify == "exact" else None)
        with timed(log, "dedup: candidate pairs, verification and connected components"):
            cc = connected_components(edges, f"{workdir}/cc")
        meta = (meta.drop("sig", "bands")
                    .join(cc.withColumnRenamed("node", "rep"), "rep", "left")
                    .withColumn("comp", F.coalesce("comp", "rep")))
    else:
        meta = meta.withColumn("comp", F.col("rep"))
    with timed(log, "dedup: clusters per row"):
        meta.write.mode("overwrite").parquet(f"{workdir}/rows")
    meta = spark.read.parquet(f"{workdir}/rows")
    surv = meta.groupBy("comp").agg(F.min(_order()).alias("s"), F.count(F.lit(1)).alias("dup_cluster_size"))
    res = (meta.join(surv, "comp")
               .select("rk", "id", "lang", "n_bytes",
                       F.col("s.id").alias("dup_cluster"), "dup_cluster_size",
                       F.when(F.col("rk") == F.col("s.rk"), F.lit(None).cast("string"))
                        .when(F.col("rk") != F.col("rep"), F.lit("exact_duplicate"))
                        .otherwise(F.lit("near_duplicate")).alias("reason")))
    with timed(log, "dedup: survivors"):
        res.write.mode("overwrite").parquet(f"{workdir}/res")
    return spark.read.parquet(f"{workdir}/res")
