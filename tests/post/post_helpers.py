"""Helpers for post-training tests: run `q3` (or torchrun) in a fresh process the way a user does.
(A uniquely named module: `from conftest import` is ambiguous when several test folders run.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TINY_SFT = ["model=tiny_dense", "seq_length=192", "micro_batch_size=2", "global_batch_size=4",
            "tensorboard=false", "log_interval=1", "optim.lr=3e-3", "optim.min_lr=3e-4", "load=null"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    return {**env, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0", **extra}


def run_q3(*args: str, check: bool = True, nproc: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    """`q3 <args>` in a child process; with nproc > 1 the verb's module under torchrun."""
    if nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        area, verb, *rest = args
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
               "-m", f"train.{area}.{verb}", *rest]
        env = _env(OMP_NUM_THREADS="1")
    else:
        cmd, env = [sys.executable, "-m", "q3.cli", *args], _env()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{' '.join(args[:2])} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-4000:]}"
    return p


