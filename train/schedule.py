"""Learning-rate schedules: linear warmup, then cosine / WSD / linear / constant.

`decay_fraction` is the share of the post-warmup steps spent decaying; the rest is spent at the
end value (cosine/linear: decay early then hold `min_lr` -> S2's *faster decay*) or, for WSD
(warmup-stable-decay), at peak before the decay phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    min_lr: float
    total_steps: int
    warmup_steps: int
    decay: str = "cosine"           # cosine | wsd | linear | constant
    decay_fraction: float = 1.0

    def __call__(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.lr
        after = self.total_steps - self.warmup_steps
        decay_steps = max(1, round(after * self.decay_fraction))
        t = step - self.warmup_steps
        if self.decay == "wsd":
            stable = after - decay_steps
            if t < stable:
                return self.lr
            progress = min(1.0, (t - stable + 1) / decay_steps)
            return self.lr - (self.lr - self.min_lr) * progress
        progress = min(1.0, t / decay_steps)
        if self.decay == "linear":
            return self.lr - (self.lr - self.min_lr) * progress
        if self.decay == "cosine":
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        raise ValueError(f"unknown decay {self.decay!r}")


def make_schedule(manifest_schedule, overrides, optim, total_steps: int) -> LRSchedule:
    """Merge the manifest's schedule with the run config's overrides."""
    s = manifest_schedule
    warmup = overrides.warmup_fraction if overrides.warmup_fraction is not None else s.warmup_fraction
    return LRSchedule(
        lr=optim.lr if optim.lr is not None else s.lr,
        min_lr=optim.min_lr if optim.min_lr is not None else s.min_lr,
        total_steps=total_steps,
        warmup_steps=int(round(warmup * total_steps)),
        decay=overrides.decay or s.decay,
        decay_fraction=overrides.decay_fraction if overrides.decay_fraction is not None else s.decay_fraction,
    )
