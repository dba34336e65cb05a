"""Strong-to-weak distillation on CPU: does on-policy distillation beat off-policy alone?

    python -m bench.distill_bench [--seeds 0 1 2] [--off-steps N] [--arm-steps M] [--out runs/bench/distill]

1. data (`train.post.toy.two_digit_addition`): a + b with a, b in 10..99 in 4 phrasings; a held-out
   set of operand pairs never seen by the teacher or the student; the teacher's SFT rows answer in
   thinking mode with a column scratchpad where an early slip compounds ("7+8=15, write 5 carry 1.
   4+3+1=8." -> "85") and in /no_think mode with the bare sum;
2. the teacher: `q3 post sft` of tiny_dense widened to hidden 128 from scratch (cached: trained
   once per `--out`), then `q3 post eval` of its held-out accuracy in both modes and ThinkFollow;
3. per seed: `q3 post distill phase=off_policy` of a hidden-32 student from scratch for N steps on
   the teacher's greedy replies to the prompts in both modes (the first seed generates
   `teacher_data.jsonl`, the others reuse it); from that checkpoint two arms for M more steps at
   the same batch, learning rate and schedule: (a) `phase=off_policy` continued on the same
   teacher data, (b) `phase=on_policy` (the student samples, per-token reverse KL to the teacher
   over the full vocabulary); held-out greedy accuracy, sampled pass@1 and the student's reverse
   KL to the teacher at the start, every `--eval-every` steps and at the end;
4. `q3 post eval evals=[thinkfollow]` of both final students (mode following, the report's
   ThinkFollow: multi-turn dialogues with random flags).

Every step is the real command a user types. Figures: `<out>/distill_bench.json`; plots
`distill_curves.png` (held-out greedy accuracy, per-mode greedy accuracy and KL to the teacher vs
step, per seed and arm) and `distill_train.png` (the training divergence / loss per step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.post_bench import q3  # a `q3` command in a child process, its wall time

ROOT = Path(__file__).resolve().parents[1]
TEACHER_MODEL = "{num_layers: 4, hidden_size: 128, ffn_hidden_size: 256, num_attention_heads: 4, num_query_groups: 2, kv_channels: 32}"
STUDENT_MODEL = "{hidden_size: 32, ffn_hidden_size: 64, num_attention_heads: 2, num_query_groups: 1, kv_channels: 16}"
TEACHER = ["model=tiny_dense", "load=null", f"model_overrides={TEACHER_MODEL}", "seq_length=128",
           "micro_batch_size=8", "global_batch_size=8", "optim.lr=3e-3", "optim.min_lr=3e-4", "tensorboard=false",
           "log_interval=25", "valid_fraction=0.02"]
# both phases: the same student length, batch (16 sequences: packed teacher rows off-policy, one
# sampled reply each on-policy), reply limit and evaluation
COMMON = ["--config", "distill", "seq_length=64", "micro_batch_size=16", "max_tokens=48", "tensorboard=false",
          "log_interval=5", "eval_k=1"]
METRICS = ("greedy_accuracy", "greedy_accuracy/think", "greedy_accuracy/no_think", "pass@1", "kl_to_teacher")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Written atomically and only when changed: several bench processes (one per seed) may share `--out`."""
    from q3.atomic import atomic_write_text

    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def teacher_data(out: Path) -> Path | None:
    """The teacher's replies written by an earlier off-policy run of this bench (greedy, so the same
    for every seed): generated once, reused by the other seeds."""
    done = sorted(out.glob("off_seed*/teacher_data.json"))
    return done[0].with_suffix(".jsonl") if done else None


def result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def curve(ev: dict, steps: int, offset: int = 0) -> list[tuple[int, dict]]:
    """[(step, eval)] from a result's eval ("start", "step_N", "end"), steps shifted by `offset`."""
    pts = {offset: ev["start"]} if "start" in ev else {}
    pts |= {offset + int(k[5:]): v for k, v in ev.items() if k.startswith("step_")}
    if "end" in ev:
        pts[offset + steps] = ev["end"]
    return sorted(pts.items())


def eval_model(load: Path, held: Path, out: Path, *extra: str) -> dict:
    if not (out / "eval.json").exists():
        q3("post", "eval", f"load={load}", f"pairs={held}", f"out={out}", *extra)
    return json.loads((out / "eval.json").read_text())


