"""Writing a job's result: kept rows (partitioned by lang) and rejected rows (with reason, stage,
detail), and the invariant kept + rejected = input, checked on every job.

The result is `STAGE_OUTPUT_SCHEMA` rows (null `reason` = kept), as local record batches or a Spark
DataFrame. Both runners write the same layout:

    <where>/kept/lang=<lang>/*.parquet       DOC_SCHEMA columns (lang in the path)
    <where>/rejected/lang=<lang>/*.parquet   + reason, stage, detail
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from q3.engine.schema import conform
from q3.schemas import DOC_SCHEMA, STAGE_OUTPUT_SCHEMA, UNKNOWN_LANG

KEPT_COLS = [n for n in DOC_SCHEMA.names if n != "lang"]
REJECTED_COLS = [n for n in STAGE_OUTPUT_SCHEMA.names if n != "lang"]


class LostRows(RuntimeError):
    """kept + rejected != input: a job dropped or duplicated rows (a bug, never a user's mistake)."""


@dataclass
class SplitCounts:
    kept: int = 0
    rejected: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.kept + self.rejected

    def check(self, n_in: int | None, job: str) -> SplitCounts:
        if n_in is not None and self.total != n_in:
            raise LostRows(f"{job}: {n_in} rows in, but {self.kept} kept + {self.rejected} rejected "
                           f"= {self.total} written")
        return self


class _LangWriters:
    """One Parquet file per lang partition, rows appended batch by batch (memory: one batch)."""

    def __init__(self, where: Path, cols: list[str]):
        self.where, self.cols = where, cols
        self.writers: dict[str, pq.ParquetWriter] = {}
        where.mkdir(parents=True, exist_ok=True)

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        langs = pc.fill_null(batch.column("lang"), UNKNOWN_LANG)
        for lang in pc.unique(langs).to_pylist():
            part = batch.filter(pc.equal(langs, lang)).select(self.cols)
            w = self.writers.get(lang)
            if w is None:
                d = self.where / f"lang={lang}"
                d.mkdir(parents=True, exist_ok=True)
                w = self.writers[lang] = pq.ParquetWriter(d / "part-0.parquet", part.schema)
            w.write_batch(part)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def write_split_local(batches: Iterable[pa.RecordBatch], where: str | Path, n_in: int | None = None,
                      job: str = "job") -> SplitCounts:
    """Stream STAGE_OUTPUT_SCHEMA batches into kept/ and rejected/; returns the counts, checked
    against `n_in` (the input's row count) when given."""
    where = Path(where)
    kept, rejected = _LangWriters(where / "kept", KEPT_COLS), _LangWriters(where / "rejected", REJECTED_COLS)
    counts = SplitCounts()
    reasons: Counter[str] = Counter()
    try:
        for b in batches:
            if not b.schema.equals(STAGE_OUTPUT_SCHEMA):
                b = conform(b, STAGE_OUTPUT_SCHEMA)
            live = pc.is_null(b.column("reason"))
            k, r = b.filter(live), b.filter(pc.invert(live))
            kept.write(k)
            rejected.write(r)
            counts.kept += k.num_rows
            counts.rejected += r.num_rows
            reasons.update(r.column("reason").to_pylist())
    finally:
        kept.close()
        rejected.close()
    counts.by_reason = dict(sorted(reasons.items()))
    return counts.check(n_in, job)


def written_rows(where: str | Path) -> int:
    """Rows in the Parquet files under `where` (a dir or one file), from their footers (no data read,
    no Spark job)."""
    p = Path(where)
    if p.is_file():
        return pq.read_metadata(str(p)).num_rows
    return sum(pq.read_metadata(str(f)).num_rows for f in p.rglob("*.parquet")
               if not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts))


def _reasons(rejected: Path) -> dict[str, int]:
    """Rejected rows by reason, from the written files (one column read on the driver: no Spark job)."""
    files = [f for f in rejected.rglob("*.parquet") if not f.name.startswith((".", "_"))]
    reasons: Counter[str] = Counter()
    for f in files:
        reasons.update(pq.read_table(f, columns=["reason"]).column("reason").to_pylist())
    return dict(sorted(reasons.items()))


def write_by_lang(df: Any, where: Path, columns: list[str]) -> None:
    """Spark: `columns` of `df` into `where`/lang=*/ (a null lang as UNKNOWN_LANG, as the local
    writer does), without Spark's own _SUCCESS and .crc files beside our marker."""
    from pyspark.sql import functions as F

    (df.withColumn("lang", F.coalesce(F.col("lang"), F.lit(UNKNOWN_LANG))).select(*columns)
       .write.mode("overwrite").partitionBy("lang").parquet(str(where)))
    for junk in [*where.glob("_SUCCESS"), *where.rglob(".*.crc")]:
        junk.unlink()


def write_split_spark(df: Any, where: str | Path, n_in: int | None = None, job: str = "job",
                      persist: bool = True) -> SplitCounts:
    """Write a STAGE_OUTPUT_SCHEMA DataFrame into kept/ and rejected/. persist: compute it once for
    the two writes (right when its rows are costly, e.g. model stages); a job whose rows are a cheap
    read + broadcast join passes False and reads twice instead of caching the corpus. Counts come
    from the written files, so they cost no Spark job."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    where = Path(where)
    if persist:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        live = F.col("reason").isNull()
        write_by_lang(df.where(live), where / "kept", DOC_SCHEMA.names)
        write_by_lang(df.where(~live), where / "rejected", STAGE_OUTPUT_SCHEMA.names)
    finally:
        if persist:
            df.unpersist()
    counts = SplitCounts(written_rows(where / "kept"), written_rows(where / "rejected"), _reasons(where / "rejected"))
    return counts.check(n_in, job)


def write_split(result: Any, where: str | Path, n_in: int | None = None, job: str = "job",
                persist: bool = True) -> SplitCounts:
    """kept/ + rejected/ from local batches or a Spark DataFrame; kept + rejected = `n_in` checked."""
    if hasattr(result, "sparkSession"):
        return write_split_spark(result, where, n_in, job, persist)
    return write_split_local(result, where, n_in, job)
