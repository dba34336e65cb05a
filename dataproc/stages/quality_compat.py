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

import re

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
