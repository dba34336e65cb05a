import os
from pathlib import Path

import pytest

from tests.mix.corpus import build_corpus


@pytest.fixture(scope="session")
def kept_corpus(tmp_path_factory) -> Path:
    """Kept documents (DOC_SCHEMA Parquet, partitioned by lang) from real multilingual text."""
    base = Path(os.environ.get("Q3_DATA", tmp_path_factory.mktemp("data"))) / "test-mix-corpus-v2"
    return build_corpus(base)


@pytest.fixture(scope="session")
def demo_mix(kept_corpus, tmp_path_factory):
    """The demo stages tokenised (local runner) and built from the test corpus: (cfg, {ref: path})."""
    from dataproc.jobs.tokenise import run_tokenize
    from dataproc.mix.config import MixConfig
    from dataproc.mix.manifest import build_manifests

    cfg = MixConfig(input=str(kept_corpus), output=str(tmp_path_factory.mktemp("mix")), runner="local",
                    buckets=4, stages=["demo_s1", "demo_s2", "demo_s3"],
                    lang_groups={"chinese": ["cmn_*"], "code": ["code_*"]})
    run_tokenize(cfg)
    return cfg, build_manifests(cfg)
