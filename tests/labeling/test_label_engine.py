"""`q3 label run` on the corpus engine: the local and Spark runners write the same labeled rows and
the same distributions/stats (Spark from the JSONL form of the same documents, so its conversion
is covered too); a run killed (-9) mid-way and rerun equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from labeling.apply import DIE_ENV, run_apply
from labeling.config import LabelConfig
from q3.atomic import is_committed
from q3.engine.io import read_corpus

ROOT = Path(__file__).resolve().parents[2]


def _apply(docs: Path, models: Path, work: Path, runner: str, **over) -> Path:
    shutil.copytree(models, work / "models")          # the marker travels with it: same commit id
    cfg = LabelConfig(input=str(docs), output=str(work), runner=runner,
                      run={"batch_size": 64, **over})
    return run_apply(cfg)


def _result(out: Path) -> tuple[list[dict], dict, dict]:
    """Labeled rows in (id, text) order, the distributions, and the stats less runner/timing."""
    rows = sorted(read_corpus(out / "docs").to_pylist(), key=lambda r: (r["id"], r["text"], r["source"] or ""))
    for r in rows:         # map columns come back as lists of pairs: compare them as dicts
        r["labels"] = {**r["labels"], "extra": dict(r["labels"]["extra"]), "versions": dict(r["labels"]["versions"])}
    stats = json.loads((out / "stats.json").read_text())
    stats = {k: v for k, v in stats.items() if k not in ("runner", "runner_why", "seconds")}
    return rows, json.loads((out / "distributions.json").read_text()), stats


@pytest.fixture(scope="module")
def reference(sample_parquet, label_models, tmp_path_factory):
    return _result(_apply(sample_parquet, label_models, tmp_path_factory.mktemp("label-ref"), "local"))


@pytest.mark.parametrize("runner", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_runners_write_the_same_labeled_rows_and_stats(runner, request, sample_parquet, label_sample_dir,
                                                       label_models, reference, tmp_path):
    docs = sample_parquet
    if runner == "spark":
        request.getfixturevalue("spark")              # the tests' one local[2] session
        docs = label_sample_dir / "docs.jsonl"        # the same documents as JSONL: Spark reads them converted
    out = _apply(docs, label_models, tmp_path, runner, partitions=2 if runner == "spark" else None)
    rows, dist, stats = _result(out)
    ref_rows, ref_dist, ref_stats = reference
    assert json.loads((out / "stats.json").read_text())["runner"] == runner
    assert len(rows) == len(ref_rows) == read_corpus(sample_parquet, ["id"]).num_rows
    assert rows == ref_rows                           # every column, labels included, bit for bit
    assert dist == ref_dist and stats == ref_stats
    assert pc.struct_field(read_corpus(out / "docs", ["labels"]).column("labels").combine_chunks(),
                           "reasoning_score").null_count == 0
    assert sorted(p.name for p in (out / "docs").iterdir()) == sorted(f"lang={lg}" for lg in dist["per_lang"])


def test_killed_run_then_rerun_equals_uninterrupted(sample_parquet, label_models, reference, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(label_models, work / "models")
    args = [sys.executable, "-m", "q3.cli", "label", "run", f"input={sample_parquet}", f"output={work}",
            "runner=local", "run.batch_size=64"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), Q3_PROGRESS="0")
    killed = subprocess.run(args, env=env | {DIE_ENV: "3"}, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not is_committed(work / "labeled")         # died after 3 of >= 4 batches: nothing committed
    rerun = subprocess.run(args, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _result(work / "labeled") == reference
