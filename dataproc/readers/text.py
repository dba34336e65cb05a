"""Plain text files (a directory of them, or single files): one document per file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.readers.common import Rows, hex_prefix, looks_binary, read_whole


def read_text(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    rows = Rows(spec)
    # The sample's layout raw/<lang>/<name>.txt names the language in the parent directory.
    detail = Path(path).parent.name if spec.lang_from_path else None
    raw = read_whole(path, rows)
    if raw is None:
        yield from rows.flush()
        return
    if not raw:
        rows.reject("empty_file", path, raw, text="", detail=detail)
    elif looks_binary(raw):
        rows.reject("binary_file", path, raw, detail=f"{len(raw)} bytes, head {hex_prefix(raw)}")
    else:
        try:
            rows.keep(raw.decode("utf-8"), path, detail=detail)
        except UnicodeDecodeError as e:
            rows.reject("invalid_utf8", path, raw, text=raw.decode("utf-8", errors="replace"),
                        detail=f"byte {e.start}: {hex_prefix(raw[e.start:])}")
    yield from rows.flush()
