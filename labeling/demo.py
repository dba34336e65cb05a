"""`q3 label demo`: judge -> train -> run on a corpus, in one call, with timings.

With no endpoint configured it starts labeling/rule_judge.py on 127.0.0.1 — a deterministic
RULE-BASED judge, not an LLM — so the whole path runs on a CPU-only machine; give
`endpoint.base_url=... endpoint.model=...` (e.g. `q3 serve`, vLLM) to judge with a model instead.

    q3 label demo input=data/sample/docs.jsonl judge.sample_size=300
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from labeling.apply import run_apply
from labeling.classifier import run_train
from labeling.config import LabelConfig
from labeling.judge import run_judge
from labeling.rule_judge import MODEL, RuleJudgeServer
from q3.config import load_config
from q3.log import get_logger, print_table

log = get_logger("labeling.demo")


def run_demo(cfg: LabelConfig) -> dict[str, Any]:
    times: dict[str, float] = {}
    ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if not cfg.endpoint.resolved_base_url():
        log.warning("no endpoint configured: judging with the RULE-BASED judge (not an LLM), model %s", MODEL)
        ctx = RuleJudgeServer()
    with ctx as srv:
        if srv is not None:
            cfg = cfg.model_copy(update={"endpoint": cfg.endpoint.model_copy(
                update={"base_url": srv.base_url, "model": MODEL})})
        t = time.time()
        run_judge(cfg)
        times["judge_s"] = time.time() - t
    t = time.time()
    models = run_train(cfg)
    times["train_s"] = time.time() - t
    t = time.time()
    out = run_apply(cfg)
    times["run_s"] = time.time() - t
    print_table("labeling demo", ["step", "seconds"], [(k, round(v, 1)) for k, v in times.items()])
    return {"judge_model": cfg.endpoint.resolved_model(), "models": str(models), "labeled": str(out), **times}


def cli(config: str | None, overrides: list[str]) -> int:
    """judge -> train -> run in one go (rule-based judge when no endpoint is configured)."""
    run_demo(load_config(LabelConfig, "labeling", config, overrides))
    return 0
