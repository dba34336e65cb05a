"""Dedup statistics: cluster-size histogram and bytes removed per language, as tables and JSON."""

from __future__ import annotations

from typing import Any

import pandas as pd

from q3.log import print_table

SIZE_BUCKETS = [(1, 1), (2, 2), (3, 5), (6, 10), (11, 100), (101, 1000), (1001, 10**18)]


def _label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else (f">{lo - 1}" if hi >= 10**18 else f"{lo}-{hi}")


def compute_stats(res: pd.DataFrame) -> dict[str, Any]:
    """res: one row per input doc with lang, n_bytes, dup_cluster, dup_cluster_size, reason."""
    sizes = res.groupby("dup_cluster")["dup_cluster_size"].first() if len(res) else pd.Series([], dtype=int)
    hist = []
    for lo, hi in SIZE_BUCKETS:
        sel = sizes[(sizes >= lo) & (sizes <= hi)]
        if len(sel):
            hist.append({"size": _label(lo, hi), "clusters": int(len(sel)), "docs": int(sel.sum())})
    per_lang = []
    for lang, g in res.groupby(res["lang"].fillna("")):
        ex = g[g["reason"] == "exact_duplicate"]
        nd = g[g["reason"] == "near_duplicate"]
        per_lang.append({"lang": lang, "docs": int(len(g)), "kept": int(g["reason"].isna().sum()),
                         "exact_removed": int(len(ex)), "near_removed": int(len(nd)),
                         "bytes_in": int(g["n_bytes"].sum()),
                         "bytes_removed": int(ex["n_bytes"].sum() + nd["n_bytes"].sum())})
    n = int(len(res))
    kept = int(res["reason"].isna().sum()) if n else 0
    return {
        "docs_in": n, "docs_kept": kept,
        "exact_duplicate": int((res["reason"] == "exact_duplicate").sum()) if n else 0,
        "near_duplicate": int((res["reason"] == "near_duplicate").sum()) if n else 0,
        "bytes_in": int(res["n_bytes"].sum()) if n else 0,
        "bytes_removed": int(res.loc[res["reason"].notna(), "n_bytes"].sum()) if n else 0,
        "cluster_size_histogram": hist,
        "per_lang": per_lang,
    }


def print_stats(stats: dict[str, Any]) -> None:
    print_table("dedup: cluster sizes", ["size", "clusters", "docs"],
                [[h["size"], h["clusters"], h["docs"]] for h in stats["cluster_size_histogram"]])
    print_table("dedup: removed per language",
                ["lang", "docs", "kept", "exact", "near", "bytes in", "bytes removed"],
                [[r["lang"], r["docs"], r["kept"], r["exact_removed"], r["near_removed"], r["bytes_in"],
                  r["bytes_removed"]] for r in stats["per_lang"]])
    print_table("dedup: total", ["docs in", "kept", "exact dup", "near dup", "bytes removed"],
                [[stats["docs_in"], stats["docs_kept"], stats["exact_duplicate"], stats["near_duplicate"],
                  stats["bytes_removed"]]])


def compute_stats_spark(res) -> dict[str, Any]:
    """The same figures as `compute_stats`, aggregated in Spark (only small tables collected)."""
    from pyspark.sql import functions as F

    sizes = res.groupBy("dup_cluster").agg(F.first("dup_cluster_size").alias("s"))
    bucket = F.lit(len(SIZE_BUCKETS) - 1)
    for i, (lo, hi) in reversed(list(enumerate(SIZE_BUCKETS))):
        bucket = F.when((F.col("s") >= lo) & (F.col("s") <= hi), F.lit(i)).otherwise(bucket)
    got = {r["b"]: r for r in sizes.groupBy(bucket.alias("b"))
           .agg(F.count(F.lit(1)).alias("c"), F.sum("s").alias("d")).collect()}
    hist = [{"size": _label(lo, hi), "clusters": int(got[i]["c"]), "docs": int(got[i]["d"])}
            for i, (lo, hi) in enumerate(SIZE_BUCKETS) if i in got]
    rem = F.col("reason").isNotNull()
    rows = (res.groupBy(F.coalesce("lang", F.lit("")).alias("lang"))
               .agg(F.count(F.lit(1)).alias("docs"),
                    F.sum(F.when(~rem, 1).otherwise(0)).alias("kept"),
                    F.sum(F.when(F.col("reason") == "exact_duplicate", 1).otherwise(0)).alias("exact_removed"),
                    F.sum(F.when(F.col("reason") == "near_duplicate", 1).otherwise(0)).alias("near_removed"),
                    F.sum("n_bytes").alias("bytes_in"),
                    F.sum(F.when(rem, F.col("n_bytes")).otherwise(0)).alias("bytes_removed"))
               .orderBy("lang").collect())
    per_lang = [{k: (r[k] if k == "lang" else int(r[k] or 0)) for k in r.asDict()} for r in rows]
    tot = {k: sum(r[k] for r in per_lang) for k in ("docs", "kept", "exact_removed", "near_removed",
                                                     "bytes_in", "bytes_removed")}
    return {"docs_in": tot["docs"], "docs_kept": tot["kept"], "exact_duplicate": tot["exact_removed"],
            "near_duplicate": tot["near_removed"], "bytes_in": tot["bytes_in"],
            "bytes_removed": tot["bytes_removed"], "cluster_size_histogram": hist, "per_lang": per_lang}
