"""Fixtures for labeling tests: the real sample corpus from the project's own builder, as Parquet."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="session")
def label_sample_dir() -> Path:
    # Same config as the dataproc tests' fixture, so one build (cached under $Q3_DATA) serves both.
    from dataproc.sample import SampleConfig, build_sample
    from q3.paths import data_dir

    return build_sample(SampleConfig(per_language=40, code_files=40, output=str(data_dir() / "sample-tests")))


@pytest.fixture(scope="session")
def sample_parquet(label_sample_dir: Path, tmp_path_factory) -> Path:
    """The sample as kept documents in DOC_SCHEMA (lang = lang_hint), one Parquet file."""
    from q3.engine.io import jsonl_to_table

    out = tmp_path_factory.mktemp("docs") / "kept"
    out.mkdir()
    pq.write_table(jsonl_to_table(label_sample_dir / "docs.jsonl"), out / "part-0.parquet")
    return out


@pytest.fixture(scope="session")
def label_models(sample_parquet, tmp_path_factory) -> Path:
    """Classifiers trained once (rule judge, linear heads: the fast ones) for the apply tests, which
    copy them into their own work dirs (the marker travels along: same commit id, same key)."""
    from labeling.classifier import run_train
    from labeling.config import LabelConfig
    from labeling.judge import run_judge
    from labeling.rule_judge import MODEL, RuleJudgeServer

    work = tmp_path_factory.mktemp("label-train")
    with RuleJudgeServer() as srv:
        cfg = LabelConfig(input=str(sample_parquet), output=str(work), dimensions=["reasoning", "code"],
                          endpoint={"base_url": srv.base_url, "model": MODEL, "concurrency": 4},
                          judge={"sample_size": 160}, train={"classifier": "linear"})
        run_judge(cfg)
    return run_train(cfg)
