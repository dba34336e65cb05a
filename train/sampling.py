"""Sampling for Qwen3: temperature, top-k, top-p, presence penalty, and the report's presets.

The Qwen3 report evaluates thinking mode with T=0.6, top-p 0.95, top-k 20 and non-thinking mode
with T=0.7, top-p 0.8, top-k 20, presence penalty 1.5; max output 32,768 tokens. The thinking
budget: once the model has spent `thinking_budget` tokens inside <think>, we stop its thinking by
inserting THINKING_BUDGET_TEXT (which closes the think block) and let it write the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

THINK_ID, END_THINK_ID = 151667, 151668          # <think>, </think>
THINKING_BUDGET_TEXT = ("Considering the limited time by the user, I have to give the solution based on "
                        "the thinking directly now.\n</think>.\n\n")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    presence_penalty: float = 0.0
    max_tokens: int = 32768
    thinking_budget: int | None = None     # None: unlimited thinking

    def with_(self, **kw) -> SamplingParams:
        """A copy with the non-None keyword values replaced (request overrides of a preset)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


PRESETS: dict[str, SamplingParams] = {
    "thinking": SamplingParams(temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.0, max_tokens=32768),
    "non_thinking": SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5, max_tokens=32768),
}


def preset_for(thinking: bool) -> SamplingParams:
    return PRESETS["thinking" if thinking else "non_thinking"]


def process_logits(logits: torch.Tensor, generated: list[int], p: SamplingParams) -> torch.Tensor:
    """Log-probabilities [vocab] after presence penalty, temperature, top-k and top-p.

    Presence penalty (OpenAI semantics): subtract `presence_penalty` once from the logit of every
    token that already occurs in the generated text. Filtered-out tokens get -inf.
    """
    x = logits.detach().float().clone()
    if p.presence_penalty and generated:
        seen = torch.tensor(sorted(set(generated)), dtype=torch.long)
        seen = seen[seen < x.numel()]
        x[seen] -= p.presence_penalty
    if p.temperature <= 0:                       # greedy
        out = torch.full_like(x, float("-inf"))
        out[x.argmax()] = 0.0
        return out
    x = x / p.temperature
    if 0 < p.top_k < x.numel():
        kth = torch.topk(x, p.top_k).values[-1]
        x[x < kth] = float("-inf")
    if 0 < p.top_p < 1:
        sorted_x, idx = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        cum = probs.cumsum(-1)
        drop = cum - probs > p.top_p             # keep the smallest prefix whose mass reaches top_p
        sorted_x[drop] = float("-inf")
        x = torch.full_like(x, float("-inf")).scatter(0, idx, sorted_x)
    return torch.log_softmax(x, dim=-1)


def sample(logits: torch.Tensor, generated: list[int], p: SamplingParams,
           generator: torch.Generator | None = None, allowed: torch.Tensor | None = None) -> int:
    """One token id. `allowed` (bool [vocab] or index tensor) restricts the choice (constrained
    decoding); the restriction is applied before top-k/top-p so that they rank allowed tokens."""
    if allowed is not None:
        mask = torch.full_like(logits, float("-inf"), dtype=torch.float32)
        mask[allowed] = 0.0
        logits = logits.float() + mask
    lp = process_logits(logits, generated, p)
    if not torch.isfinite(lp).any():
        return int(logits.argmax())
    return int(torch.multinomial(lp.exp(), 1, generator=generator))


class ThinkingBudget:
    """Tracks tokens spent inside <think>...</think> and says when to force the end of thinking."""

    def __init__(self, budget: int | None, in_think: bool):
        self.budget, self.in_think, self.spent, self.forced = budget, in_think, 0, False

    def observe(self, token: int) -> None:
        if token == THINK_ID:
            self.in_think = True
        elif token == END_THINK_ID:
            self.in_think = False
        elif self.in_think:
            self.spent += 1

    def exhausted(self) -> bool:
        return self.budget is not None and self.in_think and self.spent >= self.budget
