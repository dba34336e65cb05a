"""Fixtures for post-training tests: real RL pairs -> `q3 post prepare` files."""

from __future__ import annotations

from pathlib import Path

import pytest
from post_helpers import run_q3


@pytest.fixture(scope="session")
def post_data(tmp_path_factory) -> Path:
    """RL pairs (math + logic, self-verified) -> cold-start, fusion and held-out eval files."""
    from synth.generators import VerifiableConfig, write_pairs

    d = tmp_path_factory.mktemp("post")
    out = write_pairs(VerifiableConfig(n=60, seed=3, domains={"math": 0.6, "logic": 0.4}, out=str(d / "rl"),
                                       workers=1))
    run_q3("post", "prepare", f"pairs={out / 'pairs.jsonl'}", f"out={d / 'post'}", "held_out=0.25")
    return d / "post"
