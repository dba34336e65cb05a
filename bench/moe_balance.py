"""Global-batch vs micro-batch load balancing: do experts specialise by domain?

Trains the tiny Qwen3-MoE twice on the same code+prose blend, identical except for
`moe_router_load_balancing_type`: `global_aux_loss` (Qwen3: counts over the whole global batch,
all microbatches and DP ranks) vs `aux_loss` (per micro-batch). Micro-batch = 1 sequence, so a
micro-batch is one domain and micro-batch balancing pushes every domain to spread over all
experts. Then measures specialisation (total-variation distance between the experts used by
code and by prose, `train.router_analysis`) on held-out windows.

    python -m bench.moe_balance [--steps 60] [--coeff 0.1] [--record]
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


def train(kind: str, manifest: Path, steps: int, coeff: float, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "train.pretrain", "model=tiny_moe", f"manifest={manifest}",
                    "seq_length=64", "micro_batch_size=1", "global_batch_size=8", f"train_steps={steps}",
                    f"out_dir={out}", "tensorboard=false", "log_interval=100", "guard.enabled=false",
                    f"model_overrides.moe_router_load_balancing_type={kind}",
                    f"model_overrides.moe_aux_loss_coeff={coeff}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def analyse(manifest: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0"}
    data = manifest.parent
    p = subprocess.run([sys.executable, "-m", "train.router_analysis", str(out), f"code={data}/tokens/code",
                        f"prose={data}/tokens/prose", "--seq", "64", "--windows", "16"],
                       cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    res["final_loss"] = sum(r["loss"] for r in rows[-5:]) / 5
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--coeff", type=float, default=0.1)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--analyse-only", action="store_true", help="reuse the runs under data/bench_moe_balance")
    args = ap.parse_args()
    from train.devdata import build_dev_data

    manifest = build_dev_data(ROOT / "data" / "bench_devdata", max_files=40)["S1"]
    results = {}
    runs = ROOT / "data" / "bench_moe_balance"
    kinds = ("global_aux_loss", "aux_loss")          # both trainings run side by side (one thread each)
    if not args.analyse_only:
        shutil.rmtree(runs, ignore_errors=True)
        procs = {k: train(k, manifest, args.steps, args.coeff, runs / k) for k in kinds}
        for k, p in procs.items():
            if p.wait() != 0:
                raise SystemExit(f"training with {k} failed")
    for k in kinds:
        results[k] = analyse(manifest, runs / k)
    print(json.dumps(results, indent=2))
    if args.record:
        res = ROOT / "bench" / "RESULTS.md"
        text = res.read_text() if res.exists() else "# Benchmark results\n"
        if "## Trainer: global vs micro-batch load balancing" not in text:
            text += ("\n## Trainer: global vs micro-batch load balancing (moe_balance)\n\n"
                     "Tiny Qwen3-MoE (8 experts, top-2), micro-batch 1 x seq 64, global batch 8, LBL coeff "
                     f"{args.coeff}; specialisation = TV distance between the experts code and prose use "
                     "(mean over layers; 0 = same experts). Command: `python -m bench.moe_balance --record`\n\n"
                     "| date | steps | balancing | specialisation (TV) | load max/mean | final loss |\n"
                     "|---|---|---|---|---|---|\n")
        for kind, r in results.items():
            text += (f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.steps} | {kind} | {r['specialisation_tv']:.3f} | "
                     f"{r['load_max_over_mean']:.2f} | {r['final_loss']:.3f} |\n")
        res.write_text(text)


if __name__ == "__main__":
    main()
