"""WARC and WET files (warcio): one document per response/resource/conversion record.

WET `conversion` records are plain text already; WARC `response` records are HTML (or text) and
go through resiliparse's main-content extractor, as datatrove/FineWeb-style pipelines do (menus,
footers, scripts, styles and forms dropped; block tags become line breaks).
Control records (warcinfo, request, metadata) are not documents and are skipped.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.readers.common import Rows, hex_prefix

_DOC_TYPES = {"response", "resource", "conversion"}
_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.I)


def html_to_text(html: str) -> str:
    """Main content of a page as text (resiliparse, the options datatrove uses); a page whose main
    content the heuristics find empty (a short page without an article) keeps all of its text."""
    from resiliparse.extract.html2text import extract_plain_text

    opts = dict(preserve_formatting=True, alt_texts=False, links=False, form_fields=False, noscript=False)
    text = extract_plain_text(html, main_content=True, **opts)
    if not text.strip():
        text = extract_plain_text(html, main_content=False, **opts)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _charset(content_type: str | None) -> str:
    m = _CHARSET.search(content_type or "")
    return m.group(1) if m else "utf-8"


def read_warc(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    rows = Rows(spec)
    n = 0
    try:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                if rec.rec_type not in _DOC_TYPES:
                    continue
                n += 1
                url = rec.rec_headers.get_header("WARC-Target-URI") or f"{path}#{n}"
                raw = rec.content_stream().read()
                left = getattr(rec.raw_stream, "limit", 0)
                if rec.length is None or left:
                    # warcio ends quietly at a cut: a record shorter than its Content-Length.
                    rows.reject("truncated_warc", url, raw or url.encode(),
                                detail=f"record {n}: {left} of {rec.length} bytes missing")
                    break
                ctype = (rec.http_headers.get_header("Content-Type") if rec.http_headers
                         else rec.rec_headers.get_header("Content-Type")) or ""
                _record(rows, raw, url, rec.rec_type, ctype)
                if rows.full():
                    yield from rows.flush()
    except (ArchiveLoadFailed, EOFError, zlib.error, OSError, ValueError) as e:
        rows.reject("truncated_warc" if n else "unreadable_warc", f"{path}#{n + 1}",
                    f"{path}#{n + 1}".encode(), detail=f"after {n} records: {type(e).__name__}: {e}"[:300])
    yield from rows.flush()


def _record(rows: Rows, raw: bytes, url: str, rec_type: str, ctype: str) -> None:
    ctype_l = ctype.lower()
    if rec_type != "conversion" and ctype_l and not ctype_l.startswith(("text/", "application/xhtml")):
        rows.reject("non_text_record", url, raw, detail=ctype[:100])
        return
    try:
        text = raw.decode(_charset(ctype))
    except (UnicodeDecodeError, LookupError) as e:
        if isinstance(e, LookupError):
            text = raw.decode("utf-8", errors="replace")
        else:
            rows.reject("invalid_utf8", url, raw, text=raw.decode("utf-8", errors="replace"),
                        detail=f"byte {e.start}: {hex_prefix(raw[e.start:])}")
            return
    if rec_type != "conversion" and ("html" in ctype_l or text.lstrip()[:1] == "<"):
        text = html_to_text(text)
    rows.keep(text, url)
