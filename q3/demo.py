"""`q3 demo`: the whole Qwen3 chain end to end on the sample corpus, on CPU, with a report.

Raw text -> pipeline -> dedup -> decontam -> label -> tokenise -> S1 -> S2 -> S3 -> cold-start SFT ->
GRPO -> fusion SFT -> general RL -> HF export -> post-eval -> the export behind `q3 serve` (checked
with the `openai` client) -> synthetic data from it -> strong-to-weak distillation (off-, then
on-policy) -> the student's eval.

Each step is a separate `q3` (or `torchrun`) process, exactly what a user would type, so the demo
exercises the real entry points and q3/ imports no area. Logs go to <out>/logs/<step>.log; the
report (<out>/REPORT.md, q3/demo_report.py) collects each step's figures and timing.

Resumable: a finished step writes <out>/steps/<step>.json (rc, seconds, figures, finished_at); a
rerun skips the steps marked done and continues at the first unfinished one (the training verbs
resume from their own checkpoints when a step was killed midway). `fresh=true` starts over.
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
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from q3.atomic import atomic_write_text
from q3.config import ConfigError, Q3Config, load_config
from q3.demo_report import Row, summarise, write_report
from q3.log import get_logger
from q3.paths import ROOT, data_dir, runs_dir
from q3.proc import stop

log = get_logger("q3.demo")


class DemoConfig(Q3Config):
    out: str = ""                  # default: <runs>/demo
    data: str = ""                 # default: <data>/demo
    fresh: bool = False            # remove previous demo outputs (and step markers) first
    llm: bool = True               # the real-LLM steps (SmolLM2-135M: judge, synth); false leaves them out
    skip: list[str] = Field(default_factory=list)   # step names to skip
    only: list[str] = Field(default_factory=list)   # run only these steps (default: all)
    nproc: int = Field(default=1, ge=1)             # torchrun processes for training


@dataclass
class Step:
    name: str
    what: str
    argv: list[str]
    serve: str | None = None      # run with `q3 serve` on this model in the background; {endpoint} = its URL
    llm: bool = False             # run with the real LLM (SmolLM2 via transformers serve); {endpoint}, {model}


def q3(*args: str) -> list[str]:
    return [sys.executable, "-m", "q3.cli", *args]


def torchrun(nproc: int, module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


# CPU sizes. The post-training steps run the production configs (conf/post/<name>.yaml) with these
# overrides so that `make demo` takes ~30 minutes on 2 cores: few steps, short replies. The long
# CPU demonstrations are in bench/ (bench/RESULTS.md); drop the overrides for the configs as written.
SIZES: dict[str, list[str]] = {
    # global batch 4 as 2 x 2: also valid for nproc=2 (global = micro x data-parallel x microbatches)
    "cold-start": ["train_steps=20", "global_batch_size=4", "micro_batch_size=2", "save_interval=10",
                   "log_interval=5"],
    "grpo": ["rollout_steps=4", "prompts_per_step=4", "group_size=4", "updates_per_batch=1", "max_tokens=48",
             "max_sample_rounds=1", "save_interval=2", "eval_limit=16", "eval_k=2"],
    "fusion": ["train_steps=20", "global_batch_size=4", "micro_batch_size=2", "save_interval=10", "log_interval=5"],
    "rl": ["rollout_steps=3", "prompts_per_step=4", "group_size=4", "updates_per_batch=1", "max_tokens=48",
           "tasks=[instruction,format]", "rows_per_task=64", "save_interval=2"],
    "post-eval": ["limit=16", "k=2", "max_tokens=48"],
    "serve": ["limit=16", "k=2", "max_tokens=48"],
    # the demo's teacher rarely stops within max_tokens: keep its cut replies (dropped by default)
    "distill-off": ["train_steps=20", "global_batch_size=4", "micro_batch_size=2", "save_interval=10",
                    "max_tokens=48", "keep_truncated=true", "eval_limit=16", "eval_k=2"],
    "distill-on": ["rollout_steps=4", "prompts_per_step=8", "samples_per_prompt=1", "max_tokens=48",
                   "eval_limit=16", "eval_k=2", "save_interval=2"],
    "distill-eval": ["limit=16", "max_tokens=48"],
    # free-text templates only: JSON-schema decoding (qa, instructions) checks the grammar token by
    # token and took minutes per request on the shared 2-core machine
    "synth": ["templates=[textbook,code_exercise,multilingual]", "max_docs=2", "n_items=1", "params.max_tokens=64"],
}
# The student of strong-to-weak distillation: tiny_dense at half width (the teacher is the demo's tiny MoE).
STUDENT = ("model=tiny_dense", "model_overrides={hidden_size: 32, ffn_hidden_size: 64}")


def build_steps(cfg: DemoConfig, data: Path, out: Path) -> list[Step]:
    """The demo, in order: every step is a command a user could type."""
    sample = data_dir() / "sample"
    corpus, dedup, decontam = data / "pipeline", data / "dedup", data / "decontam"
    labeling, mix, post = data / "labeling", data / "mix", data / "post"
    manifests, held_out, rl_query = mix / "manifests", post / "eval_pairs.jsonl", data / "rl-query" / "pairs.jsonl"
    inputs = f"input=[{{path: '{sample / 'raw'}', format: text, source: debian-manpages, lang_from_path: true}}]"

    def pretrain(stage: str, *extra: str) -> list[str]:
        args = ("--config", f"demo_{stage}", f"manifest={manifests / f'demo_{stage}.yaml'}", f"out_dir={out / stage}",
                *extra)
        return torchrun(cfg.nproc, "train.pretrain", *args) if cfg.nproc > 1 else q3("train", "pretrain", *args)

    def post_train(verb: str, config: str, name: str, *extra: str) -> list[str]:
        """`q3 post <verb>` (or its module under torchrun) with the demo's CPU sizes."""
        args = ("--config", config, *extra, f"out_dir={out / name}", *SIZES.get(name, []))
        return torchrun(cfg.nproc, f"train.post.{verb}", *args) if cfg.nproc > 1 else q3("post", verb, *args)

    return [
        Step("sample", "real multilingual sample: Debian manpages (25 languages) + Python sources",
             q3("data", "sample")),
        Step("pipeline", "ingest -> normalise -> LID -> quality filters -> PII (the engine's Spark runner, local mode)",
             q3("data", "run", "--config", "demo", inputs, f"output={corpus}", "runner=spark")),
        Step("dedup", "exact + MinHash-LSH near-duplicate removal (runner auto: local at this size; Spark gives the "
             "same clusters)",
             q3("data", "dedup", f"input={corpus / 'kept'}", f"output={dedup}")),
        Step("rl-pairs", "programmatic RL query-verifier pairs (math, code, logic), self-verified",
             q3("synth", "verifiable", "n=200", f"output={data / 'rl'}")),
        Step("post-data", "cold-start, fusion and held-out eval sets from the verified pairs",
             q3("post", "prepare", f"pairs={data / 'rl' / 'pairs.jsonl'}", f"out={post}")),
        Step("decontam", "drop documents sharing 8-grams with the held-out eval queries (runner auto)",
             q3("data", "decontam", f"input={dedup / 'kept'}", f"output={decontam}",
                f"decontam.evals=[{held_out}]", "decontam.text_fields=[query]", "decontam.ngram=8")),
        Step("label", "annotation: judge a sample, train fastText classifiers, label every doc (runner auto)",
             q3("label", "demo", f"input={decontam / 'kept'}", f"output={labeling}")),
        *([Step("judge-llm", "a real LLM judge (SmolLM2-135M-Instruct behind `transformers serve`) on a stratified "
                "sample; agreement with the rule-based judge",
                q3("label", "judge", "--config", "demo_llm", f"input={decontam / 'kept'}",
                   f"output={data / 'labeling-llm'}", "endpoint.base_url={endpoint}", "endpoint.model={model}"),
                llm=True)] if cfg.llm else []),
        Step("tokenize", "Qwen3 tokenizer -> Megatron .bin/.idx datasets per selection (runner auto; Spark: same bytes)",
             q3("mix", "tokenize", "--config", "demo", f"input={labeling / 'labeled' / 'docs'}", f"output={mix}")),
        Step("manifests", "S1/S2/S3 stage-mixing manifests",
             q3("mix", "build", "--config", "demo", f"input={labeling / 'labeled' / 'docs'}", f"output={mix}")),
        Step("s1", "pretrain S1 (general), tiny Qwen3-MoE, megatron-core on CPU", pretrain("s1")),
        Step("s2", "pretrain S2 (reasoning, faster decay) from S1", pretrain("s2", f"load={out / 's1'}")),
        Step("s3", "pretrain S3 (long context, RoPE base 1e6) from S2", pretrain("s3", f"load={out / 's2'}")),
        Step("cold-start", "long-CoT cold-start SFT from S3 (packed, assistant-only loss)",
             post_train("sft", "coldstart", "cold-start", f"load={out / 's3'}", f"data=[{post / 'coldstart.jsonl'}]")),
        Step("rl-query", "RL query pool: fresh math + logic pairs (another seed; not the held-out set)",
             q3("synth", "verifiable", "n=32", "seed=1", "domains={math: 0.5, logic: 0.5}",
                f"output={rl_query.parent}")),
        Step("grpo", "reasoning RL: GRPO from the cold start (verifier + format reward, clip-higher)",
             post_train("grpo", "grpo", "grpo", f"load={out / 'cold-start'}", f"pairs=[{rl_query}]",
                        "rewards=demo_grpo_rewards", f"eval_pairs={held_out}")),
        Step("fusion", "thinking-mode fusion SFT (/think, /no_think, budget samples) from GRPO",
             post_train("sft", "fusion", "fusion", f"load={out / 'grpo'}", f"data=[{post / 'fusion.jsonl'}]")),
        Step("rl", "general RL from fusion: instruction following + mode/format rewards (conf/post/rl_tasks.yaml)",
             post_train("rl", "rl", "rl", f"load={out / 'fusion'}")),
        Step("export", "Hugging Face Qwen3-MoE export of the final (general-RL) model",
             q3("train", "export-hf", f"load={out / 'rl'}", f"out_dir={out / 'hf'}")),
        Step("post-eval", "held-out pass@k (synth's verifiers), ThinkFollow, thinking-budget compliance",
             q3("post", "eval", "--config", "eval", f"load={out / 'rl'}", f"pairs={held_out}",
                f"out={out / 'post-eval'}", *SIZES["post-eval"])),
        Step("serve", "the export behind `q3 serve`, asked the held-out pairs with the openai client, verified",
             [sys.executable, "-m", "train.post.serve_check", "base_url={endpoint}", "model=q3-tiny",
              f"pairs={held_out}", f"compare={out / 'post-eval' / 'eval.json'}", f"out={out / 'serve'}",
              *SIZES["serve"]],
             serve=str(out / "hf")),
        Step("synth", "synthetic data from seed documents, generated by our post-trained model behind `q3 serve`",
             q3("synth", "run", "--config", "demo", f"input={decontam / 'kept'}",
                "endpoint.base_url={endpoint}", "endpoint.model=q3-tiny", f"output={data / 'synth'}",
                *SIZES["synth"]),
             serve=str(out / "hf")),
        *([Step("synth-llm", "synthetic rows from seed documents written by the real LLM (SmolLM2-135M-Instruct)",
                q3("synth", "run", "--config", "demo_llm", f"input={decontam / 'kept'}",
                   f"output={data / 'synth-llm'}", "endpoint.base_url={endpoint}", "endpoint.model={model}"),
                llm=True)] if cfg.llm else []),
        Step("distill-off", "strong-to-weak distillation, off-policy: teacher replies (/think + /no_think) -> student SFT",
             post_train("distill", "distill", "distill-off", "phase=off_policy", f"teacher={out / 'rl'}", "load=null",
                        *STUDENT, f"prompts=[{rl_query}]", f"eval_pairs={held_out}")),
        Step("distill-on", "on-policy distillation: student samples, per-token reverse KL to the teacher",
             post_train("distill", "distill", "distill-on", "phase=on_policy", f"teacher={out / 'rl'}",
                        f"load={out / 'distill-off'}", f"prompts=[{rl_query}]", f"eval_pairs={held_out}")),
        Step("distill-eval", "the student's ThinkFollow (mode following), next to the teacher's",
             q3("post", "eval", "--config", "eval", f"load={out / 'distill-on'}", f"pairs={held_out}",
                "evals=[thinkfollow]", f"out={out / 'distill-eval'}", *SIZES["distill-eval"])),
    ]


