"""GRPO learns on CPU: a tiny Qwen3 from ~50% right to >= 90% greedy accuracy on held-out queries.

    python -m bench.grpo_bench [--steps 100] [--seeds 0 1 2] [--out runs/bench/grpo]

1. data (`train.post.toy`): single-digit addition in 4 phrasings, no-think mode; RL on phrasings
   0-2, held-out eval on phrasing 3 (never sampled by RL); a noisy cold-start SFT set (half the
   answers off by one, 30% of replies "Answer: N" instead of "N"; 4 noisy copies of every query);
2. cold-start: `q3 post sft` of tiny_dense from scratch on the noisy set (shared by every run);
3. `q3 post grpo` with the `exact` verifier for `--steps` rollout steps per seed (16 queries x 8
   samples, 2 minibatch updates each, clip-higher, dynamic sampling, lr 3e-4 cosine to 3e-5),
   held-out greedy accuracy and pass@8 every `--eval-every` steps;
4. general RL: `q3 post rl` with a mix of the verifier (1.0) and a length reward (answer <= 1 word,
   0.5) from the same cold start; compliance = share of held-out replies that are the bare number.

Every step is the real command a user types. Figures: `<out>/grpo_bench.json`, plots
`grpo_curves.png` (reward, zero-std share, entropy, response length vs step, per seed) and
`grpo_heldout.png` (greedy accuracy and pass@8 vs step).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.post_bench import q3  # a `q3` command in a child process, its wall time

ROOT = Path(__file__).resolve().parents[1]
SFT = ["model=tiny_dense", "load=null", "seq_length=128", "micro_batch_size=16", "global_batch_size=16",
       "optim.lr=3e-3", "optim.min_lr=3e-4", "tensorboard=false", "log_interval=25", "valid_fraction=0.05"]
RL = ["mode=no_think", "prompts_per_step=16", "group_size=8", "updates_per_batch=2", "micro_batch_size=16",
      "max_tokens=12", "optim.lr=3e-4", "optim.min_lr=3e-5", "optim.weight_decay=0", "schedule.decay=cosine",
      "tensorboard=false", "log_interval=10",
      "save_interval=25"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def compliance(load: Path, held: list[dict], k: int = 4, seed: int = 0) -> dict:
    """Held-out replies sampled from a checkpoint: share that are the bare number, and pass@1."""
    from synth.verifiers import verify_item
    from train.generate import load_lm
    from train.post.evals import EvalConfig, Evaluator, flag

    lm, tok, _ = load_lm(load)
    ev = Evaluator(lm.engine, tok, EvalConfig(load=str(load), pairs="-", max_tokens=12, temperature=1.0))
    dialogues = [[{"role": "user", "content": it["query"] + flag("no_think")}] for it in held]
    replies = [r for group in ev.replies(dialogues, [False] * len(held), k, seed) for r in group]
    items = [it for it in held for _ in range(k)]
    bare = sum(len(r.answer.split()) <= 1 for r in replies)
    passed = sum(verify_item(r.text, it).passed for r, it in zip(replies, items, strict=True))
    return {"bare_share": bare / len(replies), "pass@1": passed / len(replies), "replies": len(replies)}


def plot(runs: dict[int, list[dict]], evals: dict[int, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("rl/reward_mean_drawn", "reward (all drawn samples)"), ("rl/zero_std_share", "zero-variance group share"),
              ("rl/entropy", "entropy of sampled tokens (nats)"), ("rl/response_length", "response length (tokens)")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for seed, rows in runs.items():
            first = {}
            for r in rows:                                   # one point per rollout step
                first.setdefault(r["rl/iteration"], r[key])
            ax.plot(list(first), list(first.values()), label=f"seed {seed}", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("rollout step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "grpo_curves.png", dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for seed, ev in evals.items():
        pts = sorted((0 if k == "start" else int(k.split("_")[1]) if k.startswith("iter_") else None, v)
                     for k, v in ev.items() if k == "start" or k.startswith("iter_"))
        pts += [(max(runs[seed][-1]["rl/iteration"], 0), ev["end"])] if "end" in ev else []
        for ax, key in zip(axes, ("greedy_accuracy", "pass@8"), strict=True):
            ax.plot([p for p, _ in pts], [v[key] for _, v in pts], marker="o", label=f"seed {seed}")
    for ax, title in zip(axes, ("held-out greedy accuracy", "held-out pass@8"), strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("rollout step")
        ax.set_ylim(0, 1.02)
    axes[0].axhline(0.9, color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "grpo_heldout.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="GRPO rollout steps per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--sft-only", action="store_true", help="stop after the cold start")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--rl-steps", type=int, default=40, help="general-RL (length reward) rollout steps; 0: skip")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "grpo"))
    a = ap.parse_args()
    out = Path(a.out)
    from train.post.toy import addition_task

    rl, held, sft = addition_task(noise=0.5, verbose=0.3, copies=4)
    d = out / "data"
    paths = {name: write_jsonl(d / f"{name}.jsonl", rows) for name, rows in (("rl", rl), ("held", held), ("sft", sft))}
    times: dict[str, float] = {}
    if not (out / "sft" / "result.json").exists():
        times["sft"] = q3("post", "sft", *SFT, f"data=[{paths['sft']}]", f"train_steps={a.sft_steps}", f"out_dir={out / 'sft'}")
    if a.sft_only:
        return
    runs, evals = {}, {}
    for seed in a.seeds:
        run = out / f"grpo_seed{seed}"
        if not (run / "result.json").exists():
            times[f"grpo_seed{seed}"] = q3("post", "grpo", *RL, f"load={out / 'sft'}", f"pairs=[{paths['rl']}]",
                                           f"eval_pairs={paths['held']}", "eval_limit=100", "eval_k=8",
                                           f"eval_interval={a.eval_every}", f"rollout_steps={a.steps}", f"seed={seed}",
                                           f"out_dir={run}")
        runs[seed] = metrics(run)
        evals[seed] = json.loads((run / "result.json").read_text())["eval"]
    summary: dict = {"steps": a.steps, "seeds": a.seeds, "sft_steps": a.sft_steps, "wall_s": times,
                     "heldout": {s: {"start": e["start"], "end": e["end"]} for s, e in evals.items()}}
    if a.rl_steps:
        rewards = out / "data" / "brevity.yaml"
        rewards.write_text("default:\n  - {type: verifier, weight: 1.0}\n"
                           "  - {type: length, weight: 0.5, unit: words, scope: answer, max: 1, window: 1}\n")
        run = out / "rl_brevity"
        if not (run / "result.json").exists():
            times["rl_brevity"] = q3("post", "rl", *RL, f"load={out / 'sft'}", f"rewards={rewards}", f"pairs=[{paths['rl']}]",
                                     f"rollout_steps={a.rl_steps}", "seed=0", f"out_dir={run}")
        summary["general_rl"] = {"before": compliance(out / "sft", held), "after": compliance(run, held),
                                 "steps": a.rl_steps}
    plot(runs, evals, out)
    (out / "grpo_bench.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
