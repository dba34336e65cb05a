"""Row building shared by the readers: one dict per document, flushed as conformed Arrow batches.

Readers never raise on bad input: they emit a rejected row (stage `read`, a `reason`, a `detail`)
and go on with the rest of the file. Text in a rejected row must still be valid UTF-8 (Arrow
strings are), so undecodable bytes are kept decoded-with-replacement and as a hex prefix in detail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.stage import conform
from q3.schemas import content_id

STAGE = "read"
BATCH_ROWS = 1024
BATCH_CHARS = 64 << 20      # flush early when documents are huge (a 50 MB page is one row)
PASSTHROUGH_PREFIXES = ("code_",)   # a reader-given lang kept by LID (e.g. code_Python)
_COLS = ("id", "text", "source", "url", "lang", "n_chars", "reason", "stage", "detail")


def source_name(spec: InputSpec) -> str:
    if spec.source:
        return spec.source
    p = Path(spec.path.split("*")[0].rstrip("/") or ".")
    return p.stem or p.name or "input"


def hex_prefix(raw: bytes, n: int = 32) -> str:
    return raw[:n].hex()


class Rows:
    """Accumulates rows and yields conformed batches of bounded size."""

    def __init__(self, spec: InputSpec) -> None:
        self.source = source_name(spec)
        self.cols: dict[str, list] = {c: [] for c in _COLS}
        self.chars = 0

    def keep(self, text: str, url: str, doc_id: str | None = None, lang: str | None = None,
             detail: str | None = None) -> None:
        self._add(doc_id or content_id(text), text, url, lang, None, detail)

    def reject(self, reason: str, url: str, raw: bytes | str, text: str | None = None,
               detail: str | None = None) -> None:
        self._add(content_id(raw), text, url, None, reason, detail)

    def _add(self, doc_id: str, text: str | None, url: str, lang: str | None, reason: str | None,
             detail: str | None) -> None:
        c = self.cols
        c["id"].append(doc_id)
        c["text"].append(text)
        c["source"].append(self.source)
        c["url"].append(url)
        c["lang"].append(lang)
        c["n_chars"].append(len(text) if text is not None else 0)
        c["reason"].append(reason)
        c["stage"].append(STAGE if reason else None)
        c["detail"].append(detail)
        self.chars += len(text) if text else 0

    def full(self) -> bool:
        return len(self.cols["id"]) >= BATCH_ROWS or self.chars >= BATCH_CHARS

    def flush(self) -> Iterator[pa.RecordBatch]:
        if self.cols["id"]:
            arrays = {k: pa.array(v, pa.int64() if k == "n_chars" else pa.string())
                      for k, v in self.cols.items()}
            yield conform(pa.RecordBatch.from_pydict(arrays))
            self.cols = {c: [] for c in _COLS}
            self.chars = 0


@contextmanager
def guarded(rows: Rows, url: str, raw: bytes | str, where: str) -> Iterator[None]:
    """Isolate one record: whatever it raises becomes its own `read_error` row (position and
    error in `detail`) and the reader goes on with the next record."""
    n = len(rows.cols["id"])
    try:
        yield
    except Exception as e:  # noqa: BLE001 - one bad record must not cost the rest of the file
        for col in rows.cols.values():   # drop a row half-added when it raised
            del col[n:]
        rows.reject("read_error", url, raw, detail=f"{where}: {type(e).__name__}: {e}"[:300])


def read_whole(path: str, rows: Rows) -> bytes | None:
    """The file's bytes, or None after recording an `unreadable_file` rejected row."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        rows.reject("unreadable_file", path, path.encode(), detail=f"{type(e).__name__}: {e}")
        return None


def decode(raw: bytes) -> tuple[str, bool]:
    """(text, ok): UTF-8 text, or the replacement-decoded text and ok=False."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def looks_binary(raw: bytes) -> bool:
    """NUL bytes or mostly non-text control bytes in the head: not a text document."""
    head = raw[:8192]
    if b"\x00" in head:
        return True
    if not head:
        return False
    ctrl = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return ctrl / len(head) > 0.1


def valid_str(s: str) -> bool:
    """False for strings Arrow cannot hold (lone surrogates, e.g. from JSON "\\ud800")."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def lang_for(hint: object) -> str | None:
    """A reader-given language is kept only for pass-through kinds (code); LID decides the rest."""
    return hint if isinstance(hint, str) and hint.startswith(PASSTHROUGH_PREFIXES) else None
