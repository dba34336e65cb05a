"""Our quality filters vs datatrove 0.10.1 on equal rules (datatrove_compat + the same tokenisation).

Real English text (Debian man pages, debian-reference, fortunes; bench/filters_vs_datatrove.py builds
and caches it with apt-get like the sample fixture). The full >= 10,000-document comparison and the
speed ratio are in bench/RESULTS.md.
"""

from __future__ import annotations

import pytest

pytest.importorskip("datatrove")

from bench.filters_vs_datatrove import (  # noqa: E402
    _DT_REASON,
    FAMILIES,
    agreement,
    load_corpus,
    run_datatrove,
    run_ours,
    shared_tokenizer,
)
from dataproc.config import QualityConfig  # noqa: E402
from dataproc.stages.quality import QualityStage  # noqa: E402


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return load_corpus(400)


def test_every_rule_agrees_with_datatrove(corpus):
    ours, _ = run_ours(corpus)
    with shared_tokenizer():
        dt, _ = run_datatrove(corpus)
    rows, classes = agreement(corpus, dt, ours)
    assert len(corpus) == 400
    for r in rows:
        assert r["agree"] >= 0.99, r
    # the comparison means something: every filter drops documents, through several rules
    fired = {r["rule"] for r in rows if r["rule"] != "(keep/drop)" and r["dt_drops"]}
    for fam in FAMILIES:
        assert next(r for r in rows if r["filter"] == fam and r["rule"] == "(keep/drop)")["dt_drops"] > 0
    assert len(fired) >= 8, fired
    assert sum(len(v) for v in classes.values()) <= len(corpus) * len(FAMILIES) // 100


def test_repetition_variants_match_datatrove_functions():
    """The two n-gram rules where datatrove differs from the Gopher paper's wording, on a text
    built to separate them: greedy repeated n-grams and the first-seen top n-gram (with spaces)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_top_duplicate,
        get_n_grams,
    )

    from dataproc.stages.quality_compat import compat_tokens

    text = ("a b c d e a b c d e a b c d e f g h ab cd ef gh ab cd ef gh xyz uvw xyz uvw "
            "the cat sat on the mat and the cat sat on the hat zz zz zz zz zz zz zz zz")
    words = compat_tokens(text)
    rep = {"enabled": ["gopher_repetition"]}
    compat = QualityStage(QualityConfig(datatrove_compat=True, **rep)).measure(text, "eng_Latn")[0]
    paper = QualityStage(QualityConfig(**rep)).measure(text, "eng_Latn")[0]
    for n in range(5, 11):
        assert compat[f"dup_{n}gram_frac"] == find_all_duplicate(words, n) / len(text)
    for n in (2, 3, 4):
        assert compat[f"top_{n}gram_frac"] == find_top_duplicate(get_n_grams(words, n)) / len(text)
    # ours counts every character inside a repeat once; datatrove skips a repeat's words
    assert paper["dup_5gram_frac"] > compat["dup_5gram_frac"]


def test_reason_names_cover_datatrove():
    """Every reason datatrove 0.10.1 can return maps to one of ours (a new one would fail here)."""
    import inspect

    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    for fam, cls in (("gopher_quality", GopherQualityFilter), ("c4", C4QualityFilter),
                     ("fineweb", FineWebQualityFilter)):
        src = inspect.getsource(cls.filter)
        for reason in _DT_REASON[fam]:
            assert f'"{reason}"' in src, (fam, reason)
    assert 'f"top_{n}_gram"' in inspect.getsource(GopherRepetitionFilter.filter)
