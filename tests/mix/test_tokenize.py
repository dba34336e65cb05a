"""`q3 mix tokenize`: ids in .bin equal the reference tokenizer on every sample language and code,
on either runner; Spark and local runners agree byte for byte (and in their stats); reruns are
identical; a crashed run resumes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset
from tokenizers import Tokenizer

from dataproc.jobs.tokenise import CRASH_ENV, bucket_of, run_tokenize
from dataproc.mix.config import MixConfig, StageConfig
from q3.atomic import is_committed, read_marker
from q3.tokenizer import EOD_ID, tokenizer_dir

ROOT = Path(__file__).resolve().parents[2]


def _langs(corpus: Path) -> list[str]:
    return sorted(p.name.split("=", 1)[1] for p in corpus.glob("lang=*"))


def _per_lang_stage(corpus: Path) -> StageConfig:
    return StageConfig(stage="T", seq_length=64, rope_base=10000, target_tokens=10**6,
                       datasets=[{"name": f"lang_{lg}", "select": {"langs": [lg]}} for lg in _langs(corpus)])


def _cfg(corpus: Path, out: Path, runner: str, buckets: int = 5) -> MixConfig:
    return MixConfig(input=str(corpus), output=str(out), runner=runner, buckets=buckets, batch_size=16)


_RUNS: dict[str, tuple[Path, dict]] = {}


def _run(runner: str, corpus: Path, tmp_path_factory, request) -> tuple[Path, dict]:
    """One tokenisation per runner for the module (Spark through the tests' local[2] session)."""
    if runner not in _RUNS:
        if runner == "spark":
            request.getfixturevalue("spark")
        out = tmp_path_factory.mktemp(f"tok-{runner}")
        _RUNS[runner] = out, run_tokenize(_cfg(corpus, out, runner), [_per_lang_stage(corpus)])
    return _RUNS[runner]


RUNNERS = ["local", pytest.param("spark", marks=pytest.mark.spark)]


@pytest.mark.parametrize("runner", RUNNERS)
def test_bin_ids_equal_reference_tokenizer_for_every_language(runner, kept_corpus, tmp_path_factory, request):
    out, meta = _run(runner, kept_corpus, tmp_path_factory, request)
    assert meta["runner"] == runner
    ref = Tokenizer.from_file(str(tokenizer_dir() / "tokenizer.json"))   # independent instance
    table = ds.dataset(kept_corpus, format="parquet", partitioning="hive").to_table(columns=["id", "text", "lang"])
    langs = _langs(kept_corpus)
    assert len(langs) >= 20 and "code_Python" in langs
    for lang in langs:
        rows = [r for r in table.to_pylist() if r["lang"] == lang]
        # the job's document order: hash bucket, then id
        rows.sort(key=lambda r: (int(bucket_of([r["id"]], 5)[0]), r["id"]))
        got = IndexedDataset(str(out / "tokens" / f"lang_{lang}"))
        assert len(got) == len(rows), lang
        for i, r in enumerate(rows):
            expected = ref.encode(r["text"]).ids + [EOD_ID]
            assert got[i].tolist() == expected, (lang, r["id"])
        assert meta["datasets"][f"lang_{lang}"]["n_tokens"] == int(got.sequence_lengths.sum())
    assert meta["docs_seen"] == table.num_rows and meta["docs_unselected"] == 0


@pytest.mark.spark
def test_runners_are_byte_identical_and_rerun_skips_whatever_the_runner(kept_corpus, tmp_path_factory, request):
    (local_out, local), (_, spark) = (_run(r, kept_corpus, tmp_path_factory, request) for r in ("local", "spark"))
    assert local["datasets"] == spark["datasets"]                # sha256 of .bin+.idx per dataset
    same = ("buckets", "docs_seen", "docs_unselected", "docs_tokenized", "tokenizer_sha256", "job")
    assert {k: local[k] for k in same} == {k: spark[k] for k in same}
    cfg = _cfg(kept_corpus, local_out, "local")
    stage = _per_lang_stage(kept_corpus)
    # the runner is not in the key: an unchanged rerun on the other runner reuses the output
    assert run_tokenize(cfg.model_copy(update={"runner": "spark"}), [stage])["skipped"] is True
    again = run_tokenize(cfg, [stage], force=True)
    assert again["datasets"] == local["datasets"] and not again.get("skipped")


def test_crash_then_resume_matches_clean_run(kept_corpus, tmp_path):
    args = [sys.executable, "-m", "q3.cli", "mix", "tokenize", "--config", "demo",
            f"input={kept_corpus}", "runner=local", "buckets=6"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), Q3_PROGRESS="0")
    ref = subprocess.run(args + [f"output={tmp_path / 'clean'}"], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    crashed = subprocess.run(args + [f"output={tmp_path / 'crash'}"], env=env | {CRASH_ENV: "2"},
                             capture_output=True, text=True)
    assert crashed.returncode == 17
    assert not is_committed(tmp_path / "crash" / "tokens")
    done = list((tmp_path / "crash" / ".work").glob("*/bucket-*/_Q3_SUCCESS"))
    assert len(done) == 2
    resumed = subprocess.run(args + [f"output={tmp_path / 'crash'}"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = read_marker(tmp_path / "clean" / "tokens"), read_marker(tmp_path / "crash" / "tokens")
    assert b["buckets_resumed"] == 2 and a["buckets_resumed"] == 0
    assert a["datasets"] == b["datasets"] and a["job"] == b["job"]
    for name in a["datasets"]:
        for ext in (".bin", ".idx"):
            assert (tmp_path / "clean" / "tokens" / f"{name}{ext}").read_bytes() == \
                (tmp_path / "crash" / "tokens" / f"{name}{ext}").read_bytes()
    assert np.all(IndexedDataset(str(tmp_path / "crash" / "tokens" / "code")).sequence_lengths > 1)
