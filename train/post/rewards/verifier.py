"""`verifier`: synth's rule-based verifiers (math, code, logic, exact, format) on the task row —
the GRPO reasoning reward. Items run concurrently: the code verifier spends its time in a
sandbox subprocess per item, so threads overlap those waits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pydantic import Field

from synth.verifiers import verify_item
from train.post.rewards.base import RewardInput, RewardOptions, RewardResult, options, register, result


class VerifierOptions(RewardOptions):
    workers: int = Field(8, ge=1)            # concurrent verifications (code: sandbox subprocesses)


class VerifierReward:
    def __init__(self, opts: VerifierOptions):
        self.name = opts.name or "verifier"
        self.opts = opts

    def _one(self, item: RewardInput) -> RewardResult:
        if "verifier_type" not in item.meta or "verifier_data" not in item.meta:
            return result(0.0, "no_verifier")
        try:
            v = verify_item(item.reply, item.meta)
        except Exception as e:   # noqa: BLE001 - a verifier bug must cost one item, not the RL step
            return result(0.0, "verifier_error", detail=f"{type(e).__name__}: {e}"[:200])
        return result(v.score, v.reason, **({"detail": v.detail} if v.detail else {}))

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        if len(items) <= 1 or self.opts.workers == 1:
            return [self._one(x) for x in items]
        with ThreadPoolExecutor(min(self.opts.workers, len(items))) as pool:
            return list(pool.map(self._one, items))


@register("verifier")
def build(spec: dict) -> VerifierReward:
    return VerifierReward(options(VerifierOptions, spec))
