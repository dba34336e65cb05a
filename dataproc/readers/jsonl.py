"""JSON Lines (plain, .gz, .zst): one document per line, read as a stream.

A bad line becomes a rejected row and reading goes on; a truncated compressed tail ends the file
with one `truncated_gzip`/`truncated_zstd` row after every complete line before it was kept.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.readers.common import Rows, hex_prefix, lang_for, valid_str

try:
    import zstandard
    _ZSTD_ERRORS: tuple[type[BaseException], ...] = (zstandard.ZstdError,)
except ImportError:   # pragma: no cover - zstandard is a dependency
    zstandard = None
    _ZSTD_ERRORS = ()


def open_stream(path: str) -> IO[bytes] | Any:
    """A binary stream over a possibly compressed file (by extension)."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith((".zst", ".zstd")):
        return _ZstdLines(path)
    return open(path, "rb")  # noqa: SIM115


class TruncatedZstd(EOFError):
    pass


class _ZstdLines:
    """Line iterator over a (multi-frame) .zst file that notices a truncated last frame.

    zstandard's stream_reader ends silently at a cut; gzip raises EOFError. We want both to raise
    so the partial last line is not mistaken for a (malformed) record.
    """

    def __init__(self, path: str) -> None:
        if zstandard is None:
            raise RuntimeError("reading .zst needs the zstandard package")
        self.f = open(path, "rb")  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> _ZstdLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def __iter__(self) -> Iterator[bytes]:
        dctx = zstandard.ZstdDecompressor()
        dobj = dctx.decompressobj()
        buf = b""
        started = False
        while chunk := self.f.read(1 << 20):
            while chunk:
                started = True
                buf += dobj.decompress(chunk)
                chunk = b""
                if dobj.eof:   # frame finished: the rest of the chunk is the next frame
                    chunk = dobj.unused_data
                    dobj = dctx.decompressobj()
                    started = bool(chunk)
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if started and not dobj.eof:
            raise TruncatedZstd("zstd stream ended inside a frame")
        if buf:
            yield buf


def _truncation_reason(path: str) -> str:
    return "truncated_zstd" if path.endswith((".zst", ".zstd")) else "truncated_gzip"


def read_jsonl(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    rows = Rows(spec)
    lineno = 0
    try:
        stream = open_stream(path)
    except OSError as e:
        rows.reject("unreadable_file", path, path.encode(), detail=f"{type(e).__name__}: {e}")
        yield from rows.flush()
        return
    with stream:
        try:
            for raw in stream:
                lineno += 1
                if raw.strip():
                    record(rows, raw, f"{path}#{lineno}", spec)
                if rows.full():
                    yield from rows.flush()
        except (EOFError, gzip.BadGzipFile, zlib.error, *_ZSTD_ERRORS) as e:
            reason = _truncation_reason(path)
            if isinstance(e, gzip.BadGzipFile) and lineno == 0:
                reason = "bad_gzip"
            rows.reject(reason, f"{path}#{lineno + 1}", f"{path}#{lineno + 1}".encode(),
                        detail=f"after {lineno} lines: {type(e).__name__}: {e}")
    yield from rows.flush()


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
    except ValueError as e:
        rows.reject("malformed_json", url, raw, text=line if bad_at < 0 else line.rstrip("\n"),
                    detail=f"{e}"[:300])
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
