"""General-RL rewards behind one interface (the Qwen3 report's general RL stage: rule-based
rewards, model-based rewards with a reference answer, a reward model without one, across tasks
including multi-turn tool use).

    rewards = TaskRewards.load("rl_tasks")                 # conf/post/rl_tasks.yaml
    results = rewards.score([RewardInput(messages, reply, meta=row, finish_reason="stop"), ...])
    results[0].score, results[0].details                   # {"task", component -> score, "reasons", "info"}

Reward types (REWARDS, one module each): verifier, format, instruction, length, judge,
reward_model, tool_use, mix. `build_reward(spec)` builds one from {"type": ..., "weight": ..., ...}.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from q3.config import ConfigError, load_config, validate
from train.post.rewards import format as _format  # noqa: F401 - registers the reward types
from train.post.rewards import instruction, judge, length, mix, rm, tools, verifier  # noqa: F401
from train.post.rewards.base import REWARDS, Reward, RewardInput, RewardResult, build_reward, register
from train.post.rewards.config import RewardsConfig, TaskConfig
from train.post.rewards.mix import MixReward, build_mix


class TaskRewards:
    """The per-task weighted mixes: each item is scored by the mix of its meta["task"]."""

    def __init__(self, mixes: dict[str, MixReward], default: MixReward, unknown_task: str = "error"):
        self.mixes, self.default, self.unknown_task = mixes, default, unknown_task

    @classmethod
    def from_config(cls, cfg: dict | RewardsConfig) -> TaskRewards:
        if not isinstance(cfg, RewardsConfig):
            cfg = validate(RewardsConfig, cfg, source="rewards")
        mixes = {name: _build(f"tasks.{name}", t.rewards, name) for name, t in cfg.tasks.items() if t.enabled}
        return cls(mixes, _build("default", cfg.default, "default"), cfg.unknown_task)

    @classmethod
    def load(cls, ref: str | Path = "rl_tasks", overrides: list[str] | None = None) -> TaskRewards:
        """From conf/post/<ref>.yaml (or a YAML path), with key=value overrides."""
        return cls.from_config(load_config(RewardsConfig, "post", ref, overrides))

    def mix_for(self, task: str | None) -> MixReward:
        if task is None:
            return self.default
        m = self.mixes.get(task)
        if m is None:
            if self.unknown_task == "default":
                return self.default
            raise ConfigError(f"task {task!r} has no reward mix; configured tasks: {', '.join(sorted(self.mixes))}")
        return m

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, x in enumerate(items):
            groups[x.meta.get("task")].append(i)
        mixes = {task: self.mix_for(task) for task in groups}     # unknown tasks fail before any scoring
        out: list[RewardResult | None] = [None] * len(items)
        for task, idx in groups.items():
            for i, r in zip(idx, mixes[task].score([items[i] for i in idx]), strict=True):
                r.details["task"] = task if task in self.mixes else "default"
                out[i] = r
        return out  # type: ignore[return-value]

    def counters(self) -> dict[str, int]:
        """Fault counters of components that keep them (the judge): '<task>/<component>/<kind>'."""
        out = {}
        for task, m in [*self.mixes.items(), ("default", self.default)]:
            for c in m.components:
                for k, v in getattr(c, "counters", {}).items():
                    out[f"{task}/{c.name}/{k}"] = v
        return out


def _build(where: str, specs: list[dict], name: str) -> MixReward:
    total = 0.0
    for s in specs:
        if isinstance(s, dict) and isinstance(s.get("weight", 1.0), int | float):
            total += float(s.get("weight", 1.0))
    try:
        m = build_mix(specs, name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if total <= 0:
        raise ConfigError(f"{where}: the reward weights sum to {total}; at least one must be > 0")
    return m


__all__ = ["REWARDS", "Reward", "RewardInput", "RewardResult", "RewardsConfig", "TaskConfig", "TaskRewards",
           "build_reward", "register"]
