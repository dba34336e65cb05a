"""Bounds that keep one request from stalling `q3 serve`: a deadline on receiving a request, a
cheap lower bound on a prompt's tokens (refuse a huge prompt without tokenizing it), and the most
tokens a `json_schema` reply can take (the constrained decoder has no max_tokens of its own).

Each check fails with `BadRequest` (a 4xx with a one-line reason) before any model work.
"""

from __future__ import annotations

import io
import json
import math
import socket
import time
from collections.abc import Callable


class BadRequest(ValueError):
    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


def short(v, limit: int = 40) -> str:
    """repr(v) cut to `limit` characters (error messages echo client values, which may be huge)."""
    r = repr(v) if not isinstance(v, int) or v.bit_length() < 128 else f"{'-' if v < 0 else ''}<{len(str(abs(v)))}-digit int>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


class DeadlineReader(io.RawIOBase):
    """The socket as a raw stream for the handler's buffered `rfile`: each recv waits at most
    `idle_s`, and once a request's first byte has arrived the whole request (request line,
    headers, body) must arrive within `limit_s`. The socket's own timeout only bounds one recv, so a
    client dripping a byte every few seconds would otherwise hold its thread forever.
    `start()` re-arms it for the next request of a kept-alive connection."""

    def __init__(self, sock: socket.socket, idle_s: float, limit_s: float):
        self.sock, self.idle_s, self.limit_s = sock, idle_s, limit_s
        self.deadline: float | None = None

    def start(self) -> None:
        self.deadline = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        timeout = self.idle_s
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request not received within {self.limit_s:g}s")
            timeout = min(timeout, left)
        self.sock.settimeout(timeout)
        try:
            n = self.sock.recv_into(b)
        finally:
            self.sock.settimeout(self.idle_s)       # writes keep the idle timeout
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self.limit_s
        return n


def max_token_bytes(vocab: dict[str, int], added: set[str]) -> int:
    """The most bytes one token stands for: byte-level BPE writes each byte of a token as one
    character of its string; added tokens stand for their UTF-8 text."""
    return max((len(s.encode()) if s in added else len(s) for s in vocab), default=1)


def min_prompt_tokens(messages: list[dict], bytes_per_token: int) -> int:
    """A lower bound on the prompt's tokens from its text alone: no token covers more bytes than
    `bytes_per_token`."""
    return -(-sum(len(str(m.get("content") or "").encode()) for m in messages) // max(1, bytes_per_token))


def _count(s: dict, key: str, default: int, hi: int = 2**31) -> int:
    v = s.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise BadRequest(f"json_schema {key} must be an integer in [0, {hi}], got {short(v)}")
    return v


def _bound(v, key: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) >= 10**18:
        raise BadRequest(f"json_schema {key} must be a number below 1e18, got {short(v)}")
    return int(v)


def schema_max_tokens(s, encode: Callable[[str], list[int]]) -> int:
    """The most tokens `train.generate.JsonDecoder` can produce for schema `s` (closing delimiters
    included), checking on the way what the decoder would otherwise fail on mid-generation."""
    if not isinstance(s, dict):
        raise BadRequest(f"json_schema: a schema must be an object, got {short(s)}")
    if "enum" in s or "const" in s:
        values = s["enum"] if "enum" in s else [s["const"]]
        if not isinstance(values, list) or not values:
            raise BadRequest("json_schema enum must be a non-empty list")
        return max(len(encode(json.dumps(v, ensure_ascii=False))) for v in values) + 1
    typ = s.get("type", "object" if "properties" in s else None)
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object":
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise BadRequest("json_schema properties must be an object")
        return 2 + sum(len(encode(json.dumps(k, ensure_ascii=False) + ": ")) + schema_max_tokens(v, encode) + 1
                       for k, v in props.items())
    if typ in ("integer", "number"):
        lo, hi = _bound(s.get("minimum"), "minimum"), _bound(s.get("maximum"), "maximum")
        digits = 6 if lo is None or hi is None else max(len(str(abs(lo))), len(str(abs(hi))))
        return digits + 2
    if typ in ("boolean", "null"):
        return 3
    if typ == "string":
        _count(s, "minLength", 1)                  # checked: the decoder compares with it
        return _count(s, "maxLength", 16) + 2
    if typ == "array":
        lo, hi = _count(s, "minItems", 1), _count(s, "maxItems", 4)
        if hi and lo > hi:
            raise BadRequest(f"json_schema minItems {lo} is above maxItems {hi}")
        item = schema_max_tokens(s.get("items", {"type": "string"}), encode) if hi else 0
        return 2 + hi * (item + 2)
    raise BadRequest(f"json_schema: unsupported schema type {short(typ)} (supported: object, enum, const, "
                     "integer, number, boolean, null, string, array)")


__all__ = ["BadRequest", "DeadlineReader", "max_token_bytes", "min_prompt_tokens", "schema_max_tokens", "short"]
