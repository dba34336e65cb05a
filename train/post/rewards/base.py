"""The reward interface every reward type implements, and the registry of reward types.

A reward scores a batch of (prompt conversation, decoded reply, task row) items and returns one
`RewardResult` per item, in order. Rewards never raise on a bad reply (or a failing judge
endpoint): a reply that cannot be scored gets a defined score and a reason in `details`.
Bad *configuration* is caught when the reward is built (`q3.config.ConfigError`, one line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, Field

from q3.config import ConfigError, Q3Config, validate
from q3.tokenizer import END_THINK, THINK
from train.generate import thinking_mode


@dataclass
class RewardInput:
    messages: list[dict]      # the prompt conversation (OpenAI messages) the reply answers
    reply: str                # decoded assistant reply, incl. "<think>...</think>" if any, stop token excluded
    meta: dict                # the task row: task, verifier_type/verifier_data, reference, constraints, thinking
    finish_reason: str = "stop"   # "stop" | "length" (over-long) | "cancelled"


@dataclass
class RewardResult:
    score: float              # the reward (mix: the weighted sum)
    details: dict = field(default_factory=dict)   # component name -> score, and reasons (JSON-able)


@runtime_checkable
class Reward(Protocol):
    name: str

    def score(self, items: list[RewardInput]) -> list[RewardResult]: ...


class RewardOptions(Q3Config):
    """Options common to every reward spec. Each type subclasses this with its own options,
    so an unknown option is a ConfigError naming the key."""

    type: str
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)   # penalties are scores, not negative weights
    name: str | None = None    # component name in a mix's details (default: the type)


Factory = Callable[[dict[str, Any]], Reward]
REWARDS: dict[str, Factory] = {}
OptT = TypeVar("OptT", bound=BaseModel)


def register(name: str) -> Callable[[Factory], Factory]:
    """Plug-in registration: `@register("format") def build(spec) -> Reward`."""
    def deco(fn: Factory) -> Factory:
        REWARDS[name] = fn
        return fn
    return deco


def options(model: type[OptT], spec: dict[str, Any]) -> OptT:
    """Validate a reward spec against its options model (one-line ConfigError per problem)."""
    return validate(model, spec, source=f"reward {spec.get('name') or spec.get('type')!r}")


def build_reward(spec: dict[str, Any]) -> Reward:
    """A reward from its spec, e.g. {"type": "format", "weight": 1.0, ...options}. The weight
    is kept on the reward (`.weight`) for a mix; the reward's own score is unweighted."""
    if not isinstance(spec, dict):
        raise ConfigError(f"a reward spec must be a mapping with a 'type', got {spec!r}")
    kind = spec.get("type")
    factory = REWARDS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ConfigError(f"unknown reward type {kind!r}; known types: {', '.join(sorted(REWARDS))}")
    reward = factory(spec)                         # validates the options, weight included
    reward.weight = float(spec.get("weight", 1.0))  # type: ignore[attr-defined]
    return reward


# ---------------------------------------------------------------- reply helpers shared by rewards

def wants_thinking(item: RewardInput) -> bool:
    """meta["thinking"] when set, else False under the template's hard switch
    (meta["enable_thinking"] False), else the conversation's last /think or /no_think flag."""
    t = item.meta.get("thinking")
    if item.meta.get("enable_thinking") is False:
        return False
    return t if isinstance(t, bool) else thinking_mode(item.messages)


def answer_part(reply: str) -> str:
    """The answer after the think block; "" when thinking never finished (cut off)."""
    if END_THINK in reply:
        return reply.rsplit(END_THINK, 1)[1].strip()
    if THINK in reply:
        return ""
    return reply.strip()


def result(score: float, reason: str, **extra: Any) -> RewardResult:
    return RewardResult(float(score), {"reason": reason, **extra})
