"""Parquet files with a text column (and optionally url/id columns), read row group by row group.

A damaged row group is one rejected row and the others are still read. A cut file has no footer
(schema and row group offsets are at the end), so none of its rows can be found: it is one
`truncated_parquet` row (recovering row groups without a footer would mean guessing page
layouts: not cheap, not done).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from dataproc.config import InputSpec
from dataproc.readers.common import Rows, lang_for, valid_str


def read_parquet(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    rows = Rows(spec)
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (OSError, pa.ArrowException) as e:
        # the footer (schema, row group offsets) is the file's last bytes: a cut file has none,
        # so nothing in it can be located; one row stands for the whole file.
        cut = _cut(path)
        rows.reject("truncated_parquet" if cut else "unreadable_parquet", path, path.encode(),
                    detail=(f"{cut}; " if cut else "") + f"{type(e).__name__}: {e}"[:300])
        yield from rows.flush()
        return
    if spec.text_field not in names:
        rows.reject("missing_text", path, path.encode(), detail=f"no column {spec.text_field!r} in {names} (text_field= selects the text column)")
        yield from rows.flush()
        return
    wanted = [c for c in (spec.text_field, spec.url_field, spec.id_field, "lang_hint") if c and c in names]
    row = 0
    for g in range(pf.num_row_groups):
        # a damaged row group is one rejected row; the row groups after it are still read
        n_rows = pf.metadata.row_group(g).num_rows
        try:
            batches = list(pf.iter_batches(columns=wanted, batch_size=1024, row_groups=[g]))
        except (OSError, pa.ArrowException) as e:
            # Arrow validates UTF-8 when decoding string columns: a bad page fails its row group.
            reason = "invalid_utf8" if "utf8" in str(e).lower().replace("-", "") else "unreadable_parquet"
            rows.reject(reason, f"{path}#{row}", f"{path}#{row}".encode(),
                        detail=f"row group {g} (rows {row}..{row + n_rows - 1}): {type(e).__name__}: {e}"[:300])
            batches = []
        for batch in batches:
            _batch_rows(rows, batch, wanted, path, row, spec)
            row += batch.num_rows
            if rows.full():
                yield from rows.flush()
        row += n_rows - sum(b.num_rows for b in batches)
    yield from rows.flush()


def _batch_rows(rows: Rows, batch: pa.RecordBatch, wanted: list[str], path: str, row: int,
                spec: InputSpec) -> None:
    cols = {c: batch.column(c).to_pylist() for c in wanted}
    for i, text in enumerate(cols[spec.text_field]):
        url = f"{path}#{row + i}"
        if spec.url_field in cols and cols[spec.url_field][i]:
            url = str(cols[spec.url_field][i])
        if not isinstance(text, str):
            rows.reject("missing_text", url, url.encode(), detail=f"{spec.text_field} is null")
            continue
        if not valid_str(text):
            rows.reject("invalid_utf8", url, text.encode("utf-8", "surrogatepass"),
                        text=text.encode("utf-8", "replace").decode("utf-8"), detail="lone surrogate")
            continue
        hint = cols.get("lang_hint", [None] * batch.num_rows)[i]
        doc_id = cols[spec.id_field][i] if spec.id_field in cols else None
        rows.keep(text, url, doc_id=str(doc_id) if doc_id is not None else None,
                  lang=lang_for(hint), detail=hint if spec.lang_from_path else None)


def _cut(path: str) -> str | None:
    """Why a file looks like Parquet cut short, or None: it starts with the `PAR1` magic and a
    page header (Thrift field 1, `type`: byte 0x15) but does not end with the footer magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(5)
            size = f.seek(0, 2)
            f.seek(max(0, size - 4))
            tail = f.read(4)
    except OSError:
        return None
    if 0 < size < 4 and b"PAR1".startswith(head):
        return f"{size} bytes, the start of the Parquet magic: cut short"
    if head[:4] == b"PAR1" and (size == 4 or head[4:] == b"\x15") and (size < 12 or tail != b"PAR1"):
        return f"{size} bytes, a Parquet file without its footer: cut short"
    return None
