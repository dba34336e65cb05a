"""`q3 post rl`: general RL (Qwen3 report, post-training stage 4): the GRPO loop of `q3 post grpo`
over a mixed task set, each reply scored by its task's reward mix (`train.post.rewards`:
rule-based format / instruction / length, a verifier, an LLM judge with a reference answer, a
trained reward model, multi-turn tool use).

    q3 post rl --config rl load=runs/post/fusion                 # tasks of conf/post/rl_tasks.yaml
    q3 post rl --config rl load=... tasks=[instruction,format] rows_per_task=128

The rows are the configured tasks' data (generated instruction-following and tool-use tasks,
`q3 synth verifiable` pairs), tagged with their task, plus any `pairs` files; the query stream
interleaves them by a seeded shuffle. Metrics add the mean reward per task (`rl/reward/<task>`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from q3.config import ConfigError, load_config
from q3.log import get_logger
from train.post.grpo import GRPOConfig, read_rows

log = get_logger("q3.post.rl")


class RLConfig(GRPOConfig):
    rewards: str | None = "rl_tasks"                  # conf/post/<name>.yaml or a path: the task mixes
    tasks: list[str] = Field(default_factory=list)    # tasks to train on (default: every enabled task)
    rows_per_task: int | None = Field(default=None, ge=1)   # cap per task (balance a mix)
    mode: Literal["think", "no_think", "none"] = "none"   # task rows carry their own /think, /no_think flags


def task_set(cfg: RLConfig) -> list[dict]:
    """The rows of the selected tasks (+ `pairs` files), each tagged with its task."""
    from train.post.rewards.config import RewardsConfig
    from train.post.rewards.if_tasks import task_rows

    rcfg = load_config(RewardsConfig, "post", cfg.rewards)
    enabled = {name: t for name, t in rcfg.tasks.items() if t.enabled}
    names = cfg.tasks or list(enabled)
    unknown = [n for n in names if n not in enabled]
    if unknown:
        raise ConfigError(f"tasks {unknown} are not enabled tasks of {cfg.rewards}: {', '.join(enabled)}")
    rows: list[dict] = []
    for name in names:
        got = task_rows(name, dict(enabled[name].data or {}))
        rows += got[: cfg.rows_per_task] if cfg.rows_per_task else got
    if cfg.pairs:
        rows += read_rows(cfg.pairs)
    if not rows:
        raise ConfigError(f"no task rows: tasks {names} produced none")
    return rows


def run(cfg: RLConfig) -> dict:
    from train.post import grpo

    return grpo.run(cfg, rows=task_set(cfg), stage="RL")


def cli(config: str | None, overrides: list[str]) -> int:
    """General RL over a task mix: q3 post rl --config rl load=CKPT [tasks=[instruction,format]]"""
    from train.core import run_verb

    return run_verb(run, RLConfig, "post", config, overrides)


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main
    from train.post.cli import VERBS

    sys.exit(script_main(VERBS["rl"], None, prog="q3 post rl"))
