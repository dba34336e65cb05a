"""Reading a corpus folder: one function for every job, local (Arrow) or Spark (DataFrame).

A corpus folder is what a job's `kept/` holds: Parquet files, usually hive-partitioned by `lang=`
(the partition value becomes the `lang` column), with at least some of `DOC_SCHEMA`'s columns.
Files and folders starting with `_` or `.` (markers, Spark's crc files, work dirs) are not data.
A JSONL file of documents (`text`, optional `url`, `source`, `lang`/`lang_hint`) reads as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from q3.engine.schema import conform, spark_conform
from q3.errors import InputMissing
from q3.schemas import DOC_SCHEMA, UNKNOWN_LANG, content_id

IGNORE = [".", "_"]


def _is_jsonl(p: Path) -> bool:
    return p.suffix in (".jsonl", ".json")


def jsonl_to_table(path: str | Path) -> pa.Table:
    """JSONL documents (text, url, source, lang or lang_hint) -> DOC_SCHEMA rows."""
    from q3.jsonl import read_text_rows

    rows = read_text_rows(path, "input", "rename the field, or run `q3 data run` (its input text_field= "
                          "selects one) first")
    cols = {
        "id": [content_id(r["text"]) for r in rows],
        "text": [r["text"] for r in rows],
        "source": [r.get("source", "") for r in rows],
        "url": [r.get("url", "") for r in rows],
        "lang": [r.get("lang") or r.get("lang_hint") or UNKNOWN_LANG for r in rows],
        "n_chars": [len(r["text"]) for r in rows],
    }
    return pa.Table.from_batches([conform(pa.table(cols))])


def dataset(path: str | Path) -> ds.Dataset:
    """The Parquet files under `path` as one Arrow dataset (hive `lang=` partitions understood)."""
    p = Path(path)
    if not p.exists():
        raise InputMissing(f"input {p} does not exist")
    if p.is_file():
        return ds.dataset(str(p), format="parquet")
    # only *.parquet files are data (a stats.json or a marker beside them is not), as on Spark
    files = sorted(str(f) for f in p.rglob("*.parquet")
                   if not any(part.startswith(tuple(IGNORE)) for part in f.relative_to(p).parts))
    if not files:
        return ds.dataset([], schema=DOC_SCHEMA, format="parquet")
    return ds.dataset(files, format="parquet", partitioning=ds.partitioning(flavor="hive"),
                      partition_base_dir=str(p))


def corpus_size(path: str | Path) -> tuple[int, int]:
    """(bytes on disk, rows) of a corpus folder, from file sizes and Parquet footers (no data read)."""
    p = Path(path)
    if _is_jsonl(p):
        size = p.stat().st_size
        return size, sum(1 for _ in p.open("rb"))
    d = dataset(p)
    files = d.files
    rows = sum(f.metadata.num_rows for f in d.get_fragments())
    return sum(Path(f).stat().st_size for f in files), rows


def _select(data: pa.RecordBatch | pa.Table, columns: list[str] | None, keep_extra: bool,
            schema: pa.Schema = DOC_SCHEMA) -> pa.RecordBatch:
    b = conform(data, schema, keep_extra=keep_extra)
    return b if columns is None else b.select(columns)


def read_corpus(path: str | Path, columns: list[str] | None = None, *, spark: Any = None,
                keep_extra: bool = False) -> Any:
    """The documents under `path` conformed to DOC_SCHEMA (then `columns` selected).

    Local (spark=None): a `pa.Table`. With a SparkSession: a DataFrame of the same columns and
    types. keep_extra keeps columns the files hold beyond DOC_SCHEMA (after its columns)."""
    p = Path(path)
    if spark is not None:
        if _is_jsonl(p):
            raise InputMissing(f"input {p}: Spark reads corpus folders of Parquet; convert the JSONL first "
                               "(q3.engine.io.jsonl_to_table) or use runner=local")
        if not p.exists():
            raise InputMissing(f"input {p} does not exist")
        df = spark.read.option("pathGlobFilter", "*.parquet").parquet(str(p)) if p.is_dir() \
            else spark.read.parquet(str(p))
        df = spark_conform(df, DOC_SCHEMA, keep_extra=keep_extra)
        return df if columns is None else df.select(*columns)
    if _is_jsonl(p):
        t = jsonl_to_table(p)
        return t if columns is None else t.select(columns)
    d = dataset(p)
    want = None if columns is None else [c for c in columns if c in d.schema.names]
    t = d.to_table(columns=None if keep_extra or columns is None else want)
    return pa.Table.from_batches([_select(t, columns, keep_extra)])


def scan_corpus(path: str | Path | ds.Dataset, batch_size: int = 2048, columns: list[str] | None = None,
                keep_extra: bool = False, schema: pa.Schema = DOC_SCHEMA) -> Iterator[pa.RecordBatch]:
    """The documents under `path` (or of an opened `dataset`), streamed in batches of at most
    `batch_size` rows conformed to `schema` (DOC_SCHEMA by default; a job may ask for a narrower
    one), then `columns` selected. Memory is bounded by a batch, not by the corpus: Arrow's default
    read-ahead (16 batches x 4 files) would hold ~16 batches of texts at once, so it is off.
    Order: files in the dataset's (sorted) order, rows as stored."""
    if not isinstance(path, ds.Dataset) and _is_jsonl(Path(path)):
        yield from (b for b in read_corpus(path, columns, keep_extra=keep_extra).to_batches(batch_size))
        return
    d = path if isinstance(path, ds.Dataset) else dataset(path)
    wanted = [f.name for f in schema]
    read = None if keep_extra else [c for c in (columns or wanted) if c in d.schema.names]
    for b in d.to_batches(columns=read, batch_size=batch_size, batch_readahead=1, fragment_readahead=1):
        if b.num_rows:
            yield _select(b, columns, keep_extra, schema)
