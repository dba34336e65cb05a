"""datatrove 0.10.1 rule variants for `QualityStage(datatrove_compat=True)`: like-for-like comparisons.

datatrove's filters differ from ours in small rule details (listed in docs/dataproc.md): they count
punctuation tokens as words, compare stop words case-sensitively, measure a top n-gram with the
spaces between its words, count repeated n-grams greedily (skipping a repeat's words), and end
FineWeb lines with its TERMINAL_PUNCTUATION set. This module holds those variants and the one
tokenisation both sides share in the comparison (`compat_tokens`, `compat_sentences`), so
bench/filters_vs_datatrove.py can give datatrove and us the same words.

The two character sets are datatrove's `PUNCTUATION` and `TERMINAL_PUNCTUATION`
(datatrove/utils/text.py, Apache-2.0), copied so the pipeline does not import datatrove.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pyarrow as pa

from dataproc.stages import quality_kernels as qk

DT_PUNCTUATION = (
    '\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18'
    '\x19\x1a\x1b\x1c\x1d\x1e\x1f!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~\x7f\x80\x81\x82\x83\x84\x85'
    '\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c'
    '\x9d\x9e\x9f\xab\xb4\xbb\u2013\u2014\u2019\u201c\u201d\u201e\u2026\u2236\u2501\u25ba\u3001'
    '\u3002\u3008\u3009\u300a\u300b\u300c\u300d\u3010\u3011\uff01\uff05\uff08\uff09\uff0c\uff0e'
    '\uff11\uff1a\uff1b\uff1f\uff5e'
)
DT_TERMINAL = (
    '!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965'
    '\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809'
    '\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e'
    '\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3'
    '\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52'
    '\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58'
    '\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf'
    '\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de'
    '\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2'
    '\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0'
    '\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642'
    '\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c'
    '\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5'
    '\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88'
)

_TOKENS = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]+")      # our word regex, symbol runs kept as tokens
_SENT_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
_P = re.escape(DT_PUNCTUATION)
# over tokens joined by "\n": a token made only of punctuation (datatrove's "symbol word")
SYMBOL_TOKEN = re.compile(rf"^[{_P}]+$", re.M)
# a token with at least one letter (datatrove: any(c.isalpha() for c in w))
ALPHA_TOKEN = re.compile(r"^.*[^\W\d_].*$", re.M)
FW_END = tuple(DT_TERMINAL)
C4_END = (".", "?", "!", '"', "'")


def compat_tokens(text: str) -> list[str]:
    """Words and symbol runs, in order: the word tokenisation both sides use in the comparison."""
    return _TOKENS.findall(text)


def compat_sentences(text: str) -> list[str]:
    """Sentences: split after . ! ? followed by whitespace (both sides' sentence tokenisation)."""
    return [s for s in (p.strip() for p in _SENT_BOUNDARY.split(text)) if s]


def compat_sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each of compat_sentences(text) (datatrove splits sentences by spans)."""
    spans, start = [], 0
    for m in _SENT_BOUNDARY.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def n_sentences(line: str) -> int:
    """len(compat_sentences(line)) for a stripped, non-empty line, without building the list."""
    return 1 + len(_SENT_BOUNDARY.findall(line))


# ---- the compiled pass (quality_kernels.compat_signals) ------------------------------------------
@functools.cache
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """(class flags per code point, single-char lowercase per code point), built once per process
    by running Python's own `re` classes and str methods over every code point, so the compiled
    tokeniser matches the regexes exactly (tests/dataproc/test_quality_compiled.py checks it)."""
    every = "".join(map(chr, range(0x110000)))
    flags = np.zeros(0x110000, np.uint8)
    for pattern, bit in ((r"\w+", qk.C_WORD), (r"\s+", qk.C_SPACE), (r"\d+", qk.C_DIGIT)):
        for m in re.finditer(pattern, every):
            flags[m.start():m.end()] |= bit
    for chars, bit in ((DT_PUNCTUATION, qk.C_PUNCT), (DT_TERMINAL, qk.C_TERM)):
        flags[[ord(c) for c in chars]] |= bit
    # no "\r\n" pair in `every`: each piece but the last ends with one boundary character
    flags[[ord(p[-1]) for p in every.splitlines(keepends=True)[:-1]]] |= qk.C_BREAK
    # str.lower() maps one char to one, except U+0130 (-> "i\u0307", expanded by the kernel); the
    # context rule for final sigma only picks between two non-ASCII letters (needles are ASCII)
    lowered = every.replace("\u0130", "I").lower()
    assert len(lowered) == len(every)
    lower = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int32)
    return flags, lower


def _packed(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    flat = np.array([ord(c) for w in words for c in w], np.int32)
    return flat, np.cumsum([0] + [len(w) for w in words]).astype(np.int64)


def utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 bytes, n + 1 byte offsets, valid mask) of an Arrow string array, without copying text."""
    if texts.type != pa.large_string():
        texts = texts.cast(pa.large_string())
    texts.validate(full=True)   # valid UTF-8 (the kernel decodes without checks), as str would need
    n = len(texts)
    _, off_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(off_buf, np.int64)[texts.offset: texts.offset + n + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None and offsets[-1] > 0 else np.zeros(1, np.uint8)
    valid = texts.is_valid().to_numpy(zero_copy_only=False) if texts.null_count else np.ones(n, np.bool_)
    return data, offsets, valid


def compat_token_spans(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compiled tokeniser over a string array: (tokens per doc, starts, ends) in code points."""
    data, offsets, _ = utf8_buffers(texts)
    return qk.token_spans(data, offsets, char_tables()[0])


def compat_signals(texts: pa.Array, stop_words: frozenset[str], policy: tuple[str, ...], c4: object,
                   short_line_length: int, top_k: list[int], dup_k: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(counts per doc as quality_kernels.S_* columns, valid mask): one compiled call per batch."""
    flags, lower = char_tables()
    data, offsets, valid = utf8_buffers(texts)
    needles, noff = _packed(["lorem ipsum", "javascript", *policy])
    stops, soff = _packed(sorted(stop_words))
    params = np.array([c4.max_word_len, c4.min_words_per_line, c4.lorem_ipsum, c4.drop_javascript_lines,
                       c4.curly_bracket, c4.drop_policy_lines, c4.remove_citations, short_line_length], np.int64)
    sig = qk.compat_signals(data, offsets, valid, flags, lower, needles, noff, stops, soff,
                            np.array(top_k, np.int64), np.array(dup_k, np.int64), params)
    return sig, valid
