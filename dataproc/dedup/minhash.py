"""MinHash signatures, bit-identical to `datasketch.MinHash` (scheme "affine32"), from a compiled kernel.

datasketch hashes each shingle with a Python callable, pre-mixes it with the 32-bit MurmurHash3
finaliser and applies `a*h + b mod 2^32` permutations, one document at a time. We compute the same
values in `minhash_kernel` (numba): a batch of normalised documents is packed into one UTF-8 buffer
(`pack`) and each document is shingled, hashed and permuted in one pass, with no per-shingle Python
object, in both shingle hashes:

- `poly64` (default): a polynomial hash of the shingle's code points mod 2^64, then fmix64, low 32
  bits; `shingle_hash32` is the same function in Python, so `datasketch.MinHash(hashfunc=
  shingle_hash32)` fed with `shingles(...)` gives the same signature.
- `sha1`: datasketch's own default `sha1_hash32` (SHA-1 of the shingle's UTF-8 bytes, compiled).

Shingles: word n-grams for space-delimited scripts, character n-grams for CJK, Thai and other
unsegmented scripts (chosen from the script part of `lang`). Text is normalised first (lower case,
non-word characters to single spaces; character scripts drop the spaces). The kernel's memory per
document is a fixed block of hashes, so multi-MB documents need no windowing.

Exact Jaccard of candidate pairs (`jaccard_pairs`) compares sorted unique shingle-hash arrays with a
compiled merge count, each document's set computed once per batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

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




# --- the compiled path ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def word_table() -> np.ndarray:
    """uint8[0x110000]: 1 where Python's `re` counts the code point as a word character and not
    `_` (what `normalise` keeps), so the kernel normalises exactly like `normalise`. ~0.3 s, once."""
    every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    kept = re.sub(r"[\W_]", "\0", every)                  # one char for one: lengths stay equal
    return (np.frombuffer(kept.encode("utf-32-le", "surrogatepass"), np.uint32) != 0).astype(np.uint8)


@lru_cache(maxsize=1)
def sha1_block_fn() -> tuple[object, bool]:
    """(ctypes SHA1_Transform of libcrypto, True), or a never-called stand-in of the same ctypes type
    and False when libcrypto is missing (the kernel then runs its own SHA-1 rounds)."""
    import ctypes
    import ctypes.util

    try:
        fn, ok = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3").SHA1_Transform, True
    except (OSError, AttributeError):
        fn, ok = ctypes.CDLL(None).memset, False
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p], None
    return fn, ok


def _sha1_args(sha1: bool) -> tuple[object, np.ndarray]:
    fn, ok = sha1_block_fn()
    return fn, np.zeros(24 if (ok and sha1) else 0, np.uint32)   # 24 words >= sizeof(SHA_CTX)


def pack(texts: Sequence[str | None], langs: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower-cased documents as one UTF-8 buffer, their byte offsets and char-mode flags (the rest
    of the normalisation happens in the kernel)."""
    parts = [(t or "").lower().encode("utf-8", "surrogatepass") for t in texts]
    flags = np.fromiter((is_char_lang(lg) for lg in langs), np.uint8, len(langs))
    if len(flags) != len(parts):
        raise ValueError("texts and langs differ in length")
    offs = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offs[1:])
    return np.frombuffer(b"".join(parts), np.uint8), offs, flags


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd) for (num_perm, seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def unique_hashes(texts: Sequence[str | None], langs: Sequence[str | None],
                  cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique 32-bit shingle hashes of each document: (flat uint32, offsets int64)."""
    from dataproc.dedup.minhash_kernel import unique_hashes_batch

    buf, offs, flags = pack(texts, langs)
    return unique_hashes_batch(buf, offs, flags, cfg.word_ngram, cfg.char_ngram, cfg.hash == "sha1",
                               word_table(), *_sha1_args(cfg.hash == "sha1"))


def doc_shingle_hashes(text: str, lang: str | None, cfg: MinHashConfig) -> np.ndarray:
    """The sorted unique 32-bit shingle hashes of one document (uint32)."""
    return unique_hashes([text], [lang], cfg)[0]


class Signer:
    """Holds the permutations; `sign(texts, langs)` -> (signatures, has_shingles)."""

    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg
        self.a, self.b = permutations(cfg.num_perm, cfg.seed)

    def sign(self, texts: Sequence[str | None], langs: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        from dataproc.dedup.minhash_kernel import sign_batch

        buf, offs, flags = pack(texts, langs)
        return sign_batch(buf, offs, flags, self.cfg.word_ngram, self.cfg.char_ngram,
                          self.cfg.hash == "sha1", word_table(), self.a, self.b,
                          *_sha1_args(self.cfg.hash == "sha1"))


def jaccard_pairs(texts: Sequence[str | None], langs: Sequence[str | None], iu: np.ndarray,
                  iv: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """Exact Jaccard (over the 32-bit shingle hashes) of documents iu[k] and iv[k], k = 0..;
    each document's shingle set is computed once, however many pairs it is in."""
    from dataproc.dedup.minhash_kernel import jaccard_pairs as merge_count

    flat, offs = unique_hashes(texts, langs, cfg)
    return merge_count(flat, offs, np.asarray(iu, np.int64), np.asarray(iv, np.int64))


def exact_jaccard(text_a: str, lang_a: str | None, text_b: str, lang_b: str | None,
                  cfg: MinHashConfig) -> float:
    """Jaccard of two documents' shingle sets (over the 32-bit shingle hashes)."""
    return float(jaccard_pairs([text_a, text_b], [lang_a, lang_b], np.array([0]), np.array([1]), cfg)[0])
