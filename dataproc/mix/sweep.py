"""`q3 mix sweep`: the grid of tiny trainer runs that `q3 mix scaling` fits power laws to.

    q3 mix sweep --config demo input=data/mix/manifests/demo_s1.yaml
    q3 mix scaling sweep=data/mix/sweep.json n_params=6.0e8

For every compute budget (training tokens) x peak learning rate x global batch size, the real
trainer (`q3 train pretrain`, a subprocess) trains for budget / (batch x seq) steps on the stage
manifest, then scores the fixed validation set (valid share of the `validation` datasets, see
docs/train.md). A run's compute is the trainer's FLOPs per token x the budget, so every run of a
budget has the same compute, as the fit's per-budget optimum needs. Finished runs are reused on
rerun. Output: JSON list of {compute, lr, bs (tokens per step), loss, ...} — the input of
`q3 mix scaling` — and the fitted laws printed when there are >= 2 budgets.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

from pydantic import Field, model_validator

from dataproc.mix.scaling import fit_scaling
from dataproc.mix.trainer_runs import run_trainer
from q3.atomic import atomic_write_text
from q3.config import Q3Config, load_config
from q3.contracts import StageResult, parse_contract, read_contract
from q3.errors import require_path
from q3.log import get_logger, print_table, progress

log = get_logger(__name__)


class SweepConfig(Q3Config):
    aliases = {"manifest": "input"}
    input: str                                      # stage manifest the runs train on
    validation: list[str]                           # manifest datasets whose valid share is scored
    split: str = "90,10,0"                          # megatron document split (train/valid/test)
    train_config: str = "demo_s1"
    seq_length: int = Field(default=64, ge=8)
    budgets: list[int] = Field(default_factory=lambda: [8192, 16384, 32768])   # training tokens
    lrs: list[float] = Field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    batch_sizes: list[int] = Field(default_factory=lambda: [2, 4, 8])   # global batch, sequences
    micro_batch_size: int = Field(default=2, ge=1)
    validation_batches: int = Field(default=2, ge=1)
    overrides: list[str] = Field(default_factory=list)   # extra trainer key=value settings
    near_optimal: float = Field(default=0.0025, ge=0)
    work_dir: str = "runs/mix-sweep"
    output: str = "data/mix/sweep.json"

    @model_validator(mode="after")
    def _grid(self) -> SweepConfig:
        for b in self.budgets:
            for bs in self.batch_sizes:
                if b < bs * self.seq_length:
                    raise ValueError(f"budget {b} tokens is less than one step of batch {bs} x seq "
                                     f"{self.seq_length}")
        return self


def run_name(budget: int, lr: float, bs: int) -> str:
    return f"tok{budget}-lr{lr:g}-bs{bs}"


def run_sweep(cfg: SweepConfig) -> list[dict]:
    t0 = time.time()
    work = Path(cfg.work_dir)
    grid = list(itertools.product(sorted(cfg.budgets), cfg.lrs, cfg.batch_sizes))
    runs = []
    for budget, lr, bs in progress(grid, "sweep runs", unit="run"):
        out_dir = work / run_name(budget, lr, bs)
        steps = budget // (bs * cfg.seq_length)
        result_file = out_dir / "result.json"
        res = read_contract(StageResult, result_file) if result_file.is_file() else None
        if res is not None and res.val_loss is not None:
            log.info("reusing %s", result_file)
        else:
            cmd = [sys.executable, "-m", "q3.cli", "train", "pretrain", "--config", cfg.train_config,
                   f"manifest={require_path(cfg.input, 'input', 'a stage manifest YAML')}", f"out_dir={out_dir}", f"train_steps={steps}",
                   f"seq_length={cfg.seq_length}", f"global_batch_size={bs}",
                   f"micro_batch_size={min(cfg.micro_batch_size, bs)}", f"optim.lr={lr}", f"optim.min_lr={lr / 10}",
                   f"split={cfg.split}", "validation=[" + ",".join(cfg.validation) + "]",
                   f"validation_batches={cfg.validation_batches}", "eval_batches=0", "save=false",
                   "tensorboard=false", *cfg.overrides]
            res = parse_contract(StageResult, run_trainer(cmd, result_file, out_dir / "train.log"), result_file)
        runs.append({"compute": res.flops_per_token * budget, "lr": lr, "bs": bs * cfg.seq_length,
                     "loss": res.metric("val_loss", result_file), "budget_tokens": budget, "tokens": res.tokens,
                     "steps": res.steps, "global_batch_size": bs, "run": out_dir.name})
    atomic_write_text(cfg.output, json.dumps(runs, indent=1, sort_keys=True))
    print_table(f"q3 mix sweep: {len(runs)} runs -> {cfg.output} ({time.time() - t0:.1f}s)",
                ["run", "compute (FLOPs)", "lr", "batch tokens", "steps", "val loss"],
                [[r["run"], r["compute"], r["lr"], r["bs"], r["steps"], r["loss"]] for r in runs])
    if len(cfg.budgets) >= 2:
        law = fit_scaling(runs, cfg.near_optimal)
        print_table("fitted: lr* = a C^b, bs* = a C^b", ["", "a", "b", "R^2 (log)"],
                    [[k, law[k]["a"], law[k]["b"], law[k]["r2"]] for k in ("lr", "bs")])
    return runs


def cli(config: str | None, overrides: list[str]) -> int:
    run_sweep(load_config(SweepConfig, "mix_sweep", config, overrides))
    return 0
