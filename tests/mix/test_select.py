"""Selection predicates: language globs and groups, labels (null never passes), length chunks."""

import pyarrow as pa

from dataproc.mix.config import Selection, StageConfig
from dataproc.mix.select import chunk_lengths, doc_mask, expand_stage, length_ok
from q3.schemas import DOC_SCHEMA


def _batch():
    rows = [
        {"id": "a", "text": "Hallo Welt", "lang": "deu_Latn", "source": "web", "quality": {"score": 0.9},
         "labels": {"domain": "science", "edu_score": 4.0, "has_code": False}},
        {"id": "b", "text": "你好", "lang": "cmn_Hans", "source": "web", "quality": {"score": 0.2}, "labels": None},
        {"id": "c", "text": "def f(): pass", "lang": "code_Python", "source": "python", "quality": None,
         "labels": {"domain": "code", "edu_score": 1.0, "has_code": True}},
    ]
    return pa.RecordBatch.from_pylist(rows, schema=DOC_SCHEMA)


def test_predicates():
    b, groups = _batch(), {"cjk": ["cmn_*", "jpn_*"]}
    assert doc_mask(b, Selection(langs=["*_Latn"]), groups).tolist() == [True, False, False]
    assert doc_mask(b, Selection(langs=["@cjk"]), groups).tolist() == [False, True, False]
    assert doc_mask(b, Selection(exclude_langs=["code_*"]), groups).tolist() == [True, True, False]
    assert doc_mask(b, Selection(min_edu=2), groups).tolist() == [True, False, False]       # null labels fail
    assert doc_mask(b, Selection(has_code=True), groups).tolist() == [False, False, True]
    assert doc_mask(b, Selection(min_quality=0.1), groups).tolist() == [True, True, False]  # null quality fails
    assert doc_mask(b, Selection(domains=["code", "science"], sources=["py*"]), groups).tolist() == [False, False, True]
    assert doc_mask(b, Selection(min_chars=5), groups).tolist() == [True, False, True]


def test_chunks_and_buckets():
    assert chunk_lengths(70_000, 32_768) == [32_768, 32_768, 4_464]
    assert chunk_lengths(100, None) == [100]
    sel = Selection(min_tokens=4096, max_tokens=16_383)
    assert [length_ok(n, sel) for n in chunk_lengths(70_000, 32_768)] == [False, False, True]
    st = StageConfig(stage="S3", seq_length=32768, rope_base=1e6, target_tokens=10**9,
                     datasets=[{"name": "a", "weight": 3}, {"name": "b", "weight": 1}],
                     length_buckets=[{"min_tokens": 16384, "max_tokens": 32768, "fraction": 0.75},
                                     {"min_tokens": 4096, "max_tokens": 16383, "fraction": 0.25}])
    got = {td.name: w for td, w in expand_stage(st)}
    assert got == {"a.L16384-32768": 0.5625, "a.L4096-16383": 0.1875, "b.L16384-32768": 0.1875, "b.L4096-16383": 0.0625}


def test_empty_or_null_text_is_never_written(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from dataproc.jobs.tokenise import _encode_into, _Shard
    from dataproc.mix.select import TokenDataset

    b = pa.RecordBatch.from_pylist([{"id": "x", "text": "hi", "lang": "eng_Latn"},
                                    {"id": "y", "text": None, "lang": "eng_Latn"},
                                    {"id": "z", "text": "", "lang": "eng_Latn"}], schema=DOC_SCHEMA)
    shards = {"a": _Shard(tmp_path / "a")}
    counts = {"docs_seen": 0, "docs_unselected": 0, "docs_tokenized": 0}
    _encode_into(b, [TokenDataset("a", Selection())], {}, shards, counts)
    shards["a"].finalize()
    got = IndexedDataset(str(tmp_path / "a"))
    assert len(got) == 1 and got[0].tolist()[-1] == 151_643
    assert counts == {"docs_seen": 3, "docs_unselected": 2, "docs_tokenized": 1}
