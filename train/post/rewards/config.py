"""Typed config of the per-task reward mixes (conf/post/rl_tasks.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from q3.config import Q3Config


class TaskConfig(Q3Config):
    rewards: list[dict[str, Any]] = Field(min_length=1)   # reward specs: {"type": ..., "weight": ..., options}
    enabled: bool = True
    description: str = ""
    data: dict[str, Any] = Field(default_factory=dict)     # where the task's prompts come from (see docs/post.md)


class RewardsConfig(Q3Config):
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)
    default: list[dict[str, Any]] = Field(default_factory=lambda: [{"type": "format"}])   # rows without meta["task"]
    unknown_task: Literal["error", "default"] = "error"   # a row whose task is not configured
