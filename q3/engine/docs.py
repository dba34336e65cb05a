"""Writing a job's documents when the job drops none (labeling): one folder partitioned by lang.

    <where>/lang=<lang>/*.parquet     DOC_SCHEMA columns (lang in the path)

The same layout from local record batches or a Spark DataFrame; the number of rows written is
checked against the input's (`n_in`), as `write_split` checks kept + rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from q3.engine.schema import conform
from q3.engine.write import KEPT_COLS, LostRows, _LangWriters, write_by_lang, written_rows
from q3.schemas import DOC_SCHEMA


def _check(n: int, n_in: int | None, job: str) -> int:
    if n_in is not None and n != n_in:
        raise LostRows(f"{job}: {n_in} rows in, but {n} written")
    return n


def write_docs_local(batches: Iterable[pa.RecordBatch], where: str | Path, n_in: int | None = None,
                     job: str = "job") -> int:
    """Stream DOC_SCHEMA batches into `where`/lang=*/ (one file per lang); returns the rows written."""
    writers = _LangWriters(Path(where), KEPT_COLS)
    n = 0
    try:
        for b in batches:
            writers.write(b if b.schema.equals(DOC_SCHEMA) else conform(b, DOC_SCHEMA))
            n += b.num_rows
    finally:
        writers.close()
    return _check(n, n_in, job)


def write_docs_spark(df: Any, where: str | Path, n_in: int | None = None, job: str = "job") -> int:
    """Write a DOC_SCHEMA DataFrame into `where`/lang=*/; rows counted from the written footers."""
    where = Path(where)
    write_by_lang(df, where, DOC_SCHEMA.names)
    return _check(written_rows(where), n_in, job)


def write_docs(result: Any, where: str | Path, n_in: int | None = None, job: str = "job") -> int:
    """`where`/lang=*/ from local batches or a Spark DataFrame; rows written = `n_in` checked."""
    if hasattr(result, "sparkSession"):
        return write_docs_spark(result, where, n_in, job)
    return write_docs_local(result, where, n_in, job)
