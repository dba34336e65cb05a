"""Fixtures for dataproc tests: the real sample corpus, built by the project's own builder.

The sample is built once per machine into $Q3_DATA (packages cached under $Q3_DATA/cache), so the
first run downloads ~25 Debian packages with apt-get (about 2 minutes) and later runs reuse it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    from dataproc.sample import SampleConfig, build_sample
    from q3.paths import data_dir

    cfg = SampleConfig(per_language=40, code_files=40, output=str(data_dir() / "sample-tests"))
    return build_sample(cfg)


@pytest.fixture(scope="session")
def sample_docs(sample_dir: Path) -> list[dict]:
    with (sample_dir / "docs.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def docs_by_lang(sample_docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in sample_docs:
        out.setdefault(d["lang_hint"], []).append(d)
    return out
