"""STAND-IN until the `ingest` branch lands its readers (this file is theirs; merge takes theirs).

list_inputs(spec) -> sorted file paths; read_file(path, spec) -> Iterator[pa.RecordBatch]
conforming to STAGE_OUTPUT_SCHEMA. Only JSONL and plain text, enough to develop the runners.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.stage import conform
from q3.schemas import content_id


def list_inputs(spec: InputSpec) -> list[str]:
    p = Path(spec.path)
    if p.is_dir():
        return sorted(str(x) for x in p.rglob("*") if x.is_file())
    return sorted(glob.glob(spec.path, recursive=True))


def read_file(path: str, spec: InputSpec, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
    source = spec.source or Path(spec.path).stem
    rows: list[dict] = []
    fmt = spec.format if spec.format != "auto" else ("jsonl" if path.endswith(".jsonl") else "text")
    if fmt == "jsonl":
        with open(path, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f):
                try:
                    d = json.loads(line)
                    text = d[spec.text_field]
                    rows.append({"reason": None, "stage": None, "detail": None, "id": content_id(text), "text": text, "source": source,
                                 "url": d.get(spec.url_field or "url") or f"{path}:{i}",
                                 "lang": d.get("lang_hint") if str(d.get("lang_hint", "")).startswith("code_") else None})
                except (ValueError, KeyError, TypeError) as e:
                    rows.append({"id": content_id(line), "text": line, "source": source, "url": f"{path}:{i}",
                                 "reason": "bad_json", "stage": "read", "detail": str(e)[:200]})
    else:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8", errors="replace")
        rows.append({"id": content_id(raw), "text": text, "source": source, "url": os.path.abspath(path)})
    for i in range(0, len(rows), batch_size):
        yield conform(pa.Table.from_pylist(rows[i:i + batch_size]))
