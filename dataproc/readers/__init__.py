"""Readers: files -> Arrow batches in `STAGE_OUTPUT_SCHEMA` (stage `read`), one module per format.

    list_inputs(spec) -> sorted file paths of one InputSpec (a file, a directory, or a glob)
    read_file(path, spec) -> Iterator[pa.RecordBatch]

Both are pure functions of their arguments, so the local runner and Spark (`mapInArrow` over a
DataFrame of paths) read identically. Bad input never raises and faults are isolated per record:
a bad record becomes a rejected row (reason `invalid_utf8`, `malformed_json`, `binary_file`,
`empty_file`, `unreadable_pdf`, ...) and reading continues with the rest of the file; a cut file
keeps every record before the cut and ends in one `truncated_*` row (docs/dataproc-ingest.md).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from dataproc.config import InputSpec
from q3.log import get_logger

FORMATS = ("jsonl", "parquet", "text", "warc", "wet", "pdf")
_SKIP_NAMES = {"_Q3_SUCCESS", "_SUCCESS"}   # commit markers of our and Spark's outputs
log = get_logger("dataproc.readers")


def detect_format(path: str) -> str:
    """Format from the file name (compression suffixes .gz/.zst/.zstd looked through)."""
    name = Path(path).name.lower()
    for comp in (".gz", ".zst", ".zstd"):
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".wet") or ".warc.wet" in name:
        return "wet"
    if name.endswith((".warc", ".arc")):
        return "warc"
    if name.endswith(".pdf"):
        return "pdf"
    return "text"


def list_inputs(spec: InputSpec) -> list[str]:
    """Files of an input: the file itself, every file under a directory, or a (recursive) glob.

    Hidden files and directories (a name starting with "." below the input's root) are skipped,
    as Spark and Hadoop skip them when they read a directory: they are side files (Spark's `.crc`
    checksums, `.DS_Store`, editor swap files, `.git/`), not documents. What is skipped is logged
    with examples; a hidden file named as the input path itself is read."""
    p = Path(spec.path)
    if p.is_file():
        return [str(p)]
    if p.is_dir():
        found = [(x, x.relative_to(p).parts) for x in p.rglob("*") if x.is_file()]
    else:
        found = [(Path(x), Path(x).parts[-1:]) for x in glob.glob(spec.path, recursive=True)
                 if Path(x).is_file()]
    keep, hidden = [], []
    for x, rel in found:
        if x.name in _SKIP_NAMES:
            continue
        (hidden if any(part.startswith(".") for part in rel) else keep).append(str(x))
    if hidden:
        hidden.sort()
        log.warning("input %s: skipped %d hidden file(s) (a name starting with '.': side files such as "
                    "Spark's .crc checksums, not documents; name one as the input path to read it), e.g. %s",
                    spec.path, len(hidden), ", ".join(hidden[:3]))
    return sorted(keep)


def read_file(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    fmt = spec.format if spec.format != "auto" else detect_format(path)
    if fmt != "text" and _is_empty(path):
        # a zero-byte file of any format is a visible rejected row, not silently nothing
        from dataproc.readers.common import Rows
        rows = Rows(spec)
        rows.reject("empty_file", path, b"", text="", detail=f"0 bytes ({fmt})")
        return rows.flush()
    if fmt == "jsonl":
        from dataproc.readers.jsonl import read_jsonl
        return read_jsonl(path, spec)
    if fmt == "parquet":
        from dataproc.readers.parquet import read_parquet
        return read_parquet(path, spec)
    if fmt in ("warc", "wet"):
        from dataproc.readers.warc import read_warc
        return read_warc(path, spec)
    if fmt == "pdf":
        from dataproc.readers.pdf import read_pdf
        return read_pdf(path, spec)
    from dataproc.readers.text import read_text
    return read_text(path, spec)


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False
