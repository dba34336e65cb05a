import os
from pathlib import Path

import pytest

from tests.mix.corpus import build_corpus


@pytest.fixture(scope="session")
def kept_corpus(tmp_path_factory) -> Path:
    """Kept documents (DOC_SCHEMA Parquet, partitioned by lang) from real multilingual text."""
    base = Path(os.environ.get("Q3_DATA", tmp_path_factory.mktemp("data"))) / "test-mix-corpus"
    return build_corpus(base)
