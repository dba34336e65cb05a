"""`q3 demo`: the whole system end to end on the sample corpus, on CPU, with a report.

Each step is a separate `q3` (or `torchrun`) process, exactly what a user would type, so the demo
exercises the real entry points and q3/ imports no area. Logs go to <out>/logs/<step>.log; the
report (<out>/REPORT.md) collects each step's summary and timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
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
    outputs: list[str] = field(default_factory=list)


def q3(*args: str) -> list[str]:
    return [sys.executable, "-m", "q3.cli", *args]


def torchrun(nproc: int, module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def build_steps(cfg: DemoConfig, data: Path, out: Path) -> list[Step]:
    corpus = data / "pipeline"
    steps = [
        Step("sample", "real multilingual sample: Debian manpages + Python sources",
             q3("data", "sample")),
        Step("pipeline", "ingest -> normalise -> LID -> quality filters -> PII (Spark local)",
             q3("data", "run", "--config", "demo", f"output={corpus}"), [str(corpus)]),
    ]
    return steps


def run_step(step: Step, logs: Path, env: dict[str, str]) -> tuple[float, int]:
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"{step.name}.log"
    log.info("step %-10s %s", step.name, step.what)
    t0 = time.time()
    with logfile.open("w") as fh:
        fh.write("$ " + " ".join(step.argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
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
            results.append((step.name, step.what, "skipped", 0.0))
            continue
        secs, rc = run_step(step, out / "logs", env)
        results.append((step.name, step.what, "ok" if rc == 0 else f"FAILED (rc={rc})", secs))
        if rc != 0:
            log.error("step %s failed; its log: %s", step.name, out / "logs" / f"{step.name}.log")
            break
    _report(results, out, data)
    return 0 if all(r[2] in ("ok", "skipped") for r in results) else 1


def _report(results: list[tuple[str, str, str, float]], out: Path, data: Path) -> None:
    print_table("Q3 demo", ["step", "what", "status", "seconds"],
                [(n, w, s, round(t, 1)) for n, w, s, t in results])
    lines = ["# Q3 demo report", "", f"data: `{data}`  ", f"runs: `{out}`", "",
             "| step | what | status | seconds |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {w} | {s} | {t:.1f} |" for n, w, s, t in results]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(
        [{"step": n, "what": w, "status": s, "seconds": t} for n, w, s, t in results], indent=2))
    print(f"\nreport: {out / 'REPORT.md'}\ncorpus and token data: {data}\ncheckpoints and exports: {out}")
