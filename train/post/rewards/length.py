"""`length`: length control on the answer (or the whole reply): full score up to `max`, then a
linear fall to `floor` over `window` more units (a soft over-long penalty, as DAPO's); a reply
cut at max_tokens (finish_reason "length") gets `floor`. `target` instead scores closeness
to a target length: 1 - |len - target| / window. Per-item limits may come from the task row
(meta["max_length"], meta["target_length"]) and win over the options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from q3.tokenizer import encode_batch
from train.post.rewards.base import (
    RewardInput,
    RewardOptions,
    RewardResult,
    answer_part,
    options,
    register,
    result,
)


class LengthOptions(RewardOptions):
    unit: Literal["tokens", "chars", "words"] = "tokens"
    scope: Literal["answer", "reply"] = "answer"
    max: int | None = Field(None, ge=0)
    target: int | None = Field(None, ge=0)
    window: int = Field(256, ge=1)         # units over max (or off target) for the score to reach floor
    floor: float = 0.0

    @model_validator(mode="after")
    def _one_rule(self):
        if self.max is not None and self.target is not None:
            raise ValueError("set max or target, not both")
        return self


class LengthReward:
    def __init__(self, opts: LengthOptions):
        self.name = opts.name or "length"
        self.opts = opts

    def lengths(self, texts: list[str]) -> list[int]:
        if self.opts.unit == "tokens":
            return [len(ids) for ids in encode_batch(texts)] if texts else []
        if self.opts.unit == "words":
            return [len(t.split()) for t in texts]
        return [len(t) for t in texts]

    def _one(self, item: RewardInput, n: int) -> RewardResult:
        try:
            return self._rule(item, n)
        except (TypeError, ValueError) as e:     # a bad max_length/target_length in the row: reported
            return result(self.opts.floor, "bad_length_meta", length=n, error=str(e)[:120])

    def _rule(self, item: RewardInput, n: int) -> RewardResult:
        o = self.opts
        lo = o.floor
        mx = item.meta.get("max_length", o.max)
        tgt = item.meta.get("target_length", o.target)
        if item.finish_reason == "length":
            return result(lo, "truncated", length=n)
        if tgt is not None:
            off = abs(n - int(tgt))
            return result(max(lo, 1.0 - off / o.window), "ok", length=n, target=int(tgt))
        if mx is None:
            return result(1.0, "no_limit", length=n)
        excess = max(0, n - int(mx))
        return result(max(lo, 1.0 - excess / o.window), "ok" if not excess else "over_limit",
                      length=n, limit=int(mx), excess=excess)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        texts = [x.reply if self.opts.scope == "reply" else answer_part(x.reply) for x in items]
        return [self._one(x, n) for x, n in zip(items, self.lengths(texts), strict=True)]


@register("length")
def build(spec: dict) -> LengthReward:
    return LengthReward(options(LengthOptions, spec))
