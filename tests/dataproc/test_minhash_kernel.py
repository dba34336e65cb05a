"""The compiled MinHash kernel: SHA-1 equal to hashlib, signatures equal to datasketch in both hash
modes (real sample documents, CJK and edge cases), exact Jaccard equal to set arithmetic.

The first run on a fresh checkout compiles the kernel (~30 s of CPU; 1-1.5 min wall on a busy 2-core VM); numba's cache
(dataproc/dedup/__pycache__) makes later runs load it in about a second.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from dataproc.dedup.components import exact_edge_filter
from dataproc.dedup.config import MinHashConfig
from dataproc.dedup.minhash import (
    Signer,
    jaccard_pairs,
    pack,
    permutations,
    sha1_block_fn,
    shingle_hash32,
    shingles,
    unique_hashes,
    word_table,
)
from dataproc.dedup.minhash_kernel import LANES, sha1_32, sha1_lanes, sign_batch

EDGE = [
    ("", "eng_Latn"), ("  ...  !!! ", "eng_Latn"), ("one", "eng_Latn"), ("two words", "eng_Latn"),
    ("Straße İstanbul ΣΊΣΥΦΟΣ snake_case x_y__z", "deu_Latn"), ("中文", "cmn_Hans"),
    ("日本語のテキスト、句読点。", "jpn_Jpan"), ("ภาษาไทย ไม่มีช่องว่าง", "tha_Thai"),
    ("emoji 🙂 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral letters", None), ("tabs\tand\nnew\r\nlines  a b c d e f", "eng_Latn"),
]


@pytest.fixture(scope="module")
def docs(sample_docs) -> list[tuple[str, str | None]]:
    """Real sample documents of every language (CJK included), one long one, and edge cases."""
    by_lang: dict[str, list[str]] = {}
    for d in sample_docs:
        if d["lang_hint"] != "code_Python":
            by_lang.setdefault(d["lang_hint"], []).append(d["text"])
    real = [(texts[0], lang) for lang, texts in sorted(by_lang.items())]
    real.append(("\n".join(by_lang["eng_Latn"])[:150_000], "eng_Latn"))       # a long document
    return real + EDGE


def _ds(text: str, lang: str | None, cfg: MinHashConfig, hashfunc=None) -> np.ndarray:
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, **({"hashfunc": hashfunc} if hashfunc else {}))
    m.update_batch([s.encode("utf-8") for s in shingles(text, lang, cfg)])
    return m.hashvalues


def test_sha1_equals_hashlib():
    rng = random.Random(0)
    w = np.empty(80, np.uint64)
    ctx = np.zeros(24, np.uint32)
    fn, has_openssl = sha1_block_fn()
    from dataproc.dedup.minhash_kernel import _sha1_sb  # noqa: PLC0415 - the OpenSSL path, direct
    for n in [*range(0, 140), *(rng.randrange(140, 3000) for _ in range(60))]:   # 1, 2 and many blocks
        data = bytes(rng.randrange(256) for _ in range(n))
        want = int.from_bytes(hashlib.sha1(data).digest()[:4], "little")
        assert sha1_32(np.frombuffer(data, np.uint8), 0, n, w) == want, n
        if has_openssl:
            sb = np.zeros(n + 73, np.uint8)
            sb[:n] = np.frombuffer(data, np.uint8)
            assert _sha1_sb(sb, n, w, fn, ctx) == want, n



def _want32(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


def test_multibuffer_sha1_equals_hashlib():
    """The 16-lane SHA-1 on its own: every one-block length (0..55 bytes), lanes in any order."""
    rng = random.Random(3)
    for start in range(0, 56, LANES):
        msgs = [bytes(rng.randrange(256) for _ in range(min(start + q, 55))) for q in range(LANES)]
        blocks = np.zeros((LANES, 64), np.uint8)
        for q, msg in enumerate(msgs):
            blocks[q, :len(msg)] = np.frombuffer(msg, np.uint8)
            blocks[q, len(msg)] = 0x80
            blocks[q, 56:] = np.frombuffer((8 * len(msg)).to_bytes(8, "big"), np.uint8)
        mw = np.ascontiguousarray(blocks.view("<u4").T).ravel()       # word-major: mw[LANES*t + lane]
        out = np.zeros(LANES, np.uint32)
        sha1_lanes(mw, out)
        assert out.tolist() == [_want32(m) for m in msgs]


def test_kernel_shingle_hashes_equal_hashlib():
    """Through the kernel's shingle assembly (16-lane path up to 55 bytes, scalar path above): each
    document's hashes equal hashlib's of `shingles`, for shingles of 1 to 200+ bytes in ASCII,
    Latin, Cyrillic, CJK and astral characters, and documents of any number of shingles."""
    rng = random.Random(11)
    alphabet = "abcxyzéßж中文日本語🙂"
    texts = []
    for _ in range(250):
        cap = rng.choice([3, 8, 60])
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, cap + 1)))
                 for _ in range(rng.randrange(0, 14))]
        texts.append(rng.choice([" ", ", ", " -- "]).join(words))
    for lang in ("eng_Latn", "cmn_Hans"):
        cfg = MinHashConfig(hash="sha1", word_ngram=3, char_ngram=4)
        flat, offs = unique_hashes(texts, [lang] * len(texts), cfg)
        lengths = set()
        for i, t in enumerate(texts):
            sh = [s.encode("utf-8") for s in shingles(t, lang, cfg)]
            lengths |= {len(s) for s in sh}
            assert flat[offs[i]:offs[i + 1]].tolist() == sorted({_want32(s) for s in sh}), (lang, t)
        if lang == "eng_Latn":
            assert min(lengths) <= 2 and max(lengths) >= 200 and set(range(50, 60)) <= lengths

def test_signatures_identical_to_datasketch_both_modes(docs):
    texts, langs = [t for t, _ in docs], [lg for _, lg in docs]
    for mode, hashfunc in [("poly64", shingle_hash32), ("sha1", None)]:
        cfg = MinHashConfig(num_perm=64, seed=5, hash=mode)
        sigs, has = Signer(cfg).sign(texts, langs)
        for (t, lg), sig, h in zip(docs, sigs, has, strict=True):
            assert h == bool(shingles(t, lg, cfg)), (mode, t[:40])
            assert np.array_equal(_ds(t, lg, cfg, hashfunc), sig), (mode, lg, t[:40])


def test_own_sha1_rounds_same_as_openssl(docs):
    """Without libcrypto the kernel runs its own SHA-1 rounds: same signatures."""
    cfg = MinHashConfig(num_perm=32, hash="sha1", word_ngram=3, char_ngram=2)
    buf, offs, flags = pack([t for t, _ in docs], [lg for _, lg in docs])
    a, b = permutations(cfg.num_perm, cfg.seed)
    fn, _ = sha1_block_fn()
    args = (buf, offs, flags, cfg.word_ngram, cfg.char_ngram, True, word_table(), a, b, fn)
    own, _ = sign_batch(*args, np.zeros(0, np.uint32))
    ssl, _ = Signer(cfg).sign([t for t, _ in docs], [lg for _, lg in docs])
    assert np.array_equal(own, ssl)
    assert np.array_equal(own[2], _ds(docs[2][0], docs[2][1], cfg))


def test_exact_jaccard_pairs_equal_set_arithmetic(docs):
    cfg = MinHashConfig()
    rng = random.Random(1)
    texts = [t for t, _ in docs] + [t[: len(t) // 2] + " extra words here" for t, _ in docs[:6]]
    langs = [lg for _, lg in docs] + [lg for _, lg in docs[:6]]
    iu = np.array([*range(6), *(rng.randrange(len(texts)) for _ in range(30))])
    iv = np.array([*range(len(docs), len(docs) + 6), *(rng.randrange(len(texts)) for _ in range(30))])
    got = jaccard_pairs(texts, langs, iu, iv, cfg)
    sets = [{shingle_hash32(s) for s in shingles(t, lg, cfg)} for t, lg in zip(texts, langs, strict=True)]
    want = [len(sets[u] & sets[v]) / len(sets[u] | sets[v]) if sets[u] and sets[v] else 0.0
            for u, v in zip(iu, iv, strict=True)]
    assert np.allclose(got, want, rtol=0, atol=1e-12)
    assert 0.2 < got[0] < 0.9                  # a half-truncated copy: a real partial overlap


def test_exact_edge_filter_nodes_in_many_edges(docs):
    cfg = MinHashConfig(threshold=0.5)
    t0, lg0 = docs[0]
    near = t0 + " one more sentence at the end"
    other, lg1 = docs[1]
    rows = {"u": [1, 1, 2, 1], "v": [2, 3, 3, 1],
            "tu": [t0, t0, near, t0], "lu": [lg0, lg0, lg0, lg0],
            "tv": [near, other, other, t0], "lv": [lg0, lg1, lg1, lg0]}
    out = exact_edge_filter(pa.RecordBatch.from_pydict(rows), cfg)
    assert list(zip(out.column("u").to_pylist(), out.column("v").to_pylist(), strict=True)) == [(1, 2), (1, 1)]
    empty = exact_edge_filter(pa.RecordBatch.from_pydict({k: v[:0] for k, v in rows.items()}), cfg)
    assert empty.num_rows == 0
