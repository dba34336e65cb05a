"""Fixtures for trainer tests: real Qwen3-tokenised indexed datasets + stage manifests, and a
helper that runs `train.pretrain` in a fresh process (or under torchrun) and reads its metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dev_manifests(tmp_path_factory) -> dict[str, Path]:
    """S1/S2/S3 manifests over code/prose datasets tokenised from the Python stdlib."""
    from train.devdata import build_dev_data

    return build_dev_data(tmp_path_factory.mktemp("devdata"), max_files=40)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: ours minus any torch.distributed rendezvous this test
    process may hold (a child inheriting MASTER_PORT fails with EADDRINUSE), plus the repo."""
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def run_pretrain(out_dir: Path, overrides: list[str], nproc: int = 1, config: str | None = None,
                 timeout: int = 600) -> list[dict]:
    """Run one stage in a subprocess (torchrun when nproc > 1); returns metrics.jsonl rows."""
    env = child_env(Q3_PROGRESS="0", OMP_NUM_THREADS="1" if nproc > 1 else "2")
    args = [*([f"--config={config}"] if config else []), f"out_dir={out_dir}", "tensorboard=false", *overrides]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={_free_port()}", "-m", "train.pretrain", *args]
    else:
        cmd = [sys.executable, "-m", "train.pretrain", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"pretrain failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    metrics = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines()]


TINY = ["model=tiny_moe", "seq_length=64", "micro_batch_size=2", "global_batch_size=4", "log_interval=5"]


@pytest.fixture(scope="session")
def pretrain():
    """`pretrain(out_dir, overrides, nproc=1)` -> metrics rows (see run_pretrain)."""
    return run_pretrain


@pytest.fixture(scope="session")
def tiny():
    return list(TINY)
