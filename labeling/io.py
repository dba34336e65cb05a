"""Reading the documents to label: kept Parquet (DOC_SCHEMA, hive-partitioned by lang) or JSONL."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from q3.commit import commit, job_key, reuse_if_committed
from q3.jsonl import read_text_rows
from q3.schemas import DOC_SCHEMA, content_id


def jsonl_to_table(path: str | Path) -> pa.Table:
    """Sample JSONL (text, url, source, lang_hint) -> DOC_SCHEMA, lang = lang_hint."""
    rows = read_text_rows(path, "input", "rename the field, or run `q3 data run` (its input text_field= "
                          "selects one) first")
    cols = {
        "id": [content_id(r["text"]) for r in rows],
        "text": [r["text"] for r in rows],
        "source": [r.get("source", "") for r in rows],
        "url": [r.get("url", "") for r in rows],
        "lang": [r.get("lang") or r.get("lang_hint") or "und_Zyyy" for r in rows],
        "n_chars": [len(r["text"]) for r in rows],
    }
    n = len(rows)
    arrays = [pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in DOC_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=DOC_SCHEMA)


def read_docs(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    p = Path(path)
    if p.suffix in (".jsonl", ".json"):
        t = jsonl_to_table(p)
        return t.select(columns) if columns else t
    dataset = ds.dataset(str(p), format="parquet", partitioning="hive",
                         exclude_invalid_files=True, ignore_prefixes=[".", "_"])
    return dataset.to_table(columns=columns)


def as_parquet(path: str | Path, work: Path) -> Path:
    """Spark reads Parquet: a JSONL input is converted once (atomically) into work/input_docs."""
    p = Path(path)
    if p.suffix not in (".jsonl", ".json"):
        return p
    out = work / "input_docs"
    key = job_key("jsonl-to-parquet", {}, inputs=[p])     # the file's content fingerprint (q3.commit)
    if reuse_if_committed(out, key) is not None:
        return out
    with commit(out, key, {"source": str(p.resolve())}) as tmp:
        pq.write_table(jsonl_to_table(p), tmp / "part-0.parquet")
    return out
