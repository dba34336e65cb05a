"""Where things live: the project root, `conf/`, and the default data/run directories."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(os.environ.get("Q3_CONF", ROOT / "conf"))


def data_dir() -> Path:
    """Default home of generated data (sample corpus, stage outputs). Override with Q3_DATA."""
    return Path(os.environ.get("Q3_DATA", ROOT / "data"))


def runs_dir() -> Path:
    """Default home of training runs and checkpoints. Override with Q3_RUNS."""
    return Path(os.environ.get("Q3_RUNS", ROOT / "runs"))
