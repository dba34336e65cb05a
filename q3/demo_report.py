"""The `q3 demo` report: one line of figures per step, read from the files each step committed
(q3/ imports no area), PNG plots of the training curves, and REPORT.md / report.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from q3.log import get_logger, print_table
from q3.paths import data_dir

log = get_logger("q3.demo")

PRETRAIN = ("s1", "s2", "s3")
SFT = ("cold-start", "fusion", "distill-off")     # stages whose metrics.jsonl `loss` is a cross-entropy


@dataclass
class Row:
    step: str
    what: str
    status: str          # ok | done earlier | skipped | FAILED (rc=N) | not run | interrupted
    seconds: float
    result: str
    log: str = ""


# ------------------------------------------------------------------------------- reading outputs
def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    got = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
    return [s for s, _ in got], [v for _, v in got]


def _ends(rows: list[dict], key: str, n: int = 2) -> tuple[float, float] | None:
    """Mean of the first and of the last `n` values of `key` (single rollout steps are noisy)."""
    _, v = _series(rows, key)
    if not v:
        return None
    n = max(1, min(n, len(v) // 2 or 1))
    return sum(v[:n]) / n, sum(v[-n:]) / n


def _mean(rows: list[dict], key: str) -> float | None:
    _, v = _series(rows, key)
    return sum(v) / len(v) if v else None


def _f(x, nd: int = 3) -> str:
    return "?" if x is None else f"{x:.{nd}f}"


def _eval(run: Path) -> str:
    rows = _rows(run / "eval.jsonl")
    # a rerun resumes a finished stage and appends only {"step", "end"}: "start" is in the first row
    start = next((r["start"] for r in rows if "start" in r), None)
    if not rows or start is None or "end" not in rows[-1]:
        return ""
    return f"held-out loss {start:.3f} -> {rows[-1]['end']:.3f} after {rows[-1]['step']} steps"


def _held_out(ev: dict, keys: tuple[str, ...]) -> str:
    """'greedy 0.00 -> 0.05, KL 3.1 -> 2.0' from a result.json eval {start, end}."""
    start, end = ev.get("start") or {}, ev.get("end") or {}
    parts = [f"{k.replace('_accuracy', '')} {_f(start.get(k), 2)} -> {_f(end.get(k), 2)}"
             for k in keys if k in start or k in end]
    return ", ".join(parts)


def summarise(name: str, data: Path, out: Path) -> str:
    """One line of figures per step, read from the files the step committed (no area imports)."""
    if name == "sample":
        rows = (data_dir() / "sample" / "docs.jsonl")
        return f"{sum(1 for _ in rows.open()):,} documents" if rows.exists() else ""
    if name == "pipeline":
        st = _json(data / "pipeline" / "stats.json")
        langs = len(st.get("kept_by_lang", {}))
        return st and f"{st['input_docs']:,} in, {st['kept_docs']:,} kept in {langs} languages, {st['rejected_docs']:,} rejected"
    if name == "dedup":
        st = _json(data / "dedup" / "stats.json")
        return st and (f"{st['docs_in']:,} in, {st['exact_duplicate']:,} exact + {st['near_duplicate']:,} near "
                       f"duplicates removed ({st['bytes_removed']:,} bytes)")
    if name == "rl-pairs":
        f = data / "rl" / "pairs.jsonl"
        return f.exists() and f"{sum(1 for _ in f.open()):,} query-verifier pairs"
    if name == "post-data":
        st = _json(data / "post" / "_Q3_SUCCESS")
        return st and (f"{st['coldstart']:,} cold-start rows, {st['fusion']:,} fusion rows, "
                       f"{st['held_out']:,} held-out pairs")
    if name == "decontam":
        st = _json(data / "decontam" / "stats.json")
        rejected = sum(st.get("rejected", {}).values())
        short = st.get("eval_items_too_short", 0)
        short = sum(short.values()) if isinstance(short, dict) else short      # per benchmark
        return st and (f"{st['docs_in']:,} in, {rejected:,} rejected as overlapping the held-out eval pairs "
                       f"({st['ngram_index']:,} eval n-grams, {short} items too short)")
    if name == "label":
        st = _json(data / "labeling" / "labeled" / "distributions.json")
        doms: dict[str, int] = {}
        for v in st.get("per_lang", {}).values():
            for d, n in v.get("domains", {}).items():
                doms[d] = doms.get(d, 0) + n
        top = ", ".join(f"{d} {n}" for d, n in sorted(doms.items(), key=lambda x: -x[1])[:3])
        return st and f"{st['docs']:,} documents labelled; top domains: {top}"
    if name == "tokenize":
        ds = _json(data / "mix" / "tokens" / "_Q3_SUCCESS").get("datasets", {})
        return ds and f"{len(ds)} datasets, {sum(d['n_tokens'] for d in ds.values()):,} tokens"
    if name == "manifests":
        import yaml

        parts = []
        for p in sorted((data / "mix" / "manifests").glob("demo_s?.yaml")):
            empty = (yaml.safe_load(p.read_text()) or {}).get("provenance", {}).get("empty_datasets", [])
            parts.append(p.name + (f" (WARNING: {len(empty)} dataset(s) with no tokens, weight 0: "
                                   f"{', '.join(empty)})" if empty else ""))
        return ", ".join(parts)
    if name in PRETRAIN:
        return _eval(out / name)
    if name in ("cold-start", "fusion"):
        r = _json(out / name / "result.json")
        ev = r.get("eval", {})
        return r and (f"{r['data']['samples']:,} trained turns in {r['packing']['sequences']:,} packed sequences; "
                      f"held-out loss {_f(ev.get('start'))} -> {_f(ev.get('end'))}")
    if name == "rl-query":
        f = data / "rl-query" / "pairs.jsonl"
        return f.exists() and f"{sum(1 for _ in f.open()):,} RL query-verifier pairs (math, logic)"
    if name in ("grpo", "rl"):
        r = _json(out / name / "result.json")
        rows = _rows(out / name / "metrics.jsonl")
        trained = [x for x in rows if x.get("rl/overlong_share", 0) < 1]   # see plot_post_curves
        rew, ent = _ends(rows, "rl/reward_mean"), _ends(trained, "rl/entropy")
        zero, cut = _mean(rows, "rl/zero_std_share"), _mean(rows, "rl/overlong_share")
        # zero-variance groups and replies cut at max_tokens carry no gradient: say how many there were
        line = r and (f"{r['iterations']} rollout steps, {r['steps']} updates; reward {_f(rew and rew[0])} -> "
                      f"{_f(rew and rew[1])}, entropy {_f(ent and ent[0], 2)} -> {_f(ent and ent[1], 2)}, "
                      f"zero-variance groups {_f(zero, 2)}, cut at max_tokens {_f(cut, 2)}")
        if name == "rl" and rows:
            tasks = sorted({k.split("/", 2)[2] for r_ in rows for k in r_ if k.startswith("rl/reward/")})
            line += "; per task " + ", ".join(
                f"{t} {_f((e := _ends(rows, f'rl/reward/{t}')) and e[0], 2)} -> {_f(e and e[1], 2)}" for t in tasks)
        held = _held_out(r.get("eval", {}), ("greedy_accuracy", "pass@1"))
        return line and (line + (f"; held-out {held}" if held else ""))
    if name == "export":
        cfg = _json(out / "hf" / "config.json")
        return cfg and f"{cfg['architectures'][0]}, rope_theta {cfg.get('rope_theta', '?')}, at {out / 'hf'}"
    if name in ("post-eval", "distill-eval"):
        r = _json(out / name / "eval.json")
        v, tf, b = r.get("verifiable", {}).get("all", {}), r.get("thinkfollow", {}), r.get("budget", {})
        k = r.get("k", 1)
        parts = ([f"pass@1 {v.get('pass@1', 0):.2f}, pass@{k} {v.get(f'pass@{k}', 0):.2f}"] if v else []) + \
                ([f"ThinkFollow {tf.get('accuracy', 0):.2f}"] if tf else []) + \
                ([f"within budget {b.get('within_budget', 0):.2f}"] if b else [])
        if name == "distill-eval" and tf:
            teacher = _json(out / "post-eval" / "eval.json").get("thinkfollow", {})
            if teacher:
                parts.append(f"teacher ThinkFollow {teacher.get('accuracy', 0):.2f}")
        return r and "; ".join(parts)
    if name == "serve":
        r = _json(out / "serve" / "serve_check.json")
        return r and (f"{r['samples']} replies via the openai client: pass rate {r['pass_rate']:.2f} "
                      f"(q3 post eval pass@1 {_f(r.get('eval_pass_rate'), 2)}), {r['errors']} failed requests")
    if name == "judge-llm":
        from q3.judge_agreement import summary

        return summary(data / "labeling", data / "labeling-llm")
    if name == "synth-llm":
        st = _json(data / "synth-llm" / "final" / "_Q3_SUCCESS")
        return st and f"{st.get('kept', 0)} rows kept, {st.get('requests', 0)} requests to SmolLM2-135M-Instruct"
    if name == "synth":
        st = _json(data / "synth" / "final" / "_Q3_SUCCESS")
        return st and f"{st.get('kept', 0)} rows kept, {st.get('requests', 0)} requests to our model"
    if name in ("distill-off", "distill-on"):        # off: SFT on teacher replies; on: the logit divergence
        key, label = ("loss", "student SFT loss") if name == "distill-off" else ("distill/divergence", "divergence")
        r = _json(out / name / "result.json")
        ends = _ends(_rows(out / name / "metrics.jsonl"), key)
        held = _held_out(r.get("eval", {}), ("kl_to_teacher", "greedy_accuracy"))
        return r and (f"{label} {_f(ends and ends[0])} -> {_f(ends and ends[1])}"
                      + (f"; held-out {held}" if held else ""))
    return ""


# ------------------------------------------------------------------------------- plots
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_training_curves(out: Path, stages: tuple[str, ...] = (*PRETRAIN, *SFT)) -> Path | None:
    """One PNG with the training loss of every stage that logged metrics (pretraining, then the SFT
    stages), for the report. None when there is nothing to plot or no matplotlib."""
    curves = {}
    for name in stages:
        x, y = _series(_rows(out / name / "metrics.jsonl"), "loss")
        if x:
            curves[name] = (x, y)
    plt = _pyplot()
    if not curves or plt is None:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], curves.items(), strict=True):
        ax.plot(x, y)
        ax.set_title(name)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("train loss")
    fig.suptitle("training loss per stage (pretraining: all tokens; SFT: assistant tokens)")
    fig.tight_layout()
    png = out / "training_curves.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def plot_post_curves(out: Path) -> Path | None:
    """Post-training curves: RL reward and entropy (GRPO, general RL) and the on-policy
    distillation divergence, one panel each. None when no such stage logged metrics."""
    panels = [("RL reward (mean of the trained samples)", "rl/reward_mean", ("grpo", "rl")),
              ("entropy of the sampled tokens (nats)", "rl/entropy", ("grpo", "rl")),
              ("on-policy distillation divergence", "distill/divergence", ("distill-on",))]
    drawn = []
    for title, key, stages in panels:
        # a step whose replies were all cut at max_tokens trains on no token (overlong: mask): its
        # entropy is logged as 0, which is no measurement
        lines = {s: _series([r for r in _rows(out / s / "metrics.jsonl")
                             if key != "rl/entropy" or r.get("rl/overlong_share", 0) < 1], key) for s in stages}
        lines = {s: xy for s, xy in lines.items() if xy[0]}
        if lines:
            drawn.append((title, lines))
    plt = _pyplot()
    if not drawn or plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(drawn), figsize=(4.2 * len(drawn), 3.2), squeeze=False)
    for ax, (title, lines) in zip(axes[0], drawn, strict=True):
        for s, (x, y) in lines.items():
            ax.plot(x, y, marker=".", label=s)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "post_training_curves.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


# ------------------------------------------------------------------------------- the report
def write_report(rows: list[Row], out: Path, data: Path) -> Path:
    """REPORT.md (table + plots, the failed step and its log first), report.json; prints the table."""
    print_table("Q3 demo", ["step", "status", "seconds", "result"],
                [(r.step, r.status, round(r.seconds, 1), r.result) for r in rows])
    failed = [r for r in rows if r.status.startswith(("FAILED", "interrupted"))]
    total = sum(r.seconds for r in rows if r.status in ("ok", "done earlier"))
    lines = ["# Q3 demo report", ""]
    for r in failed:
        lines += [f"**Step `{r.step}` {r.status}; its log: `{r.log}`.** Rerun `q3 demo` (same out/data) "
                  "to continue from it.", ""]
    lines += [f"data: `{data}`  ", f"runs: `{out}`  ", f"logs: `{out / 'logs'}`  ",
              f"step markers: `{out / 'steps'}` (a rerun skips the steps marked done; `fresh=true` restarts)  ",
              f"total: {total:.0f} s ({total / 60:.1f} min) over the steps done", "",
              "| step | what | status | seconds | result |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.step} | {r.what} | {r.status} | {r.seconds:.1f} | {r.result} |" for r in rows]
    from q3.report_plots import corpus_plots, html_report, markdown_images

    try:                                   # a plot must never fail the report
        pngs = corpus_plots(data, out / "plots")
    except (OSError, KeyError, ValueError) as e:
        log.warning("corpus plots skipped: %s", e)
        pngs = []
    pngs += [p for p in (plot_training_curves(out), plot_post_curves(out)) if p is not None]
    tensorboard = f"TensorBoard: `tensorboard --logdir {out}` (each training stage writes `<stage>/tensorboard`)."
    lines += ["", "## Plots", "", *markdown_images(pngs, out), tensorboard]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    html_report([(r.step, r.what, r.status, round(r.seconds, 1), r.result) for r in rows], pngs, out / "REPORT.html",
                notes=[tensorboard.replace("`", "")])
    (out / "report.json").write_text(json.dumps({"rows": [asdict(r) for r in rows], "total_seconds": total,
                                                 "failed": [asdict(r) for r in failed]}, indent=2))
    print(f"\nreport: {out / 'REPORT.md'}\ncorpus and token data: {data}\ncheckpoints and exports: {out}")
    return out / "REPORT.md"
