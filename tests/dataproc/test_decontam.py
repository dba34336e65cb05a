"""Decontamination against a small "benchmark" made of real sample paragraphs."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from dataproc.dedup.config import DecontamConfig, DedupConfig
from dataproc.dedup.decontam import Decontaminator, EvalIndex
from dataproc.dedup.planted import docs_table, sample_docs, sample_path
from dataproc.jobs.decontam import run_decontam
from dataproc.stage import split


@pytest.fixture(scope="session")
def corpus():
    latin = sample_docs(sample_path(), ["eng_Latn", "fra_Latn"], limit_per_lang=20, max_chars=4000)
    cjk = sample_docs(sample_path(), ["cmn_Hans", "jpn_Jpan"], limit_per_lang=5, max_chars=4000)
    return latin, cjk


def _paragraph(text: str, words: int = 40) -> str:
    """A ~`words`-word passage from the middle of a real document."""
    w = text.split()
    mid = len(w) // 2
    return " ".join(w[mid:mid + words])


@pytest.fixture()
def evals(tmp_path, corpus):
    latin, cjk = corpus
    bench = tmp_path / "evals"
    bench.mkdir()
    items = [{"question": _paragraph(latin[i]["text"]), "answer": "A"} for i in (0, 1, 2)]
    (bench / "toybench.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in items))
    c = cjk[0]["text"].replace(" ", "")
    mid = len(c) // 2
    pq.write_table(pa.table({"text": [c[mid:mid + 60]]}), str(bench / "cjkbench.parquet"))
    return bench


def test_reject_names_benchmark(evals, corpus):
    latin, cjk = corpus
    cfg = DecontamConfig(evals=[str(evals)])
    index = EvalIndex.build(cfg)
    assert set(index.names) == {"toybench", "cjkbench"} and len(index.hashes) > 50
    docs = latin[:10] + cjk[:3]
    out = Decontaminator(cfg, index)(docs_table(docs).to_batches()[0])
    kept, rej = split(out)
    reasons = dict(zip(rej.column("url").to_pylist(), rej.column("reason").to_pylist(), strict=True))
    for i in (0, 1, 2):
        assert reasons[latin[i]["url"]] == "contaminated:toybench"
    assert reasons[cjk[0]["url"]] == "contaminated:cjkbench"
    assert "13-grams" in rej.column("detail").to_pylist()[0]
    assert kept.num_rows + rej.num_rows == len(docs)
    assert kept.num_rows >= 7


def test_unrelated_or_short_overlap_kept(evals, corpus):
    latin, _ = corpus
    cfg = DecontamConfig(evals=[str(evals)])
    para = _paragraph(latin[0]["text"]).split()
    # only 10 consecutive words of the benchmark passage: below 13-gram overlap
    doc = {"text": latin[5]["text"] + " " + " ".join(para[:10]), "lang": "eng_Latn", "url": "x"}
    out = Decontaminator(cfg)(docs_table([doc]).to_batches()[0])
    assert out.column("reason").to_pylist() == [None]


def test_remove_span_keeps_rest(evals, corpus):
    latin, _ = corpus
    cfg = DecontamConfig(evals=[str(evals)], mode="remove_span")
    para = _paragraph(latin[1]["text"])
    doc = {"text": "Intro line stays here.\n" + latin[1]["text"], "lang": "eng_Latn", "url": "y"}
    out = Decontaminator(cfg)(docs_table([doc]).to_batches()[0])
    assert out.column("reason").to_pylist() == [None]
    text = out.column("text").to_pylist()[0]
    assert para not in " ".join(text.split())
    assert text.startswith("Intro line stays here.")
    assert len(text) > 0.5 * len(latin[1]["text"])
    only = {"text": para, "lang": "eng_Latn", "url": "z"}
    out = Decontaminator(cfg)(docs_table([only]).to_batches()[0])
    assert out.column("reason").to_pylist() == ["contaminated:toybench"]


@pytest.mark.parametrize("runner", ["local", "spark"])
def test_decontam_job(runner, spark, tmp_path, evals, corpus):
    latin, cjk = corpus
    docs = latin[:12] + cjk[:3]
    pq.write_to_dataset(docs_table(docs), str(tmp_path / "in"), partitioning=["lang"], partitioning_flavor="hive")
    cfg = DedupConfig(runner=runner, decontam=DecontamConfig(evals=[str(evals)]))
    stats = run_decontam(tmp_path / "in", tmp_path / "out", cfg, spark=spark)
    assert stats["rejected"] == {"contaminated:toybench": 3, "contaminated:cjkbench": 1}
    kept = ds.dataset(str(tmp_path / "out" / "kept"), partitioning="hive").to_table()
    rej = ds.dataset(str(tmp_path / "out" / "rejected")).to_table()
    assert kept.num_rows + rej.num_rows == len(docs)
    assert set(rej.column("stage").to_pylist()) == {"decontam"}