# ------------------------------------------------------------------------------- step markers
def marker_path(out: Path, name: str) -> Path:
    return out / "steps" / f"{name}.json"


def done_marker(out: Path, data: Path, name: str) -> dict | None:
    """The marker of a step finished earlier for these out/data folders, else None."""
    p = marker_path(out, name)
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return m if m.get("rc") == 0 and m.get("data") == str(data) else None


def write_marker(out: Path, data: Path, step: Step, seconds: float, figures: str) -> None:
    p = marker_path(out, step.name)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps({"step": step.name, "rc": 0, "seconds": round(seconds, 2), "figures": figures,
                                     "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                                     "data": str(data), "argv": step.argv}, indent=1))


# ------------------------------------------------------------------------------- running
def run_step(step: Step, logs: Path, env: dict[str, str]) -> tuple[float, int]:
    logs.mkdir(parents=True, exist_ok=True)
    log.info("step %-12s %s", step.name, step.what)
    if step.serve is None and not step.llm:
        return _run(step, step.argv, logs / f"{step.name}.log", env)
    t0 = time.time()
    try:
        if step.llm:
            from q3.llm_server import served_smollm

            server = served_smollm(logs / f"{step.name}-serve.log", env)
        else:
            server = _served(step.serve, logs / f"{step.name}-serve.log", env)
        with server as served:
            url, model = served if step.llm else (served, "")
            argv = [a.replace("{endpoint}", url).replace("{model}", model) for a in step.argv]
            _, rc = _run(step, argv, logs / f"{step.name}.log", env)
    except RuntimeError as e:                    # the server did not come up: the step fails, the demo goes on
        (logs / f"{step.name}.log").write_text(f"{e}\n")
        rc = 1
    return time.time() - t0, rc


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
            stop(proc)


def _run(step: Step, argv: list[str], logfile: Path, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.time()
    with logfile.open("w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env, text=True, bufsize=1)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                fh.write(line)
                sys.stdout.write(f"  [{step.name}] {line}")
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reached the child too; `kill -INT <demo>` did not: pass it on,
            # so the step stops where a rerun resumes it (training verbs keep their checkpoints)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        rc = proc.wait()
    return time.time() - t0, rc


def _figures(name: str, data: Path, out: Path) -> str:
    try:
        return summarise(name, data, out) or ""
    except (OSError, KeyError, ValueError, TypeError) as e:   # a report line must never fail the demo
        return f"(no summary: {e})"


def main(config: str | None, overrides: list[str]) -> int:
    """Run the whole chain end to end on the sample corpus (CPU), resumably, then print the report."""
    cfg = load_config(DemoConfig, "demo", config, overrides)
    out = Path(cfg.out) if cfg.out else runs_dir() / "demo"
    data = Path(cfg.data) if cfg.data else data_dir() / "demo"
    steps = build_steps(cfg, data, out)
    names = [s.name for s in steps]
    unknown = [n for n in [*cfg.skip, *cfg.only] if n not in names]
    if unknown:
        raise ConfigError(f"unknown demo step(s) {unknown}; the steps: {', '.join(names)}")
    if cfg.fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONUNBUFFERED="1")
    rows: list[Row] = []
    stopped = False
    for step in steps:
        logfile = str(out / "logs" / f"{step.name}.log")
        if stopped:
            rows.append(Row(step.name, step.what, "not run", 0.0, ""))
        elif step.name in cfg.skip or (cfg.only and step.name not in cfg.only):
            rows.append(Row(step.name, step.what, "skipped", 0.0, ""))
        elif (m := done_marker(out, data, step.name)) is not None:
            log.info("step %-12s done earlier (%s, %.0f s): skipped", step.name, m.get("finished_at"), m["seconds"])
            # figures from the step's files when they are still there (the current summary), else as recorded
            figures = _figures(step.name, data, out) or m.get("figures", "")
            rows.append(Row(step.name, step.what, "done earlier", m["seconds"], figures, logfile))
        else:
            try:
                secs, rc = run_step(step, out / "logs", env)
            except KeyboardInterrupt:
                rows.append(Row(step.name, step.what, "interrupted", 0.0, "", logfile))
                stopped = True
                continue
            if rc == 0:
                figures = _figures(step.name, data, out)
                write_marker(out, data, step, secs, figures)
                rows.append(Row(step.name, step.what, "ok", secs, figures, logfile))
            else:
                log.error("step %s failed (rc=%d); its log: %s", step.name, rc, logfile)
                rows.append(Row(step.name, step.what, f"FAILED (rc={rc})", secs, "", logfile))
                stopped = True
    write_report(rows, out, data)
    return 0 if all(r.status in ("ok", "done earlier", "skipped") for r in rows) else 1
