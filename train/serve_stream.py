"""Token-by-token text for `q3 serve`: UTF-8-safe incremental decoding, the reasoning/content split
as a stream, and OpenAI logprob entries. Pure functions of token ids, shared by the streamed and the
non-streamed reply so that both always carry the same text.

- Qwen3 is a byte-level BPE: one token may hold part of a multi-byte character. `TokenText` turns
  token ids into bytes and feeds an incremental UTF-8 decoder, which holds incomplete bytes back
  until the character is complete (invalid bytes become U+FFFD, as `tokenizer.decode` does).
- `ReasoningSplit` routes text inside `<think>...</think>` to `reasoning_content` and the rest to
  `content`, like vLLM's Qwen3 reasoning parser, with `train.generate.split_thinking`'s trimming
  (both parts stripped, the "." that closes the thinking-budget sentence dropped): on well-formed
  output (an optional leading think block, then the answer) the concatenated deltas equal
  `split_thinking(text)`. A prompt that already ends in `<think>` starts inside the think block.
"""

from __future__ import annotations

import codecs
import math
from functools import cached_property

from q3.tokenizer import END_THINK, THINK
from train.generate import Tokenizer

LOGPROB_FLOOR = -9999.0     # what OpenAI/vLLM report for -inf (JSON has no infinities)
_OPEN, _CLOSE = THINK, END_THINK


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character that stands for each byte, inverted."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TokenBytes:
    """The exact bytes of each token id (added/special tokens: their UTF-8 text)."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self._cache: dict[int, bytes] = {}

    @cached_property
    def _special(self) -> dict[int, bytes]:
        return {i: t.content.encode() for i, t in self.tok.tk.get_added_tokens_decoder().items()}

    @cached_property
    def _bytes_of_char(self) -> dict[str, int]:
        return _byte_decoder()

    def __call__(self, token_id: int) -> bytes:
        b = self._cache.get(token_id)
        if b is None:
            if token_id in self._special:
                b = self._special[token_id]
            else:
                s = self.tok.tk.id_to_token(token_id) or ""
                m = self._bytes_of_char
                b = b"".join(bytes([m[c]]) if c in m else c.encode() for c in s)
            self._cache[token_id] = b
        return b

    def text(self, token_id: int) -> str:
        """The token alone as text; bytes of an incomplete character as \\xNN escapes (OpenAI style)."""
        return self(token_id).decode("utf-8", errors="backslashreplace")


class TokenText:
    """Incremental decoding: push(token_id) -> the newly complete text."""

    def __init__(self, token_bytes: TokenBytes):
        self.bytes_of = token_bytes
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self.dec.decode(self.bytes_of(token_id))

    def finish(self) -> str:
        return self.dec.decode(b"", final=True)


class _Stripped:
    """A stream with str.strip() applied: leading whitespace dropped, trailing whitespace held back
    until more text follows (and dropped at the end)."""

    def __init__(self):
        self.started, self.held = False, ""

    def feed(self, s: str) -> str:
        if not self.started:
            s = s.lstrip()
            if not s:
                return ""
            self.started = True
        s = self.held + s
        body = s.rstrip()
        self.held = s[len(body):]
        return body


class ReasoningSplit:
    """feed(text) -> [(field, delta)], field "reasoning_content" or "content"; finish() flushes."""

    def __init__(self, in_think: bool = False):
        self.state = "reasoning" if in_think else "start"
        self.buf = ""
        self.reasoning: str | None = "" if in_think else None
        self.content = ""
        self._r, self._c = _Stripped(), _Stripped()

    def _emit(self, out: list[tuple[str, str]], field: str, s: str) -> None:
        s = (self._r if field == "reasoning_content" else self._c).feed(s)
        if s:
            if field == "reasoning_content":
                self.reasoning = (self.reasoning or "") + s
            else:
                self.content += s
            out.append((field, s))

    def feed(self, text: str, final: bool = False) -> list[tuple[str, str]]:
        self.buf += text
        out: list[tuple[str, str]] = []
        while True:
            if self.state == "start":
                s = self.buf.lstrip()
                if s.startswith(_OPEN):
                    self.state, self.buf, self.reasoning = "reasoning", s[len(_OPEN):], ""
                    continue
                if _OPEN.startswith(s) and not final:
                    return out                    # may still become "<think>": wait
                self.state = "content"
            elif self.state == "reasoning":
                k = self.buf.find(_CLOSE)
                if k >= 0:
                    self._emit(out, "reasoning_content", self.buf[:k])
                    self.state, self.buf = "after_think", self.buf[k + len(_CLOSE):]
                    continue
                keep = 0 if final else next((n for n in range(len(_CLOSE) - 1, 0, -1)
                                             if self.buf.endswith(_CLOSE[:n])), 0)
                self._emit(out, "reasoning_content", self.buf[:len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
                return out
            elif self.state == "after_think":
                if not self.buf:
                    return out
                if self.buf[0] == ".":            # the budget sentence closes with "</think>."
                    self.buf = self.buf[1:]
                self.state = "content"
            else:
                self._emit(out, "content", self.buf)
                self.buf = ""
                return out

    def finish(self) -> list[tuple[str, str]]:
        return self.feed("", final=True)


def logprob_entry(tb: TokenBytes, token_id: int, logprob: float,
                  top: list[tuple[int, float]] | None) -> dict:
    """One element of choices[i].logprobs.content in the OpenAI format."""
    def one(t: int, lp: float) -> dict:
        lp = float(lp)
        return {"token": tb.text(t), "logprob": max(lp, LOGPROB_FLOOR) if not math.isnan(lp) else LOGPROB_FLOOR,
                "bytes": list(tb(t))}
    return {**one(token_id, logprob), "top_logprobs": [one(t, lp) for t, lp in (top or [])]}