def teacher_report(teacher: Path, held: Path, out: Path) -> dict:
    """Greedy held-out accuracy of the teacher in each mode, and its ThinkFollow."""
    acc = {}
    for mode in ("think", "no_think"):
        ev = eval_model(teacher, held, out / f"eval_{mode}", "evals=[verifiable]", f"mode={mode}", "k=1",
                        "temperature=0.0", "max_tokens=48", "limit=200")
        acc[mode] = ev["verifiable"]["all"]["pass@1"]
    tf = eval_model(teacher, held, out / "eval_thinkfollow", "evals=[thinkfollow]", "max_tokens=48", "limit=100")
    return {"greedy_accuracy": acc, "thinkfollow": tf["thinkfollow"]}


def thinkfollow(run: Path, held: Path) -> dict:
    tf = eval_model(run, held, run / "thinkfollow", "evals=[thinkfollow]", "max_tokens=48", "limit=100")["thinkfollow"]
    return {k: tf[k] for k in ("accuracy", "think_ok", "no_think_ok", "think_n", "no_think_n")}


def spread(xs: list[float]) -> dict:
    return {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}


def plot(curves: dict, train: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"off_policy": "tab:blue", "on_policy": "tab:red", "phase1": "tab:grey"}
    styles = ["-", "--", ":", "-."]
    titles = {"greedy_accuracy": "held-out greedy accuracy (mode drawn per item)",
              "greedy_accuracy/think": "held-out greedy accuracy, /think items",
              "greedy_accuracy/no_think": "held-out greedy accuracy, /no_think items",
              "kl_to_teacher": "reverse KL(student || teacher) per token, held-out"}
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
    for ax, key in zip(axes, titles, strict=True):
        for si, (seed, arms) in enumerate(curves.items()):
            for arm, pts in arms.items():
                pts = [(s, e[key]) for s, e in pts if key in e]
                ax.plot([p for p, _ in pts], [v for _, v in pts], styles[si % 4], marker="o", ms=3, color=colors[arm],
                        label=f"{arm} seed {seed}")
        ax.set_title(titles[key], fontsize=9)
        ax.set_xlabel("optimizer step (phase 1 from scratch, then the arm)")
        if key != "kl_to_teacher":
            ax.set_ylim(-0.02, 1.02)
        else:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "distill_curves.png", dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for si, (seed, arms) in enumerate(train.items()):
        for ax, (arm, key) in zip(axes, (("off_policy", "loss"), ("on_policy", "distill/reverse_kl")), strict=True):
            rows = [r for r in arms[arm] if key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], styles[si % 4], color=colors[arm],
                    label=f"seed {seed}")
    axes[0].set_title("off-policy continued: SFT loss on teacher replies (nats/token)", fontsize=9)
    axes[1].set_title("on-policy: reverse KL on the student's own samples (nats/token)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("arm step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "distill_train.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher-steps", type=int, default=400)
    ap.add_argument("--off-steps", type=int, default=100, help="N: off-policy steps from scratch (shared start)")
    ap.add_argument("--arm-steps", type=int, default=40, help="M: steps of each arm from the N-step checkpoint")
    ap.add_argument("--eval-every", type=int, default=10, help="held-out eval interval of the arms")
    ap.add_argument("--off-eval-every", type=int, default=0, help="... of the shared phase 1 (0: start and end)")
    ap.add_argument("--batch", type=int, default=16, help="sequences (off) / sampled replies (on) per step")
    ap.add_argument("--lr", type=float, default=1e-3, help="both arms, constant")
    ap.add_argument("--off-lr", type=float, default=3e-3, help="phase 1 (from scratch), constant")
    ap.add_argument("--prompts", type=int, default=512, help="distillation prompts (each answered in both modes)")
    ap.add_argument("--teacher", default=None, help="an existing teacher checkpoint (default: train one in <out>/teacher)")
    ap.add_argument("--eval-limit", type=int, default=100, help="held-out items per evaluation")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "distill"))
    a = ap.parse_args()
    out = Path(a.out)
    from train.post.toy import two_digit_addition

    prompts, held, rows = two_digit_addition(seed=0, n_prompts=a.prompts, n_held=200)
    d = out / "data"
    paths = {name: write_jsonl(d / f"{name}.jsonl", r) for name, r in
             (("prompts", prompts), ("held", held), ("teacher_sft", rows))}
    times: dict[str, float] = {}
    teacher = Path(a.teacher) if a.teacher else out / "teacher"
    if not a.teacher and not (teacher / "result.json").exists():
        times["teacher"] = q3("post", "sft", *TEACHER, f"data=[{paths['teacher_sft']}]",
                              f"train_steps={a.teacher_steps}", f"out_dir={teacher}")
    summary: dict = {"seeds": a.seeds, "off_steps": a.off_steps, "arm_steps": a.arm_steps, "batch": a.batch,
                     "lr": a.lr, "off_lr": a.off_lr, "teacher_steps": a.teacher_steps, "prompts": a.prompts,
                     "teacher_checkpoint": str(teacher), "eval_limit": a.eval_limit,
                     "teacher": teacher_report(teacher, paths["held"], out / "teacher_eval"), "wall_s": times}
    t_data = teacher_data(out)
    curves: dict = {}
    train: dict = {}
    per_seed: dict = {}
    for seed in a.seeds:
        tag = f"seed{seed}"
        base = [*COMMON, f"teacher={teacher}", f"prompts=[{paths['prompts']}]", f"eval_pairs={paths['held']}",
                f"seed={seed}", f"eval_limit={a.eval_limit}"]
        off = out / f"off_{tag}"
        if not (off / "result.json").exists():
            reuse = [f"teacher_data={t_data}"] if t_data else []
            times[f"off_{tag}"] = q3("post", "distill", *base, "phase=off_policy", "load=null", "model=tiny_dense",
                                     f"eval_interval={a.off_eval_every}",
                                     f"model_overrides={STUDENT_MODEL}", f"global_batch_size={a.batch}",
                                     f"train_steps={a.off_steps}", f"optim.lr={a.off_lr}", f"optim.min_lr={a.off_lr}",
                                     f"out_dir={off}", *reuse)
        t_data = t_data or Path(result(off)["teacher_data"])
        arms = {"off_policy": out / f"arm_off_{tag}", "on_policy": out / f"arm_on_{tag}"}
        lr = [f"optim.lr={a.lr}", f"optim.min_lr={a.lr}", f"load={off}", f"eval_interval={a.eval_every}"]
        if not (arms["off_policy"] / "result.json").exists():
            # model= restated: the off-policy phase takes the config's model over load's (see RESULTS.md)
            times[f"arm_off_{tag}"] = q3("post", "distill", *base, *lr, "phase=off_policy", f"teacher_data={t_data}",
                                         "model=tiny_dense", f"model_overrides={STUDENT_MODEL}",
                                         f"global_batch_size={a.batch}", f"train_steps={a.arm_steps}",
                                         f"out_dir={arms['off_policy']}")
        if not (arms["on_policy"] / "result.json").exists():
            times[f"arm_on_{tag}"] = q3("post", "distill", *base, *lr, "phase=on_policy", f"prompts_per_step={a.batch}",
                                        "samples_per_prompt=1", f"rollout_steps={a.arm_steps}",
                                        f"out_dir={arms['on_policy']}")
        curves[seed] = {"phase1": curve(result(off)["eval"], a.off_steps)}
        curves[seed] |= {arm: curve(result(run)["eval"], a.arm_steps, a.off_steps) for arm, run in arms.items()}
        train[seed] = {arm: metrics(run) for arm, run in arms.items()}
        per_seed[seed] = {"start": result(off)["eval"]["end"],
                          **{arm: {"end": result(run)["eval"]["end"], "thinkfollow": thinkfollow(run, paths["held"])}
                             for arm, run in arms.items()}}
    summary["teacher_data"] = str(t_data)
    summary["teacher_data_stats"] = json.loads(t_data.with_suffix(".json").read_text()) if t_data else None
    summary["per_seed"] = per_seed
    summary["curves"] = {s: {arm: [[st, e] for st, e in pts] for arm, pts in arms.items()} for s, arms in curves.items()}
    summary["table"] = {arm: {k: spread([per_seed[s][arm]["end"][k] for s in a.seeds])
                              for k in METRICS if k in per_seed[a.seeds[0]][arm]["end"]}
                        for arm in ("off_policy", "on_policy")}
    summary["table"]["start"] = {k: spread([per_seed[s]["start"][k] for s in a.seeds])
                                 for k in METRICS if k in per_seed[a.seeds[0]]["start"]}
    for arm in ("off_policy", "on_policy"):
        summary["table"][arm]["thinkfollow"] = spread([per_seed[s][arm]["thinkfollow"]["accuracy"] for s in a.seeds])
    summary["wall_s"] = {k: round(v, 1) for k, v in times.items()}
    plot(curves, train, out)
    (out / "distill_bench.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(json.dumps(summary["table"], indent=1, sort_keys=True))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"distill_bench: {time.time() - t0:.0f} s")
