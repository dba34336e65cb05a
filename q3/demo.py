"""`q3 demo`: the whole system end to end on the sample corpus, on CPU, with a report.

Each step is a separate `q3` (or `torchrun`) process, exactly what a user would type, so the demo
exercises the real entry points and q3/ imports no area. Logs go to <out>/logs/<step>.log; the
report (<out>/REPORT.md) collects each step's summary and timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from q3.config import Q3Config, load_config
from q3.log import get_logger, print_table
from q3.paths import ROOT, data_dir, runs_dir

log = get_logger("q3.demo")


class DemoConfig(Q3Config):
    out: str = ""                  # default: <runs>/demo
    data: str = ""                 # default: <data>/demo
    fresh: bool = False            # remove previous demo outputs first
    skip: list[str] = []           # step names to skip
    nproc: int = 1                 # torchrun processes for training


@dataclass
class Step:
    name: str
    what: str
    argv: list[str]
    serve: str | None = None      # run with `q3 serve` on this model in the background; {endpoint} = its URL


def q3(*args: str) -> list[str]:
    return [sys.executable, "-m", "q3.cli", *args]


def torchrun(nproc: int, module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def build_steps(cfg: DemoConfig, data: Path, out: Path) -> list[Step]:
    """The demo, in order: every step is a command a user could type."""
    sample = data_dir() / "sample"
    corpus, dedup, labeling, mix = data / "pipeline", data / "dedup", data / "labeling", data / "mix"
    manifests = mix / "manifests"
    inputs = f"inputs=[{{path: '{sample / 'raw'}', format: text, source: debian-manpages, lang_from_path: true}}]"
    train = [torchrun(cfg.nproc, "train.pretrain")] if cfg.nproc > 1 else []

    def pretrain(stage: str, *extra: str) -> list[str]:
        args = ("--config", f"demo_{stage}", f"manifest={manifests / f'demo_{stage}.yaml'}",
                f"out_dir={out / stage}", *extra)
        return [*train[0], *args] if train else q3("train", "pretrain", *args)

    return [
        Step("sample", "real multilingual sample: Debian manpages (25 languages) + Python sources",
             q3("data", "sample")),
        Step("pipeline", "ingest -> normalise -> LID -> quality filters -> PII (Spark local)",
             q3("data", "run", "--config", "demo", inputs, f"output={corpus}")),
        Step("dedup", "exact + MinHash-LSH near-duplicate removal (local runner; Spark gives the same clusters)",
             q3("data", "dedup", f"input={corpus / 'kept'}", f"output={dedup}", "runner=local")),
        Step("label", "annotation: judge a sample, train fastText classifiers, label every doc (Spark)",
             q3("label", "demo", f"input={dedup / 'kept'}", f"workdir={labeling}")),
        Step("tokenize", "Qwen3 tokenizer -> Megatron .bin/.idx datasets per selection (local runner; Spark: same bytes)",
             q3("mix", "tokenize", "--config", "demo", f"input={labeling / 'labeled' / 'docs'}", f"output={mix}",
                "runner=local")),
        Step("manifests", "S1/S2/S3 stage-mixing manifests",
             q3("mix", "build", "--config", "demo", f"input={labeling / 'labeled' / 'docs'}", f"output={mix}")),
        Step("s1", "pretrain S1 (general), tiny Qwen3-MoE, megatron-core on CPU", pretrain("s1")),
        Step("s2", "pretrain S2 (reasoning, faster decay) from S1", pretrain("s2", f"load={out / 's1'}")),
        Step("s3", "pretrain S3 (long context, RoPE base 1e6) from S2", pretrain("s3", f"load={out / 's2'}")),
        Step("export", "Hugging Face Qwen3-MoE export of the S3 checkpoint",
             q3("train", "export-hf", f"load={out / 's3'}", f"out_dir={out / 'hf'}")),
        Step("rl-pairs", "programmatic RL query-verifier pairs (math, code, logic), self-verified",
             q3("synth", "verifiable", "n=200", f"out={data / 'rl'}")),
        Step("post-data", "cold-start, fusion and held-out eval sets from the verified pairs",
             q3("post", "prepare", f"pairs={data / 'rl' / 'pairs.jsonl'}", f"out={data / 'post'}")),
        Step("cold-start", "long-CoT cold-start SFT from S3 (packed, assistant-only loss)",
             q3("post", "sft", "--config", "coldstart", f"load={out / 's3'}",
                f"data=[{data / 'post' / 'coldstart.jsonl'}]", f"out_dir={out / 'cold-start'}")),
        Step("fusion", "thinking-mode fusion SFT (/think, /no_think, budget samples) + HF export",
             q3("post", "sft", "--config", "fusion", f"load={out / 'cold-start'}",
                f"data=[{data / 'post' / 'fusion.jsonl'}]", f"out_dir={out / 'fusion'}",
                f"export_hf={out / 'hf-post'}")),
        Step("post-eval", "held-out pass@k (synth's verifiers), ThinkFollow, thinking-budget compliance",
             q3("post", "eval", "--config", "eval", f"load={out / 'fusion'}",
                f"pairs={data / 'post' / 'eval_pairs.jsonl'}", f"out={out / 'post-eval'}")),
        Step("synth", "synthetic data from seed documents, generated by our post-trained model behind `q3 serve`",
             q3("synth", "run", "--config", "demo", f"input={dedup / 'kept'}",
                "endpoint.base_url={endpoint}", "endpoint.model=q3-tiny", f"output={data / 'synth'}"),
             serve=str(out / "hf-post")),
    ]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _eval(run: Path) -> str:
    lines = (run / "eval.jsonl").read_text().splitlines() if (run / "eval.jsonl").exists() else []
    rows = [json.loads(x) for x in lines if x.strip()]
    # a rerun resumes a finished stage and appends only {"step", "end"}: "start" is in the first row
    start = next((r["start"] for r in rows if "start" in r), None)
    if not rows or start is None or "end" not in rows[-1]:
        return ""
    return f"held-out loss {start:.3f} -> {rows[-1]['end']:.3f} after {rows[-1]['step']} steps"


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
    if name == "label":
        st = _json(data / "labeling" / "labeled" / "distributions.json")
        doms = {}
        for v in st.get("per_lang", {}).values():
            for d, n in v.get("domains", {}).items():
                doms[d] = doms.get(d, 0) + n
        top = ", ".join(f"{d} {n}" for d, n in sorted(doms.items(), key=lambda x: -x[1])[:3])
        return st and f"{st['docs']:,} documents labelled; top domains: {top}"
    if name == "tokenize":
        ds = _json(data / "mix" / "tokens" / "_Q3_SUCCESS").get("datasets", {})
        return ds and f"{len(ds)} datasets, {sum(d['n_tokens'] for d in ds.values()):,} tokens"
    if name == "manifests":
        return ", ".join(sorted(p.name for p in (data / "mix" / "manifests").glob("demo_s?.yaml")))
    if name in ("s1", "s2", "s3"):
        return _eval(out / name)
    if name == "export":
        cfg = _json(out / "hf" / "config.json")
        return cfg and f"{cfg['architectures'][0]}, rope_theta {cfg.get('rope_theta', '?')}, at {out / 'hf'}"
    if name == "rl-pairs":
        f = data / "rl" / "pairs.jsonl"
        return f.exists() and f"{sum(1 for _ in f.open()):,} query-verifier pairs"
    if name == "post-data":
        st = _json(data / "post" / "_Q3_SUCCESS")
        return st and (f"{st['coldstart']:,} cold-start rows, {st['fusion']:,} fusion rows, "
                       f"{st['held_out']:,} held-out pairs")
    if name in ("cold-start", "fusion"):
        r = _json(out / name / "result.json")
        ev = r.get("eval", {})
        return r and (f"{r['data']['samples']:,} trained turns in {r['packing']['sequences']:,} packed sequences; "
                      f"held-out loss {ev.get('start') or float('nan'):.3f} -> {ev.get('end') or float('nan'):.3f}")
    if name == "post-eval":
        r = _json(out / "post-eval" / "eval.json")
        v, tf, b = r.get("verifiable", {}).get("all", {}), r.get("thinkfollow", {}), r.get("budget", {})
        k = r.get("k", 1)
        return r and (f"pass@1 {v.get('pass@1', 0):.2f}, pass@{k} {v.get(f'pass@{k}', 0):.2f}; ThinkFollow "
                      f"{tf.get('accuracy', 0):.2f}; within budget {b.get('within_budget', 0):.2f}")
    if name == "synth":
        st = _json(data / "synth" / "final" / "_Q3_SUCCESS")
        return st and f"{st.get('kept', 0)} rows kept, {st.get('requests', 0)} requests to our model"
    return ""


def run_step(step: Step, logs: Path, env: dict[str, str]) -> tuple[float, int]:
    logs.mkdir(parents=True, exist_ok=True)
    log.info("step %-10s %s", step.name, step.what)
    if step.serve is None:
        return _run(step, step.argv, logs / f"{step.name}.log", env)
    with _served(step.serve, logs / f"{step.name}-serve.log", env) as url:
        argv = [a.replace("{endpoint}", url) for a in step.argv]
        return _run(step, argv, logs / f"{step.name}.log", env)


@contextmanager
def _served(model: str, logfile: Path, env: dict[str, str]) -> Iterator[str]:
    """`q3 serve` on `model` on a free port for the duration of a step; yields its /v1 URL."""
    port_file = logfile.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    with logfile.open("w") as fh:
        proc = subprocess.Popen(q3("serve", f"load={model}", "port=0", f"port_file={port_file}",
                                   "served_model_name=q3-tiny"), stdout=fh, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env)
        try:
            deadline = time.time() + 600
            while not port_file.exists():
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"q3 serve did not start; its log: {logfile}")
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _run(step: Step, argv: list[str], logfile: Path, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.time()
    with logfile.open("w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            sys.stdout.write(f"  [{step.name}] {line}")
        rc = proc.wait()
    return time.time() - t0, rc


def main(config: str | None, overrides: list[str]) -> int:
    """Run the whole system end to end on the sample corpus (CPU), then print the report."""
    cfg = load_config(DemoConfig, "demo", config, overrides)
    out = Path(cfg.out) if cfg.out else runs_dir() / "demo"
    data = Path(cfg.data) if cfg.data else data_dir() / "demo"
    if cfg.fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONUNBUFFERED="1")
    results = []
    for step in build_steps(cfg, data, out):
        if step.name in cfg.skip:
            results.append((step.name, step.what, "skipped", 0.0, ""))
            continue
        secs, rc = run_step(step, out / "logs", env)
        status = "ok" if rc == 0 else f"FAILED (rc={rc})"
        try:
            figures = summarise(step.name, data, out) if rc == 0 else ""
        except (OSError, KeyError, ValueError) as e:   # a report line must never fail the demo
            figures = f"(no summary: {e})"
        results.append((step.name, step.what, status, secs, figures or ""))
        if rc != 0:
            log.error("step %s failed; its log: %s", step.name, out / "logs" / f"{step.name}.log")
            break
    _report(results, out, data)
    return 0 if all(r[2] in ("ok", "skipped") for r in results) else 1


def plot_training_curves(out: Path, stages: tuple[str, ...] = ("s1", "s2", "s3", "cold-start", "fusion")) -> Path | None:
    """One PNG with the training loss of every stage that logged metrics (pretraining, then
    post-training), for the report. None when there is nothing to plot or no matplotlib."""
    curves = {}
    for name in stages:
        f = out / name / "metrics.jsonl"
        if f.exists():
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            curves[name] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    if not curves:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], curves.items(), strict=True):
        ax.plot(x, y)
        ax.set_title(name)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("train loss")
    fig.suptitle("training loss per stage (pretraining: all tokens; post-training: assistant tokens)")
    fig.tight_layout()
    png = out / "training_curves.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _report(results: list[tuple[str, str, str, float, str]], out: Path, data: Path) -> None:
    print_table("Q3 demo", ["step", "status", "seconds", "result"],
                [(n, s, round(t, 1), f) for n, _, s, t, f in results])
    lines = ["# Q3 demo report", "", f"data: `{data}`  ", f"runs: `{out}`  ", f"logs: `{out / 'logs'}`", "",
             "| step | what | status | seconds | result |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {w} | {s} | {t:.1f} | {f} |" for n, w, s, t, f in results]
    png = plot_training_curves(out)
    if png is not None:
        lines += ["", f"![training loss per stage]({png.name})", "",
                  f"TensorBoard: `tensorboard --logdir {out}` (each stage writes `<stage>/tensorboard`)."]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(
        [{"step": n, "what": w, "status": s, "seconds": t, "result": f} for n, w, s, t, f in results], indent=2))
    print(f"\nreport: {out / 'REPORT.md'}\ncorpus and token data: {data}\ncheckpoints and exports: {out}")
