"""Vectorised MinHash signatures, bit-identical to `datasketch.MinHash` (scheme "affine32").

datasketch hashes each shingle with a Python callable, pre-mixes it with the 32-bit MurmurHash3
finaliser and applies `a*h + b mod 2^32` permutations, one document at a time. We do the same
arithmetic for a whole Arrow batch at once in numpy:

- shingles are hashed without a Python loop: `poly64` is a polynomial hash of the shingle's code
  points mod 2^64 (then fmix64, low 32 bits), computed for all words / n-grams of a document with
  array ops; `shingle_hash32` is the same function on one shingle, so
  `datasketch.MinHash(hashfunc=shingle_hash32)` fed with `shingles(...)` gives the same signature.
  `hash="sha1"` uses datasketch's own default `sha1_hash32` instead (exact, but a Python loop).
- permutations and the per-document min are computed over stacked shingle hashes of many
  documents with `np.minimum.reduceat`, in chunks, so memory stays bounded.

Shingles: word n-grams for space-delimited scripts, character n-grams for CJK, Thai and other
unsegmented scripts (chosen from the script part of `lang`). Text is normalised first (lower case,
non-word characters to single spaces). Long documents are shingled in windows of `window_chars`
(overlapping by n-1 units), so a multi-MB document costs bounded memory and gives the same set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from dataproc.dedup.config import MinHashConfig

M64 = (1 << 64) - 1
MAX32 = np.uint32(0xFFFFFFFF)
_P = np.uint64(0x100000001B3)            # FNV-64 prime: odd, so the polynomial hash mixes well
_P_INT = int(_P)
_SPACE = np.uint64(32)

# Scripts written without spaces between words: shingle by characters.
CHAR_SCRIPTS = frozenset({"Hans", "Hant", "Hani", "Jpan", "Hira", "Kana", "Thai", "Laoo", "Khmr",
                          "Mymr", "Tibt", "Bopo", "Yiii"})

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, every run of non-word characters (punctuation, whitespace) -> one space."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def is_char_lang(lang: str | None) -> bool:
    """True when `lang` (e.g. cmn_Hans, jpn_Jpan, tha_Thai) is written without word spaces."""
    if not lang:
        return False
    return lang.rsplit("_", 1)[-1] in CHAR_SCRIPTS


# --- the shingle hash -------------------------------------------------------------------------

def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """datasketch's affine32 pre-mix (MurmurHash3 fmix32)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def shingle_hash32(shingle: bytes | str) -> int:
    """Reference (scalar) poly64 hash of one shingle; a `hashfunc` for datasketch.MinHash."""
    s = shingle.decode("utf-8") if isinstance(shingle, bytes) else shingle
    h = 0
    for ch in s:
        h = (h * _P_INT + ord(ch)) & M64
    return _fmix64_int(h) & 0xFFFFFFFF


_POW = np.ones(1, dtype=np.uint64)


def _powers(n: int) -> np.ndarray:
    """P^k mod 2^64 for k < n (grown on demand, shared)."""
    global _POW
    if len(_POW) < n:
        size = max(n, 2 * len(_POW), 4096)
        pw = np.empty(size, dtype=np.uint64)
        pw[0] = 1
        with np.errstate(over="ignore"):
            for i in range(1, size):   # only on growth; a few thousand steps at most once
                pw[i] = pw[i - 1] * _P
        _POW = pw
    return _POW


def _codepoints(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)


def _word_ngram_hashes(seg: str, n: int) -> np.ndarray:
    """poly64 hashes of all word n-grams of a normalised segment (single spaces, no edges)."""
    cp = _codepoints(seg)
    if cp.size == 0:
        return np.empty(0, np.uint64)
    sp = np.flatnonzero(cp == _SPACE)
    starts = np.concatenate(([0], sp + 1))
    ends = np.concatenate((sp, [cp.size]))
    lens = ends - starts
    pw = _powers(int(lens.max()) + 2)
    nonsp = np.ones(cp.size, dtype=bool)
    nonsp[sp] = False
    pos = np.flatnonzero(nonsp)
    wid = np.cumsum(~nonsp)[pos]                      # word index of each non-space position
    exp = ends[wid] - 1 - pos                         # Horner: char i weighs P^(chars after it)
    with np.errstate(over="ignore"):
        terms = cp[pos] * pw[exp]
        hw = np.add.reduceat(terms, starts - np.arange(len(starts)))
        m = len(hw)
        n = min(n, m)                                 # fewer words than n: one shingle of all
        k = m - n + 1
        h = hw[:k].copy()
        for j in range(1, n):
            h = (h * _P + _SPACE) * pw[lens[j:j + k]] + hw[j:j + k]
    return h


