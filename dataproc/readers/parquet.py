"""Parquet files with a text column (and optionally url/id columns), read batch by batch."""

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
        rows.reject("unreadable_parquet", path, path.encode(), detail=f"{type(e).__name__}: {e}"[:300])
        yield from rows.flush()
        return
    if spec.text_field not in names:
        rows.reject("missing_text", path, path.encode(), detail=f"no column {spec.text_field!r} in {names} (text_field= selects the text column)")
        yield from rows.flush()
        return
    wanted = [c for c in (spec.text_field, spec.url_field, spec.id_field, "lang_hint") if c and c in names]
    row = 0
    try:
        for batch in pf.iter_batches(columns=wanted, batch_size=1024):
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
                if rows.full():
                    yield from rows.flush()
            row += batch.num_rows
    except (OSError, pa.ArrowException) as e:
        # Arrow validates UTF-8 when decoding string columns: a bad page ends the file here.
        reason = "invalid_utf8" if "utf8" in str(e).lower().replace("-", "") else "unreadable_parquet"
        rows.reject(reason, f"{path}#{row}", f"{path}#{row}".encode(), detail=f"{type(e).__name__}: {e}"[:300])
    yield from rows.flush()
