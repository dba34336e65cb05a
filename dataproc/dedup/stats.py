"""Dedup statistics: cluster-size histogram and bytes removed per language, as tables and JSON.

One function for both runners: `compute_stats` aggregates the result rows (lang, n_bytes,
dup_cluster_size, reason) with Arrow, batch by batch, so the Spark runner streams its result
Parquet through it on the driver (a few small columns, never the texts) and the local runner
passes its in-memory result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from q3.log import print_table

SIZE_BUCKETS = [(1, 1), (2, 2), (3, 5), (6, 10), (11, 100), (101, 1000), (1001, 10**18)]
STATS_COLUMNS = ["lang", "n_bytes", "dup_cluster_size", "reason"]


def _label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else (f">{lo - 1}" if hi >= 10**18 else f"{lo}-{hi}")


def _batches(res: Any) -> Iterable[pa.RecordBatch | pa.Table]:
    if isinstance(res, (pa.Table, pa.RecordBatch)):
        return [res.select(STATS_COLUMNS)]
    if hasattr(res, "to_batches"):                 # a pyarrow dataset: stream the four columns
        return res.to_batches(columns=STATS_COLUMNS)
    if hasattr(res, "columns") and hasattr(res, "iloc"):    # pandas (the local runner's result)
        return [pa.Table.from_pandas(res[STATS_COLUMNS], preserve_index=False)]
    return res


def compute_stats(res: Any) -> dict[str, Any]:
    """res: the result rows (one per input doc with lang, n_bytes, dup_cluster_size, reason) as an
    Arrow table, a pyarrow dataset, an iterable of Arrow batches or a pandas DataFrame.

    A cluster of size s has exactly s rows, each with dup_cluster_size = s, so clusters of size s =
    rows with size s / s: the histogram needs no grouping by cluster id."""
    by_lang: list[pa.Table] = []
    by_size: list[pa.Table] = []
    for b in _batches(res):
        t = b if isinstance(b, pa.Table) else pa.Table.from_batches([b])
        if not t.num_rows:
            continue
        reason = t.column("reason").cast(pa.string())
        nb = pc.fill_null(t.column("n_bytes").cast(pa.int64()), 0)
        g = pa.table({
            "lang": pc.fill_null(t.column("lang").cast(pa.string()), ""),
            "kept": pc.is_null(reason).cast(pa.int64()),
            "exact": pc.fill_null(pc.equal(reason, "exact_duplicate"), False).cast(pa.int64()),
            "near": pc.fill_null(pc.equal(reason, "near_duplicate"), False).cast(pa.int64()),
            "bytes_in": nb,
            "bytes_removed": pc.if_else(pc.is_valid(reason), nb, 0),
        })
        by_lang.append(g.group_by("lang").aggregate([("kept", "count"), ("kept", "sum"), ("exact", "sum"),
                                                     ("near", "sum"), ("bytes_in", "sum"),
                                                     ("bytes_removed", "sum")]))
        s = pa.table({"s": t.column("dup_cluster_size").cast(pa.int64())})
        by_size.append(s.group_by("s").aggregate([("s", "count")]))
    per_lang: list[dict[str, Any]] = []
    if by_lang:
        cols = ["kept_count", "kept_sum", "exact_sum", "near_sum", "bytes_in_sum", "bytes_removed_sum"]
        lang = (pa.concat_tables(by_lang).group_by("lang").aggregate([(c, "sum") for c in cols])
                .sort_by("lang").to_pylist())
        per_lang = [{"lang": r["lang"], "docs": int(r["kept_count_sum"]), "kept": int(r["kept_sum_sum"]),
                     "exact_removed": int(r["exact_sum_sum"]), "near_removed": int(r["near_sum_sum"]),
                     "bytes_in": int(r["bytes_in_sum_sum"]), "bytes_removed": int(r["bytes_removed_sum_sum"])}
                    for r in lang]
    rows_of_size: dict[int, int] = {}
    if by_size:
        for r in pa.concat_tables(by_size).group_by("s").aggregate([("s_count", "sum")]).to_pylist():
            if r["s"] is not None:
                rows_of_size[int(r["s"])] = int(r["s_count_sum"])
    hist = []
    for lo, hi in SIZE_BUCKETS:
        sel = {s: n for s, n in rows_of_size.items() if lo <= s <= hi}
        if sel:
            hist.append({"size": _label(lo, hi), "clusters": sum(n // s for s, n in sel.items()),
                         "docs": sum(sel.values())})
    tot = {k: sum(r[k] for r in per_lang) for k in ("docs", "kept", "exact_removed", "near_removed",
                                                     "bytes_in", "bytes_removed")}
    return {"docs_in": tot["docs"], "docs_kept": tot["kept"], "exact_duplicate": tot["exact_removed"],
            "near_duplicate": tot["near_removed"], "bytes_in": tot["bytes_in"],
            "bytes_removed": tot["bytes_removed"], "cluster_size_histogram": hist, "per_lang": per_lang}


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
