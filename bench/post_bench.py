"""Thinking-mode fusion on a tiny Qwen3, from a pretrained S3 checkpoint, measured like the report.

    python -m bench.post_bench [--load runs/demo/s3] [--steps 150] [--out runs/bench/post]

1. start: `--load` (e.g. the demo's S3 checkpoint); without it, a quick S1 -> S2 -> S3 on the dev
   data (`train.devdata`, tiny_moe), so the bench runs on a fresh clone;
2. data: `q3 synth verifiable` pairs (math + logic) -> `q3 post prepare` -> fusion.jsonl (think and
   no-think samples, flags in user/system turns, multi-turn with several flags, budget samples);
3. `q3 post sft --config fusion` for `--steps` steps;
4. `q3 post eval` on held-out pairs: ThinkFollow (multi-turn, random flags, soft switch) and
   thinking-budget compliance; the loss curve as a PNG beside the JSON.

Every step is the real command a user types; the figures go to `<out>/post_bench.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def q3(*args: str) -> float:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "q3.cli", *args], cwd=ROOT, text=True)
    if p.returncode:
        sys.exit(f"q3 {' '.join(args[:2])} failed with {p.returncode}")
    return time.time() - t0


def quick_s3(out: Path) -> Path:
    """S1 -> S2 -> S3 of tiny_moe on the dev data (a few minutes on 2 cores)."""
    from train.devdata import build_dev_data

    m = build_dev_data(out / "devdata", max_files=40)
    prev = None
    for stage, extra in (("s1", ["train_steps=40"]), ("s2", ["train_steps=20"]), ("s3", ["train_steps=10"])):
        args = ["train", "pretrain", "--config", f"demo_{stage}", f"manifest={m[stage.upper()]}",
                f"out_dir={out / stage}", "tensorboard=false", "log_interval=10", *extra]
        if prev:
            args.append(f"load={prev}")
        q3(*args)
        prev = out / stage
    return out / "s3"


def plot_loss(metrics: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss (assistant tokens)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("thinking-mode fusion SFT, tiny Qwen3")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", default=None, help="start checkpoint (default: a quick dev-data S1->S3)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--pairs", type=int, default=600)
    ap.add_argument("--limit", type=int, default=200, help="held-out dialogues per eval")
    ap.add_argument("--multi-turn", type=float, default=0.6,
                    help="share of multi-turn fusion dialogues (where mode following is hard)")
    ap.add_argument("--copies", type=int, default=4, help="fusion passes over the cold-start rows")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "post"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    t0 = time.time()
    load = Path(a.load) if a.load else quick_s3(out / "pretrain")
    times["pretrain"] = 0.0 if a.load else round(time.time() - t0, 1)
    times["pairs"] = q3("synth", "verifiable", f"n={a.pairs}", "seed=11", "domains={math: 0.6, logic: 0.4}",
                        f"out={out / 'rl'}")
    times["prepare"] = q3("post", "prepare", f"pairs={out / 'rl' / 'pairs.jsonl'}", f"out={out / 'data'}",
                          "held_out=0.3", f"fusion_copies={a.copies}",
                          f"fusion={{budget: 0.15, budget_tokens: [4, 8], multi_turn: {a.multi_turn}}}")
    run = out / "fusion"
    times["sft"] = q3("post", "sft", "--config", "fusion", f"load={load}", f"data=[{out / 'data' / 'fusion.jsonl'}]",
                      f"out_dir={run}", f"train_steps={a.steps}", "tensorboard=false")
    times["eval"] = q3("post", "eval", f"load={run}", f"pairs={out / 'data' / 'eval_pairs.jsonl'}",
                       f"out={out / 'eval'}", f"limit={a.limit}", "evals=[thinkfollow, budget]", "max_tokens=24",
                       "budget=6")
    ev = json.loads((out / "eval" / "eval.json").read_text())
    sft = json.loads((run / "result.json").read_text())
    plot_loss(run / "metrics.jsonl", out / "fusion_loss.png")
    res = {"load": str(load), "steps": a.steps, "multi_turn": a.multi_turn, "copies": a.copies, "sft_eval": sft["eval"], "thinkfollow": ev["thinkfollow"],
           "budget": ev["budget"], "seconds": {k: round(v, 1) for k, v in times.items()},
           "plot": str(out / "fusion_loss.png")}
    (out / "post_bench.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
