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
