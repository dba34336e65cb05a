"""A pretraining run killed after logging a step but before checkpointing it, then rerun, leaves the
same metrics.jsonl steps and losses as an uninterrupted run, and its result.json keeps the eval
scored before training (the resumed invocation cannot score it: its weights are already trained).

The three runs share one child process (importing megatron three times would cost most of the time).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["model=tiny_dense", "seq_length=32", "micro_batch_size=2", "global_batch_size=2", "train_steps=4",
        "eval_batches=1", "save_interval=2", "seed=3", "tensorboard=false"]


def scenario(out: Path, manifest: str) -> None:
    """straight: 4 steps. killed: stop after 3, lose step 3's checkpoint and tear a row, rerun."""
    from q3.config import load_config
    from train.config import TrainConfig
    from train.model import destroy_parallel
    from train.pretrain import run

    def pretrain(d: Path, *extra: str) -> None:
        run(load_config(TrainConfig, "train", None, [*ARGS, f"manifest={manifest}", f"out_dir={d}", *extra]))
        destroy_parallel()

    pretrain(out / "straight")
    killed = out / "killed"
    pretrain(killed, "stop_after=3")                # logs steps 1-3, checkpoints 2 and 3
    # the kill: step 3 was logged but its checkpoint never completed; the write of step 4's row was torn
    shutil.rmtree(killed / "checkpoints/iter_0000003")
    (killed / "checkpoints/latest").write_text("iter_0000002")
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1')
    pretrain(killed)                                # resumes at 2, replays 3, runs 4


def test_killed_then_resumed_run_logs_each_step_once(tmp_path, dev_manifests):
    from conftest import child_env

    p = subprocess.run([sys.executable, __file__, str(tmp_path), str(dev_manifests["S1"])], cwd=ROOT,
                       env=child_env(Q3_PROGRESS="0", OMP_NUM_THREADS="2"), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]

    def rows(d: str) -> list[dict]:
        return [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]

    straight, resumed = rows("straight"), rows("killed")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("straight", "killed"))
    assert set(a["eval"]) == set(b["eval"]) == {"start", "end"}
    assert b["eval"] == a["eval"] and b["steps"] == 4


if __name__ == "__main__":
    scenario(Path(sys.argv[1]), sys.argv[2])
