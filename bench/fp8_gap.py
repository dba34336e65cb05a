"""Emulated-FP8 loss gap to the high-precision baseline on the tiny dense and MoE models (CPU).

Each model is pretrained for the same number of steps on the dev data (stdlib code + prose,
`train.devdata`) with the same seed and data order, once in the baseline precision (fp32
parameters and GEMMs: the CPU's native dtype; bf16 on CPU would measure bf16 emulation, not
FP8) and once per emulated FP8 recipe (`model_overrides.fp8_emulation`, kernels/fp8_emulation.py:
inputs/weights E4M3, grad-outputs E5M2 for HYBRID; TE's default format per recipe). Reports the
final loss (mean of the last k logged steps) and the gap to the baseline, and draws the curves.
`seed2` is the baseline with another seed (init and data order): its gap is the noise floor that
an FP8 gap has to be read against.

    python -m bench.fp8_gap [--steps 150] [--last 20] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# seed2: the baseline from another init seed -- its "gap" is the run-to-run noise floor
VARIANTS = ("baseline", "delayed", "current", "blockwise", "seed2")
MODELS = ("tiny_dense", "tiny_moe")


def launch(model: str, variant: str, manifest: Path, args, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "train.pretrain", f"model={model}", f"manifest={manifest}",
            f"seq_length={args.seq}", f"micro_batch_size={args.gbs}", f"global_batch_size={args.gbs}",
            f"train_steps={args.steps}",
            f"out_dir={out}", "tensorboard=false", "log_interval=1", "guard.enabled=false",
            "save=false", "eval_batches=0", f"seed={1235 if variant == 'seed2' else 1234}"]
    if variant not in ("baseline", "seed2"):
        args.append(f"model_overrides.fp8_emulation={variant}")
    with open(out.with_suffix(".log"), "w") as log:    # the child keeps its own copy of the fd
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["loss"] for r in rows if "loss" in r and "step" in r]


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MODELS), figsize=(11, 4))
    for ax, model in zip(axes, MODELS, strict=True):
        for variant, ys in curves[model].items():
            k = 10   # moving average: the per-step loss of 8 sequences is noisy
            sm = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
            ax.plot(range(1, len(sm) + 1), sm, label=variant, lw=1.2)
        ax.set_title(f"{model}: loss (10-step mean)")
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--gbs", type=int, default=4, help="sequences per step (one microbatch)")
    ap.add_argument("--last", type=int, default=20, help="final loss = mean of the last k steps")
    ap.add_argument("--parallel", type=int, default=2, help="runs at once (one core each)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--record", action="store_true", help="write bench/results/fp8_gap.{json,png}")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--reuse", action="store_true", help="keep finished runs of the same --steps")
    args = ap.parse_args()
    from train.devdata import build_dev_data

    manifest = build_dev_data(ROOT / "data" / "bench_devdata", max_files=40)["S1"]
    runs = ROOT / "data" / "bench_fp8_gap"
    if not args.reuse:
        shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    jobs = [(m, v) for m in args.models.split(",") for v in variants
            if not (args.reuse and (runs / f"{m}-{v}" / "metrics.jsonl").exists()
                    and len(losses(runs / f"{m}-{v}")) == args.steps)]
    t0, pending, active = time.time(), list(jobs), []
    while pending or active:
        while pending and len(active) < args.parallel:
            m, v = pending.pop(0)
            active.append((m, v, launch(m, v, manifest, args, runs / f"{m}-{v}")))
        time.sleep(2)
        for job in [a for a in active if a[2].poll() is not None]:
            active.remove(job)
            m, v, p = job
            if p.returncode:
                sys.exit(f"{m} {v} failed (exit {p.returncode}); see {runs / f'{m}-{v}.log'}")
            print(f"{m:10s} {v:9s} done at {time.time() - t0:5.0f} s", flush=True)
    curves = {m: {v: losses(runs / f"{m}-{v}") for v in variants} for m in args.models.split(",")}
    table = {}
    for m, by in curves.items():
        base = sum(by["baseline"][-args.last:]) / args.last
        table[m] = {v: {"final_loss": round(sum(ys[-args.last:]) / args.last, 4),
                        "gap": round(sum(ys[-args.last:]) / args.last - base, 4),
                        "rel_gap_pct": round(100 * (sum(ys[-args.last:]) / args.last - base) / base, 2),
                        "max_abs_step_diff": round(max(abs(a - b) for a, b in zip(ys, by["baseline"], strict=True)), 4)}
                    for v, ys in by.items()}
    print(f"\n{args.steps} steps, final loss = mean of the last {args.last}; gap = FP8 - baseline (fp32)")
    print("| model | recipe | final loss | gap | gap % | max per-step diff |\n|---|---|---:|---:|---:|---:|")
    for m, rows in table.items():
        for v, r in rows.items():
            print(f"| {m} | {v} | {r['final_loss']:.4f} | {r['gap']:+.4f} | {r['rel_gap_pct']:+.2f}% "
                  f"| {r['max_abs_step_diff']:.4f} |")
    res = {"steps": args.steps, "last": args.last, "seconds": round(time.time() - t0),
           "baseline_dtype": "float32", "tokens_per_step": args.gbs * args.seq, "results": table}
    print(json.dumps(res))
    if args.record:
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "fp8_gap.json").write_text(json.dumps({**res, "curves": curves}) + "\n")
        if set(MODELS) <= set(curves):
            plot(curves, out / "fp8_gap.png")


if __name__ == "__main__":
    main()