def _char_ngram_hashes(seg: str, n: int) -> np.ndarray:
    cp = _codepoints(seg)
    if cp.size == 0:
        return np.empty(0, np.uint64)
    n = min(n, cp.size)
    k = cp.size - n + 1
    h = cp[:k].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            h = h * _P + cp[j:j + k]
    return h


def _windows(norm: str, char_mode: bool, n: int, window: int) -> list[str]:
    """Split a long normalised text into windows overlapping by n-1 units (same shingle set)."""
    if char_mode:
        norm = norm.replace(" ", "")
    if len(norm) <= window:
        return [norm]
    out, start = [], 0
    while True:
        end = start + window
        if end >= len(norm):
            out.append(norm[start:])
            return out
        if char_mode:
            out.append(norm[start:end])
            start = end - (n - 1)
            continue
        cut = norm.rfind(" ", start + 1, end)
        if cut <= start:                              # one gigantic "word": cut it anyway
            cut = end
        out.append(norm[start:cut])
        nxt = cut
        for _ in range(n - 1):                        # back up n-1 words for the overlap
            p = norm.rfind(" ", start + 1, nxt)
            if p <= start:
                break
            nxt = p
        start = nxt + 1 if nxt < cut else cut + 1


def doc_shingle_hashes(text: str, lang: str | None, cfg: MinHashConfig) -> np.ndarray:
    """The distinct 32-bit shingle hashes of one document (uint32)."""
    char_mode = is_char_lang(lang)
    n = cfg.char_ngram if char_mode else cfg.word_ngram
    norm = normalise(text or "")
    if not norm:
        return np.empty(0, np.uint32)
    parts = []
    for seg in _windows(norm, char_mode, n, cfg.window_chars):
        if cfg.hash == "sha1":
            parts.append(np.array([_sha1_32(s) for s in _segment_shingles(seg, char_mode, n)],
                                  dtype=np.uint32))
            continue
        h = _char_ngram_hashes(seg, n) if char_mode else _word_ngram_hashes(seg, n)
        parts.append((_fmix64(h) & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.uint32)


def _sha1_32(s: str) -> int:
    import hashlib
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little")


def _segment_shingles(seg: str, char_mode: bool, n: int) -> list[str]:
    if char_mode:
        if not seg:
            return []
        n = min(n, len(seg))
        return [seg[i:i + n] for i in range(len(seg) - n + 1)]
    words = seg.split(" ") if seg else []
    if not words:
        return []
    n = min(n, len(words))
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def shingles(text: str, lang: str | None, cfg: MinHashConfig) -> set[str]:
    """The shingle set as strings (reference path: tests, brute-force Jaccard, datasketch)."""
    char_mode = is_char_lang(lang)
    n = cfg.char_ngram if char_mode else cfg.word_ngram
    norm = normalise(text or "")
    if char_mode:
        norm = norm.replace(" ", "")
    return set(_segment_shingles(norm, char_mode, n)) if norm else set()


# --- permutations and signatures --------------------------------------------------------------

def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd) for (num_perm, seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def signatures_from_hashes(hashes: Sequence[np.ndarray], a: np.ndarray, b: np.ndarray,
                           chunk: int = 16384) -> np.ndarray:
    """(n_docs, num_perm) uint32 MinHash signatures; an empty document is all 0xFFFFFFFF."""
    n, p = len(hashes), len(a)
    out = np.full((n, p), MAX32, dtype=np.uint32)
    docs: list[int] = []
    total = 0

    def flush() -> None:
        nonlocal docs, total
        if not docs:
            return
        h = _fmix32(np.concatenate([hashes[i] for i in docs]))
        starts = np.cumsum([0] + [len(hashes[i]) for i in docs[:-1]])
        phv = h[:, None] * a[None, :] + b[None, :]
        out[docs] = np.minimum.reduceat(phv, starts, axis=0)
        docs, total = [], 0

    for i, h in enumerate(hashes):
        if len(h) == 0:
            continue
        if len(h) > chunk:                              # a long document: stream its own chunks
            flush()
            acc = out[i]
            for s in range(0, len(h), chunk):
                part = _fmix32(h[s:s + chunk])
                acc = np.minimum(acc, (part[:, None] * a[None, :] + b[None, :]).min(axis=0))
            out[i] = acc
            continue
        if total + len(h) > chunk:
            flush()
        docs.append(i)
        total += len(h)
    flush()
    return out


class Signer:
    """Holds the permutations; `sign(texts, langs)` -> (signatures, has_shingles)."""

    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg
        self.a, self.b = permutations(cfg.num_perm, cfg.seed)

    def sign(self, texts: Sequence[str | None], langs: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        hashes = [doc_shingle_hashes(t or "", lg, self.cfg) for t, lg in zip(texts, langs, strict=True)]
        has = np.array([len(h) > 0 for h in hashes], dtype=bool)
        return signatures_from_hashes(hashes, self.a, self.b), has
