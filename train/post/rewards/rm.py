"""`reward_model`: a trained scalar reward model, no reference (train/post/reward_model.py's
`RewardModelScorer(path).score([(prompt messages, reply)]) -> [float]`), imported when the reward
is built (it brings megatron). Raw scores are unbounded; `normalise` maps them:
`sigmoid` (scale then logistic), `zscore` (within the scored batch: GRPO groups are
batch-relative anyway) or `none`."""

from __future__ import annotations

import math
import statistics
from typing import Literal

from train.post.rewards.base import (
    RewardInput,
    RewardOptions,
    RewardResult,
    answer_part,
    options,
    register,
    result,
)


class RewardModelOptions(RewardOptions):
    path: str                                   # the reward model checkpoint
    normalise: Literal["none", "sigmoid", "zscore"] = "sigmoid"
    scale: float = 1.0                          # raw score multiplier before the sigmoid
    answer_only: bool = False                   # True: score the answer only (a model trained on answers)


def normalise(raw: list[float], how: str, scale: float = 1.0) -> list[float]:
    if how == "sigmoid":
        return [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, scale * r)))) for r in raw]
    if how == "zscore":
        if len(raw) < 2:
            return [0.0] * len(raw)
        mu, sd = statistics.fmean(raw), statistics.pstdev(raw)
        return [(r - mu) / sd if sd > 1e-8 else 0.0 for r in raw]
    return list(raw)


class RewardModelReward:
    def __init__(self, opts: RewardModelOptions):
        from train.post.reward_model import RewardModelScorer  # lazily: it imports megatron
        self.name = opts.name or "reward_model"
        self.opts = opts
        self.scorer = RewardModelScorer(opts.path)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        pairs = [(x.messages, answer_part(x.reply) if self.opts.answer_only else x.reply) for x in items]
        try:
            raw = [float(s) for s in self.scorer.score(pairs)]
        except Exception as e:   # noqa: BLE001 - a scorer failure costs the batch its reward, not the run
            return [result(0.0, "scorer_error", error=f"{type(e).__name__}: {e}"[:300]) for _ in items]
        return [result(s, "ok", raw=r) for s, r in zip(normalise(raw, self.opts.normalise, self.opts.scale), raw,
                                                          strict=True)]


@register("reward_model")
def build(spec: dict) -> RewardModelReward:
    return RewardModelReward(options(RewardModelOptions, spec))
