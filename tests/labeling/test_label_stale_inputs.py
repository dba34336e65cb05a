"""Keyed commits (q3.commit) for `q3 label apply`: an unchanged rerun skips (says so, writes nothing),
on any runner; re-running the upstream stage on changed documents makes it relabel them."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq

from labeling.apply import run_apply
from labeling.config import LabelConfig
from q3.atomic import atomic_dir


def _upstream(root: Path, table) -> Path:
    """A committed upstream stage (as `q3 data dedup` commits): <root>/kept/part-0.parquet."""
    with atomic_dir(root, {"stage": "dedup"}) as tmp:
        (tmp / "kept").mkdir()
        pq.write_table(table, tmp / "kept" / "part-0.parquet")
    return root / "kept"


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_label_apply_skips_unchanged_and_redoes_changed_input(sample_parquet, label_models, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="q3.commit")
    docs = pq.read_table(str(sample_parquet))
    kept = _upstream(tmp_path / "dedup", docs)
    cfg = LabelConfig(input=str(kept), output=str(tmp_path / "w"), runner="local")
    shutil.copytree(label_models, tmp_path / "w" / "models")     # trained once for the folder (conftest)
    out = run_apply(cfg)
    assert pq.read_table(str(out / "docs")).num_rows == docs.num_rows

    before = _tree(out)
    caplog.clear()
    t0 = time.perf_counter()
    run_apply(cfg)
    seconds = time.perf_counter() - t0
    print(f"label apply skip: {seconds:.3f}s")
    assert f"{out} is up to date (same config and input); skipping" in caplog.text
    assert _tree(out) == before and seconds < 10             # generous; measured ~0.05 s
    caplog.clear()
    run_apply(cfg.model_copy(update={"runner": "spark"}))     # the runner is not in the key: still a skip
    assert f"{out} is up to date (same config and input); skipping" in caplog.text and _tree(out) == before

    _upstream(tmp_path / "dedup", docs.slice(0, docs.num_rows - 7))   # upstream re-ran: 7 documents fewer
    caplog.clear()
    run_apply(cfg)
    assert f"{out}: recomputing (input changed)" in caplog.text
    assert pq.read_table(str(out / "docs")).num_rows == docs.num_rows - 7
