"""`q3 mix scaling`: power laws of the best learning rate and batch size against compute.

    q3 mix scaling sweep=runs/sweep/results.json n_params=6.0e8 'stages=[s1,s2,s3]'

Input: a sweep of small runs, JSON list of {"compute": FLOPs, "lr": ..., "bs": tokens per step,
"loss": final validation loss}. Method (as DeepSeek LLM and the Qwen3 report describe it): for
each compute budget, the runs whose loss is within `near_optimal` (relative) of that budget's
best are "near-optimal"; their geometric-mean lr and bs are the budget's optimum. Then
least squares in log space: lr*(C) = a_lr * C^b_lr, bs*(C) = a_bs * C^b_bs. Each stage's
compute is C = 6 * n_params * target_tokens; the predictions go to `output` (JSON) and, when
`manifests` are given, into their `schedule.lr` / `schedule.global_batch_tokens`.
"""

from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from dataproc.mix.config import load_stage
from q3.atomic import atomic_write_text
from q3.config import Q3Config, load_config
from q3.errors import require_path
from q3.log import get_logger, print_table
from q3.manifest import dump_manifest, load_manifest

log = get_logger(__name__)


class ScalingConfig(Q3Config):
    aliases = {"sweep": "input"}
    input: str                                  # sweep JSON (`q3 mix sweep`): a list of {compute, lr, bs, loss}
    near_optimal: float = Field(default=0.0025, ge=0)
    n_params: float = Field(gt=0)               # parameters of the model the stages train
    stages: list[str] = Field(default_factory=lambda: ["s1", "s2", "s3"])
    manifests: list[str] = Field(default_factory=list)   # manifests to update, matched by stage name
    output: str = "data/mix/scaling.json"


def optimum_per_budget(runs: list[dict], near_optimal: float) -> list[dict]:
    """For each compute budget: geometric means of lr and bs over its near-optimal runs."""
    by_c: dict[float, list[dict]] = {}
    for r in runs:
        by_c.setdefault(float(r["compute"]), []).append(r)
    out = []
    for c in sorted(by_c):
        rs = by_c[c]
        best = min(float(r["loss"]) for r in rs)
        near = [r for r in rs if float(r["loss"]) <= best * (1 + near_optimal)]
        out.append({"compute": c, "lr": float(np.exp(np.mean([np.log(r["lr"]) for r in near]))),
                    "bs": float(np.exp(np.mean([np.log(r["bs"]) for r in near]))),
                    "loss": best, "n_near": len(near)})
    return out


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """y = a * x^b by least squares in log-log space; returns (a, b, R^2 in log space)."""
    lx, ly = np.log(x), np.log(y)
    b, la = np.polyfit(lx, ly, 1)
    pred = la + b * lx
    ss = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float(((ly - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return float(np.exp(la)), float(b), r2


def fit_scaling(runs: list[dict], near_optimal: float = 0.0025) -> dict:
    opt = optimum_per_budget(runs, near_optimal)
    if len(opt) < 2:
        raise ValueError("need runs at >= 2 compute budgets to fit a power law")
    c = np.array([o["compute"] for o in opt])
    a_lr, b_lr, r2_lr = fit_power_law(c, np.array([o["lr"] for o in opt]))
    a_bs, b_bs, r2_bs = fit_power_law(c, np.array([o["bs"] for o in opt]))
    return {"lr": {"a": a_lr, "b": b_lr, "r2": r2_lr}, "bs": {"a": a_bs, "b": b_bs, "r2": r2_bs},
            "optima": opt}


def predict(law: dict, compute: float) -> tuple[float, float]:
    return law["lr"]["a"] * compute ** law["lr"]["b"], law["bs"]["a"] * compute ** law["bs"]["b"]


def run_scaling(cfg: ScalingConfig) -> dict:
    runs = json.loads(require_path(cfg.input, "input", "the JSON `q3 mix sweep` writes").read_text())
    law = fit_scaling(runs, cfg.near_optimal)
    preds = {}
    for ref in cfg.stages:
        st = load_stage(ref)
        compute = 6.0 * cfg.n_params * st.target_tokens
        lr, bs = predict(law, compute)
        preds[st.stage] = {"compute": compute, "lr": lr, "global_batch_tokens": int(round(bs))}
    for mpath in cfg.manifests:
        m = load_manifest(mpath)
        if m.stage in preds:
            p = preds[m.stage]
            sched = m.schedule.model_copy(update={"lr": p["lr"], "global_batch_tokens": p["global_batch_tokens"]})
            prov = dict(m.provenance) | {"scaling_law": {"lr": law["lr"], "bs": law["bs"], "n_params": cfg.n_params}}
            atomic_write_text(mpath, dump_manifest(m.model_copy(update={"schedule": sched, "provenance": prov})))
    result = {"law": law, "n_params": cfg.n_params, "stages": preds}
    atomic_write_text(cfg.output, json.dumps(result, indent=2, sort_keys=True))
    print_table(f"q3 mix scaling: lr* = {law['lr']['a']:.3g} C^{law['lr']['b']:.3f} (R^2 {law['lr']['r2']:.3f}), "
                f"bs* = {law['bs']['a']:.3g} C^{law['bs']['b']:.3f} (R^2 {law['bs']['r2']:.3f})",
                ["stage", "compute (FLOPs)", "lr*", "batch tokens*"],
                [[s, p["compute"], p["lr"], p["global_batch_tokens"]] for s, p in preds.items()])
    return result


def cli(config: str | None, overrides: list[str]) -> int:
    run_scaling(load_config(ScalingConfig, "mix_scaling", config, overrides))
    return 0
