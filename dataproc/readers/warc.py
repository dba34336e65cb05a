"""WARC and WET files (warcio): one document per response/resource/conversion record.

WET `conversion` records are plain text already; WARC `response` records are HTML (or text) and
go through resiliparse's main-content extractor, as datatrove/FineWeb-style pipelines do (menus,
footers, scripts, styles and forms dropped; block tags become line breaks).
Control records (warcinfo, request, metadata) are not documents and are skipped.

Faults are isolated per record: records are framed by their own headers (`split_records`), so a
record warcio cannot parse is one `read_error` row, bytes between records that are not a record
are one `bad_warc_record` row, and reading goes on after both. A file cut inside a record (or a
.warc.gz cut inside a gzip member) keeps every complete record before the cut, then one
`truncated_warc` row; damaged gzip data ends the file with one `bad_gzip` row.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pyarrow as pa

from dataproc.config import InputSpec
from dataproc.readers.common import Rows, guarded, hex_prefix
from dataproc.readers.streams import Cut, StreamEnd, chunks

_DOC_TYPES = {"response", "resource", "conversion"}
_BLANK_LINE = re.compile(rb"\n\r?\n")   # end of a header block (CRLF per the spec; bare LF tolerated)
_MAX_HEADER = 1 << 20                      # a "header" longer than this is junk, not a record
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
    rows = Rows(spec)
    n = 0
    try:
        for kind, offset, blob in split_records(chunks(path)):
            n += 1
            if kind is not None and kind not in _DOC_TYPES:
                continue     # control records: not documents (warcio not even asked to parse them)
            if kind is None:
                rows.reject("bad_warc_record", f"{path}#{n}", blob, detail=f"record {n} at byte {offset}: "
                            f"{len(blob)} bytes that are not a WARC record, head {hex_prefix(blob)}")
            else:
                with guarded(rows, f"{path}#{n}", blob, f"record {n} at byte {offset}"):
                    _parse_record(rows, blob, f"{path}#{n}")
            if rows.full():
                yield from rows.flush()
    except StreamEnd as e:
        reason = "truncated_warc" if isinstance(e, Cut) else "bad_gzip"
        rows.reject(reason, f"{path}#{n + 1}", f"{path}#{n + 1}".encode(),
                    detail=f"record {n + 1}, after {n} records: {e}"[:300])
    except OSError as e:
        # the file itself when it cannot be opened; else where reading stopped
        rows.reject("unreadable_file", f"{path}#{n + 1}" if n else path, path.encode(),
                    detail=f"after {n} records: {type(e).__name__}: {e}"[:300])
    yield from rows.flush()


def split_records(stream: Iterator[bytes]) -> Iterator[tuple[str | None, int, bytes]]:
    """WARC framing by its headers: yields (WARC-Type, offset, bytes) for each complete record
    (header block + Content-Length bytes) and (None, offset, bytes) for bytes between records
    that are not one (skipped to the next `WARC/1.` line). A partial record at the end raises Cut;
    a Cut/Corrupt of the underlying stream is raised after every complete record before it.

    warcio alone cannot do this: at a cut it ends quietly, drops the record or raises from inside
    its header parser, and after junk it stops reading the file."""
    buf = bytearray()
    base = pos = 0           # buf[0] is byte `base` of the (decompressed) stream
    it = iter(stream)
    ended: StreamEnd | None = None
    eof = False

    def more() -> bool:
        nonlocal eof, ended
        if eof:
            return False
        try:
            buf.extend(next(it))
            return True
        except StopIteration:
            pass
        except StreamEnd as e:
            ended = e
        eof = True
        return False

    while True:
        while True:          # records are separated by CRLF CRLF; tolerate any run of newlines
            while pos < len(buf) and buf[pos] in b"\r\n":
                pos += 1
            if pos < len(buf) or not more():
                break
        if pos >= len(buf):
            break
        while len(buf) - pos < 5 and more():
            pass
        head = bytes(buf[pos:pos + 5])
        blank = None
        if head == b"WARC/":     # the header block ends at the first empty line
            scan = pos
            while (blank := _BLANK_LINE.search(buf, scan)) is None and len(buf) - pos < _MAX_HEADER:
                scan = max(pos, len(buf) - 2)     # search only what is new (files of junk stay linear)
                if not more():
                    break
        if blank is None and b"WARC/".startswith(head) and eof and len(buf) - pos < _MAX_HEADER:
            raise ended or Cut(f"stream ends inside the header of the WARC record at byte {base + pos}")
        length, rec_type = _header(buf[pos:blank.start()]) if blank else (None, "")
        if length is None:   # not a record: up to the next one
            scan = pos + 1
            while (nxt := buf.find(b"WARC/1.", scan)) < 0:
                scan = max(pos + 1, len(buf) - 6)
                if not more():
                    break
            stop = nxt if nxt >= 0 else len(buf)
            yield None, base + pos, bytes(buf[pos:stop])
            pos = stop
            continue
        end = blank.end() + length
        while len(buf) < end and more():
            pass
        if len(buf) < end:
            raise ended or Cut(f"WARC record at byte {base + pos}: {end - len(buf)} of {length} content bytes missing")
        yield rec_type, base + pos, bytes(buf[pos:end])
        pos = end
        if pos > 1 << 22:    # drop what is done (records of a big file stream through)
            del buf[:pos]
            base, pos = base + pos, 0
    if ended is not None:
        raise ended


def _header(header: bytes | bytearray) -> tuple[int | None, str]:
    """(Content-Length or None when missing/invalid, WARC-Type lower-cased) of a header block."""
    length: int | None = None
    rec_type = ""
    for line in bytes(header).split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None, rec_type
            if length < 0:
                return None, rec_type
        elif name == b"warc-type":
            rec_type = value.strip().decode("latin-1").lower()
    return length, rec_type


def _parse_record(rows: Rows, blob: bytes, fallback_url: str) -> None:
    """One complete record, parsed by warcio (HTTP headers, chunked / gzip content decoding)."""
    from warcio.archiveiterator import ArchiveIterator

    for rec in ArchiveIterator(io.BytesIO(blob)):
        if rec.rec_type not in _DOC_TYPES:
            return
        url = rec.rec_headers.get_header("WARC-Target-URI") or fallback_url
        raw = rec.content_stream().read()
        ctype = (rec.http_headers.get_header("Content-Type") if rec.http_headers
                 else rec.rec_headers.get_header("Content-Type")) or ""
        _record(rows, raw, url, rec.rec_type, ctype)
        return
    raise ValueError("warcio found no record in it")


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
