"""Byte streams of (possibly compressed) files that say how they ended.

`chunks(path)` yields the decompressed bytes of a plain, .gz or .zst/.zstd file and then raises
`Cut` if the stream ended inside a gzip member / zstd frame, or `Corrupt` if the compressed data
is damaged. Everything that decompresses is yielded first, so a reader keeps every record before
the damage. (gzip.open drops what it decompressed in the read call that hit the cut, and zstandard's
stream reader ends a cut frame silently: neither tells a reader exactly what it holds.)

`lines(chunks)` splits such a stream into lines (each ending in b"\\n"); an unterminated last
line is yielded as it is at a clean end, or carried on the `Cut`/`Corrupt` raised after a cut.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

try:
    import zstandard
except ImportError:   # pragma: no cover - zstandard is a dependency
    zstandard = None

READ_SIZE = 1 << 20
MAX_OUT = 1 << 24        # bound one decompress call's output (gzip bombs, 50 MB lines)


class StreamEnd(Exception):
    """The stream ended badly after `done` decompressed bytes; `tail` = an unfinished last line."""

    kind = "stream"

    def __init__(self, msg: str, done: int = 0) -> None:
        super().__init__(msg)
        self.done = done
        self.tail = b""


class Cut(StreamEnd):
    kind = "cut"


class Corrupt(StreamEnd):
    kind = "corrupt"


def compression(path: str) -> str | None:
    if path.endswith(".gz"):
        return "gzip"
    if path.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def chunks(path: str) -> Iterator[bytes]:
    """Decompressed bytes of `path`; raises Cut / Corrupt at the end of a damaged stream and
    OSError when the file cannot be opened."""
    comp = compression(path)
    with open(path, "rb") as f:
        raw = iter(lambda: f.read(READ_SIZE), b"")
        if comp == "gzip":
            yield from _gunzip(raw)
        elif comp == "zstd":
            yield from _unzstd(raw)
        else:
            yield from raw


def _gunzip(raw: Iterator[bytes]) -> Iterator[bytes]:
    """Multi-member gzip (zero padding between/after members tolerated, as gzip.open does)."""
    d = zlib.decompressobj(wbits=31)
    started = False          # inside a member: input seen, end not reached
    done = 0
    for data in raw:
        while data:
            if not started:
                data = data.lstrip(b"\x00")
                if not data:
                    break
            started = True
            try:
                out = d.decompress(data, MAX_OUT)
            except zlib.error as e:
                raise Corrupt(f"gzip data damaged after {done} bytes: {e}", done) from None
            if out:
                done += len(out)
                yield out
            if d.eof:
                data, d, started = d.unused_data, zlib.decompressobj(wbits=31), False
            else:
                data = d.unconsumed_tail
    if started:
        out = d.flush()
        if out:
            done += len(out)
            yield out
        raise Cut(f"gzip stream cut inside a member after {done} bytes", done)


def _unzstd(raw: Iterator[bytes]) -> Iterator[bytes]:
    """Multi-frame zstd; a frame cut short raises Cut after what its complete blocks hold."""
    if zstandard is None:
        raise Corrupt("reading .zst needs the zstandard package")
    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    started = False
    done = 0
    for data in raw:
        while data:
            started = True
            try:
                out = d.decompress(data)
            except zstandard.ZstdError as e:
                raise Corrupt(f"zstd data damaged after {done} bytes: {e}", done) from None
            if out:
                done += len(out)
                yield out
            data = b""
            if d.eof:   # frame finished: the rest of the chunk is the next frame
                data, d, started = d.unused_data, dctx.decompressobj(), False
    if started:
        raise Cut(f"zstd stream cut inside a frame after {done} bytes", done)


def lines(stream: Iterator[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream. A StreamEnd from `stream` is re-raised with the unfinished line."""
    pending: list[bytes] = []
    try:
        for chunk in stream:
            parts = chunk.split(b"\n")
            if len(parts) == 1:
                pending.append(chunk)
                continue
            pending.append(parts[0])
            yield b"".join(pending) + b"\n"
            for p in parts[1:-1]:
                yield p + b"\n"
            pending = [parts[-1]] if parts[-1] else []
    except StreamEnd as e:
        e.tail = b"".join(pending)
        raise
    if pending:
        yield b"".join(pending)
