"""`mix`: a weighted sum of component rewards. Each component scores the whole batch once
(a judge sends one batch of requests); details carry every component's score and reason."""

from __future__ import annotations

from pydantic import Field

from train.post.rewards.base import (
    Reward,
    RewardInput,
    RewardOptions,
    RewardResult,
    build_reward,
    options,
    register,
)


class MixOptions(RewardOptions):
    components: list[dict] = Field(min_length=1)


class MixReward:
    def __init__(self, components: list[Reward], name: str = "mix"):
        self.name = name
        self.components = components
        names: list[str] = []
        for c in components:                 # two components of one type: verifier, verifier_2
            base, k = c.name, 2
            while c.name in names:
                c.name = f"{base}_{k}"
                k += 1
            names.append(c.name)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        out = [RewardResult(0.0, {"reasons": {}}) for _ in items]
        for c in self.components:
            w = getattr(c, "weight", 1.0)
            for r, sub in zip(out, c.score(items), strict=True):
                r.score += w * sub.score
                r.details[c.name] = sub.score
                r.details["reasons"][c.name] = sub.details.get("reason", "")
                extra = {k: v for k, v in sub.details.items() if k != "reason"}
                if extra:
                    r.details.setdefault("info", {})[c.name] = extra
        return out


def build_mix(specs: list[dict], name: str = "mix") -> MixReward:
    return MixReward([build_reward(s) for s in specs], name)


@register("mix")
def build(spec: dict) -> MixReward:
    o = options(MixOptions, spec)
    return build_mix(o.components, o.name or "mix")
