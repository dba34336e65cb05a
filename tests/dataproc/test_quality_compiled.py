"""The compiled datatrove_compat pass (quality_kernels.compat_signals) against its reference.

The reference is the document-by-document path (QualityStage._call_python: the regexes of
quality_compat and plain str methods). Equality is exact: token lists, every signal of the quality
struct, `failed`, reason and detail. Texts: real English (the bench corpus) and seeded random
strings over the characters where a re-implementation can slip: word joiners, '_' and other word
punctuation, digits of other scripts, Unicode spaces and line breaks (\\r\\n, \\x1c, U+2028),
U+0130 (lowercases to two chars), 4-byte UTF-8, citations, ellipses, bullets.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from dataproc.config import QualityConfig
from dataproc.stage import conform
from dataproc.stages.quality import QualityStage
from dataproc.stages.quality_compat import char_tables, compat_token_spans, compat_tokens

_PIECES = [
    "a", "Z", "é", "ß", "İ", "K", "Σ", "ж", "日", "の", "ก", "٣", "５", "१", "²", "½", "_", "'", "’", "-", "--",
    " ", "  ", "\t", "\xa0", "\u3000", "\n", "\n\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85",
    "\u2028", "\u2029", ".", "...", "…", "!", "?", "。", "؟", '"', "#", "•", "- ", "{", "}", "[1]", "[edit]",
    "[citation needed]", "[", "]", "the", "The", "and", "of", "lorem ipsum", "LOREM İPSUM", "javascript",
    "privacy policy", "Terms of Use", "word", "don't", "dog-eat-dog", "x_y", "😀", "𝔘", "\u0301", "\u200b",
    "\ufeff", "©", "€", "\x00", "\x7f", "\x9c",
]


def _fuzz(seed: int, n: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        parts = rnd.choices(_PIECES, k=rnd.randint(0, 120))
        # and a few arbitrary code points (any plane, no surrogates: Arrow strings are UTF-8)
        for _ in range(rnd.randint(0, 3)):
            c = rnd.randrange(0x110000)
            parts.insert(rnd.randint(0, len(parts)), chr(c) if not 0xD800 <= c < 0xE000 else "x")
        out.append("".join(parts))
    return out


def _lines_of_words(seed: int, n: int) -> list[str]:
    """Documents long enough to pass or fail every rule for real reasons (sentences, repeats)."""
    rnd = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "and", "of", "to", "be", "data", "naïve", "İstanbul", "x_1",
             "don’t", "e-mail", "…", "#", "--", "{", "[2]", "2026", "١٢٣"]
    ends = [".", "!", "?", "", "...", ".\"", " .", "。"]
    docs = []
    for _ in range(n):
        lines = [" ".join(rnd.choices(words, k=rnd.randint(0, 14))) + rnd.choice(ends)
                 for _ in range(rnd.randint(1, 12))]
        lines += rnd.choices(lines, k=rnd.randint(0, 4))          # repeated lines and n-grams
        docs.append(rnd.choice(["\n", "\n\n", "\r\n", " \n"]).join(lines))
    return docs


def _assert_same(stage: QualityStage, texts: list[str | None], langs: list[str] | None = None,
                 pii_email: list[int] | None = None) -> None:
    batch = conform(pa.table({"text": texts, "lang": langs or ["eng_Latn"] * len(texts)}))
    if pii_email is not None:   # counts of an earlier (pii) stage: both paths carry them over
        q = batch.column("quality")
        fields = [pa.array(pii_email, f.type) if f.name == "pii_email" else q.field(f.name) for f in q.type]
        batch = batch.set_column(batch.schema.names.index("quality"), "quality",
                                 pa.StructArray.from_arrays(fields, fields=list(q.type)))
    fast, ref = stage._call_compiled(batch), stage._call_python(batch)
    for name in ref.schema.names:
        a, b = fast.column(name), ref.column(name)
        if not a.equals(b):
            bad = next(i for i, (x, y) in enumerate(zip(a.to_pylist(), b.to_pylist(), strict=True)) if x != y)
            pytest.fail(f"{name} differs on {texts[bad]!r}: {a[bad]} vs {b[bad]}")
    assert fast.num_rows == len(texts)


def test_tokens_equal_the_regex_on_tricky_unicode():
    texts = _fuzz(1, 3000) + _lines_of_words(2, 300) + ["", " ", "a-", "-a", "a--b", "a-'b", "a'b'c", "'a'",
                                                         "x’y-z", "__", "a\u0301b", "5-5", "日本-語"]
    counts, starts, ends = compat_token_spans(pa.array(texts))
    k = 0
    for text, c in zip(texts, counts.tolist(), strict=True):
        assert [text[a:b] for a, b in zip(starts[k:k + c].tolist(), ends[k:k + c].tolist(), strict=True)] \
            == compat_tokens(text), text
        k += c
    assert k == sum(len(compat_tokens(t)) for t in texts) > 100_000


def test_char_classes_match_python():
    flags, lower = char_tables()
    from dataproc.stages import quality_kernels as qk
    for c in (0x5F, 0x660, 0xFF15, 0xB2, 0xBD, 0x301, 0x200B, 0x1F600):   # _, digits, ², ½, marks
        ch = chr(c)
        assert bool(flags[c] & qk.C_WORD) == (ch.isalnum() or ch == "_"), hex(c)
        assert bool(flags[c] & qk.C_DIGIT) == ch.isdecimal(), hex(c)
    assert [c for c in range(0x3000) if flags[c] & qk.C_BREAK] == [10, 11, 12, 13, 28, 29, 30, 0x85, 0x2028, 0x2029]
    assert [c for c in range(0x110000) if flags[c] & qk.C_SPACE] == [c for c in range(0x110000) if chr(c).isspace()]
    assert lower[ord("K")] == ord("k") and lower[0x212A] == ord("k") and lower[ord("a")] == ord("a")


@pytest.mark.parametrize("cfg", [
    {},
    {"enabled": ["c4", "fineweb"], "fineweb": {"line_punct_exclude_zero": True, "short_line_length": 12}},
    {"gopher_repetition": {"top_ngrams": {2: 0.05, 4: 0.3}, "dup_ngrams": {5: 0.01, 7: 0.5}, "dup_line_frac": None},
     "c4": {"remove_citations": False, "drop_policy_lines": False, "min_words_per_line": 1, "max_word_len": 6},
     "gopher_quality": {"min_words": 5, "max_symbol_word_ratio": None, "min_stop_words": 1}},
])
def test_compiled_pass_equals_reference_on_fuzz(cfg):
    stage = QualityStage(QualityConfig(datatrove_compat=True, **cfg))
    texts: list[str | None] = _fuzz(3, 800) + _lines_of_words(4, 800) + [None, "", "\n"]
    langs = ["code_python" if i % 7 == 0 else "eng_Latn" for i in range(len(texts))]
    _assert_same(stage, texts, langs)
    _assert_same(stage, ["\n", "", "\n\n", "a", None, "\r\n"])   # scratch sized by the longest doc: 2 bytes


def test_compiled_pass_equals_reference_on_real_text():
    from bench.filters_vs_datatrove import load_corpus

    stage = QualityStage(QualityConfig(datatrove_compat=True))
    texts = [d["text"] for d in load_corpus(1500)]
    _assert_same(stage, texts, pii_email=list(range(len(texts))))
    # __call__ takes the compiled pass; C4 rewriting (kept lines) stays on the reference path
    batch = conform(pa.table({"text": texts[:200], "lang": ["eng_Latn"] * 200}))
    assert stage(batch).equals(stage._call_python(batch))
    rewrite = QualityStage(QualityConfig(datatrove_compat=True, c4={"rewrite_text": True}))
    assert rewrite(batch).equals(rewrite._call_python(batch))
    assert sum(r is not None for r in stage(batch).column("reason").to_pylist()) > 100
