"""JSON Lines (plain, .gz, .zst): one document per line, read as a stream.

Faults are isolated per line: a bad line (invalid JSON, nested too deeply for the parser, not an
object, no text) becomes one rejected row at its `path#line` and reading goes on. The end of a
damaged file is one row: a compressed stream cut short yields every complete line that
decompresses, then one `truncated_gzip`/`truncated_zstd` row (the partial line is part of it);
damaged compressed data ends the file with one `bad_gzip`/`bad_zstd` row; a plain file whose last
line has no newline and does not parse is one `truncated_jsonl` row (a cut file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.readers.common import Rows, guarded, hex_prefix, lang_for, valid_str
from dataproc.readers.streams import Cut, StreamEnd, chunks, compression, lines

_COMP_NAME = {"gzip": "gzip", "zstd": "zstd", None: "jsonl"}


def read_jsonl(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    rows = Rows(spec)
    comp = _COMP_NAME[compression(path)]
    lineno = 0
    try:
        for raw in lines(chunks(path)):
            lineno += 1
            url = f"{path}#{lineno}"
            if not raw.endswith(b"\n") and raw.strip() and not _parses(raw):
                rows.reject("truncated_jsonl", url, raw, text=raw.decode("utf-8", errors="replace"),
                            detail=f"line {lineno} ({len(raw)} bytes) has no newline and does not parse: a cut file")
            elif raw.strip():
                with guarded(rows, url, raw, f"line {lineno}"):
                    record(rows, raw, url, spec)
            if rows.full():
                yield from rows.flush()
    except StreamEnd as e:
        reason = f"truncated_{comp}" if isinstance(e, Cut) else f"bad_{comp}"
        url = f"{path}#{lineno + 1}"
        rows.reject(reason, url, url.encode(), text=e.tail.decode("utf-8", errors="replace") or None,
                    detail=f"after {lineno} lines (+{len(e.tail)} bytes of line {lineno + 1}): {e}"[:300])
    except OSError as e:
        # the file itself when it cannot be opened; else where reading stopped
        rows.reject("unreadable_file", f"{path}#{lineno + 1}" if lineno else path, path.encode(),
                    detail=f"after {lineno} lines: {type(e).__name__}: {e}"[:300])
    yield from rows.flush()


def _parses(raw: bytes) -> bool:
    """Whether an unterminated last line is complete JSON (then it is judged as a record)."""
    try:
        json.loads(raw.decode("utf-8", errors="replace"))   # bad bytes are record()'s invalid_utf8
        return True
    except ValueError:
        return False
    except RecursionError:   # complete but too deep: record() rejects it as malformed_json
        return True


def record(rows: Rows, raw: bytes, url: str, spec: InputSpec) -> None:
    """Turn one JSON line into a kept or rejected row."""
    try:
        line = raw.decode("utf-8")
        bad_at = -1
    except UnicodeDecodeError as e:
        line = raw.decode("utf-8", errors="replace")
        bad_at = e.start
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:
        # RecursionError: nesting deeper than the parser's stack (`[[[[...` 100,000 deep)
        msg = "nested too deeply for the JSON parser" if isinstance(e, RecursionError) else f"{e}"
        rows.reject("malformed_json", url, raw, text=line if bad_at < 0 else line.rstrip("\n"),
                    detail=msg[:300])
        return
    if not isinstance(obj, dict):
        rows.reject("malformed_json", url, raw, text=line, detail=f"not an object: {type(obj).__name__}")
        return
    text = obj.get(spec.text_field)
    if not isinstance(text, str):
        # the usual cause is a corpus that names its text otherwise (`content`, `body`): say so
        fields = ", ".join(list(obj)[:12]) or "(none)"
        rows.reject("missing_text", url, raw, text=line,
                    detail=f"field {spec.text_field!r} is {type(text).__name__}; the row has fields: {fields}"
                           f" (select one: input=[{{path: ..., text_field: <field>}}])")
        return
    doc_url = obj.get(spec.url_field) if spec.url_field else None
    doc_url = doc_url if isinstance(doc_url, str) and doc_url else url
    hint = obj.get("lang_hint")
    detail = hint if spec.lang_from_path and isinstance(hint, str) else None
    if bad_at >= 0:
        rows.reject("invalid_utf8", doc_url, raw, text=text,
                    detail=f"byte {bad_at}: {hex_prefix(raw[bad_at:])}")
        return
    if not valid_str(text):
        fixed = text.encode("utf-8", errors="replace").decode("utf-8")
        rows.reject("invalid_utf8", doc_url, text.encode("utf-8", "surrogatepass"), text=fixed,
                    detail="lone surrogate")
        return
    doc_id = str(obj[spec.id_field]) if spec.id_field and obj.get(spec.id_field) is not None else None
    rows.keep(text, doc_url, doc_id=doc_id, lang=lang_for(hint), detail=detail)
