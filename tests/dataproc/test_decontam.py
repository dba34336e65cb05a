"""Decontamination against a small "benchmark" made of real sample paragraphs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataproc.dedup.config import DecontamConfig, DedupConfig
from dataproc.dedup.decontam import Decontaminator, EvalIndex, units
from dataproc.dedup.planted import docs_table
from dataproc.dedup.planted import sample_docs as load_docs
from dataproc.jobs.decontam import run_decontam
from dataproc.runner import read_output
from dataproc.stage import split
from q3.contracts import read_stats
from q3.engine.schema import conform as conform_to

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus(sample_dir):
    latin = load_docs(str(sample_dir / "docs.jsonl"), ["eng_Latn", "fra_Latn"], limit_per_lang=20, max_chars=4000)
    cjk = load_docs(str(sample_dir / "docs.jsonl"), ["cmn_Hans", "jpn_Jpan"], limit_per_lang=5, max_chars=4000)
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
    stage = Decontaminator(cfg)
    para = _paragraph(latin[0]["text"]).split()
    clean = [d for d in latin[3:] if stage(docs_table([d]).to_batches()[0]).column("reason")[0].as_py() is None]
    assert len(clean) >= 5
    # only 10 consecutive word units of the benchmark passage: below 13-gram overlap
    ten = " ".join(units(" ".join(para), False)[0][:10])
    doc = {"text": clean[0]["text"] + " " + ten, "lang": "eng_Latn", "url": "x"}
    out = stage(docs_table([doc]).to_batches()[0])
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


def _write_input(where, docs) -> None:
    pq.write_to_dataset(docs_table(docs), str(where), partitioning=["lang"], partitioning_flavor="hive")


def _job_cfg(evals, runner: str = "local", **kw) -> DedupConfig:
    return DedupConfig(runner=runner, decontam=DecontamConfig(evals=[str(evals)]), **kw)


def _same(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("seconds", "skipped")}


EXPECTED = {"docs_in": 15, "docs_kept": 11, "docs_rejected": 4, "rejected": {"contaminated:cjkbench": 1, "contaminated:toybench": 3},
            "benchmarks": {"cjkbench": 1, "toybench": 6}, "eval_items_too_short": {"toybench": 3},  # answers "A"
            "mode": "reject"}


@pytest.mark.parametrize("runner", ["local", "spark"])
def test_decontam_job_rows_and_stats_equal_the_stage_on_both_runners(runner, request, tmp_path, evals, corpus):
    """Either runner writes exactly the rows of the stage applied to the whole input at once."""
    latin, cjk = corpus
    docs = latin[:12] + cjk[:3]
    _write_input(tmp_path / "in", docs)
    cfg = _job_cfg(evals, runner, batch_size=4)           # several batches (mapInArrow: several per task)
    spark = request.getfixturevalue("spark") if runner == "spark" else None
    stats = run_decontam(tmp_path / "in", tmp_path / "out", cfg, spark=spark)
    assert {k: v for k, v in _same(stats).items() if k != "ngram_index"} == EXPECTED and stats["ngram_index"] > 50
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    read_stats(tmp_path / "out").check_balance()                # the stats contract (q3/contracts.py)
    # the reference: the stage over every document in one batch, no runner, no files
    whole = Decontaminator(cfg.decontam)(docs_table(docs).combine_chunks().to_batches()[0])
    want_kept, want_rej = split(whole)
    for kind, want in (("kept", want_kept), ("rejected", want_rej)):
        got = read_output(tmp_path / "out", kind)
        want = pa.Table.from_batches([conform_to(want, got.schema)]).sort_by(
            [(k, "ascending") for k in ("id", "url", "reason") if k in got.schema.names])
        assert got.equals(want), kind
    assert set(read_output(tmp_path / "out", "rejected").column("stage").to_pylist()) == {"decontam"}


def test_killed_decontam_reruns_to_the_same_output(tmp_path, evals, corpus):
    """kill -9 halfway through writing: nothing committed; the rerun equals an uninterrupted run."""
    latin, cjk = corpus
    _write_input(tmp_path / "in", latin[:12] + cjk[:3])
    cfg = _job_cfg(evals, batch_size=4)
    full = run_decontam(tmp_path / "in", tmp_path / "full", cfg)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    code = ("import sys; from dataproc.dedup.config import DedupConfig; from dataproc.jobs.decontam import "
            "run_decontam; run_decontam(sys.argv[2], sys.argv[3], DedupConfig.model_validate_json(open(sys.argv[1]).read()))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_DECONTAM_DIE_MIDWAY": "1", "Q3_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg.json"), str(tmp_path / "in"),
                           str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert not (tmp_path / "out").exists()
    half = [p for p in tmp_path.glob(".out.tmp-*") if list(p.rglob("*.parquet"))]
    assert half, "the killed run left its half-written temporary"
    again = run_decontam(tmp_path / "in", tmp_path / "out", cfg)
    assert not again.get("skipped") and _same(again) == _same(full)
    for kind in ("kept", "rejected"):
        assert read_output(tmp_path / "out", kind).equals(read_output(tmp_path / "full", kind)), kind
    assert not list(tmp_path.glob(".out.tmp-*"))          # the stale temporary is cleaned up


def test_decontam_skips_unchanged_and_recomputes_on_a_changed_eval_set(tmp_path, evals, corpus, caplog):
    """(test_stale_inputs covers a re-run upstream) An unchanged rerun skips before building the eval
    index or reading a document; an eval set edited in place (same path, new content) recomputes."""
    caplog.set_level(logging.INFO, logger="q3.commit")
    latin, cjk = corpus
    _write_input(tmp_path / "in", latin[:12] + cjk[:3])
    cfg = _job_cfg(evals)
    first = run_decontam(tmp_path / "in", tmp_path / "out", cfg)
    marker = (tmp_path / "out" / "_Q3_SUCCESS").stat().st_mtime_ns
    caplog.clear()
    t0 = time.perf_counter()
    again = run_decontam(tmp_path / "in", tmp_path / "out", cfg)
    seconds = time.perf_counter() - t0
    print(f"decontam unchanged rerun: {seconds:.3f} s")
    assert again["skipped"] is True and _same(again) == _same(first)
    assert "is up to date (same config and input); skipping" in caplog.text
    assert seconds < 1.0        # the key from file stats and the marker only: no index, no data (~0.02 s)
    assert (tmp_path / "out" / "_Q3_SUCCESS").stat().st_mtime_ns == marker
    # the benchmark now quotes a fourth document: same file name, new content
    extra = {"question": _paragraph(latin[5]["text"]), "answer": "B"}
    with open(evals / "toybench.jsonl", "a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps(extra, ensure_ascii=False))
    caplog.clear()
    redone = run_decontam(tmp_path / "in", tmp_path / "out", cfg)
    assert f"{tmp_path / 'out'}: recomputing (input changed)" in caplog.text
    assert redone["rejected"]["contaminated:toybench"] == first["rejected"]["contaminated:toybench"] + 1
    assert latin[5]["url"] in read_output(tmp_path / "out", "rejected").column("url").to_pylist()
