"""Sampling for Qwen3: temperature, top-k, top-p, presence penalty, and the report's presets.

The Qwen3 report evaluates thinking mode with T=0.6, top-p 0.95, top-k 20 and non-thinking mode
with T=0.7, top-p 0.8, top-k 20, presence penalty 1.5; max output 32,768 tokens. The thinking
budget: once the model has spent `thinking_budget` tokens inside <think>, we stop its thinking by
inserting THINKING_BUDGET_TEXT (which closes the think block) and let it write the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from q3.tokenizer import END_THINK_ID, THINK_ID

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


def candidates(logits: torch.Tensor, generated: list[int], p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, log-probabilities) that survive presence penalty, temperature, top-k, top-p.

    Presence penalty (OpenAI semantics): subtract `presence_penalty` once from the logit of every
    token already in the generated text. top-k runs first (a partial sort of the vocabulary),
    then top-p keeps the smallest prefix of the k whose probability mass reaches top_p.
    """
    x = logits.detach().float()
    if p.presence_penalty and generated:
        x = x.clone()
        seen = torch.tensor(sorted(set(generated)), dtype=torch.long)
        x[seen[seen < x.numel()]] -= p.presence_penalty
    if p.temperature <= 0:                       # greedy
        return x.argmax().view(1), torch.zeros(1)
    k = p.top_k if 0 < p.top_k < x.numel() else x.numel()
    vals, idx = torch.topk(x, k)                 # sorted, descending
    vals = vals / p.temperature
    if 0 < p.top_p < 1:
        probs = torch.softmax(vals, dim=-1)
        keep = probs.cumsum(-1) - probs < p.top_p
        vals, idx = vals[keep], idx[keep]
    return idx, torch.log_softmax(vals, dim=-1)


def process_logits(logits: torch.Tensor, generated: list[int], p: SamplingParams) -> torch.Tensor:
    """Log-probabilities over the whole vocabulary (-inf where filtered out)."""
    idx, lp = candidates(logits, generated, p)
    return torch.full((logits.numel(),), float("-inf")).scatter(0, idx, lp)


def sample_batch(logits: torch.Tensor, seen: torch.Tensor | None, p: SamplingParams,
                 uniform: torch.Tensor) -> torch.Tensor:
    """Token ids [b] for logits [b, vocab], the same filters as `candidates` row by row.

    `seen` (bool [b, vocab]) marks tokens already generated (presence penalty). One uniform draw
    per row picks among the top-k/top-p candidates by inverse CDF (cumsum + searchsorted), so the
    cost is O(k) after the top-k, not a multinomial over the vocabulary.
    """
    x = logits.detach().float()
    if p.presence_penalty and seen is not None:
        x = x - p.presence_penalty * seen.to(x.dtype)
    if p.temperature <= 0:                       # greedy
        return x.argmax(dim=-1)
    k = p.top_k if 0 < p.top_k < x.shape[-1] else x.shape[-1]
    if k == x.shape[-1] and not 0 < p.top_p < 1:     # the full distribution (RL rollouts): no sort needed
        cdf = torch.softmax(x / p.temperature, dim=-1).cumsum(-1)
        target = (uniform.to(cdf.dtype).view(-1) * cdf[:, -1]).unsqueeze(-1)
        return torch.searchsorted(cdf, target).clamp(max=x.shape[-1] - 1).squeeze(-1)
    vals, idx = torch.topk(x, k, dim=-1)         # sorted, descending
    probs = torch.softmax(vals / p.temperature, dim=-1)
    if 0 < p.top_p < 1:
        probs = probs * (probs.cumsum(-1) - probs < p.top_p)
    cdf = probs.cumsum(-1)
    target = (uniform.to(cdf.dtype).view(-1) * cdf[:, -1]).unsqueeze(-1)
    j = torch.searchsorted(cdf, target).clamp(max=k - 1)
    return idx.gather(-1, j).squeeze(-1)


def sample(logits: torch.Tensor, generated: list[int], p: SamplingParams,
           generator: torch.Generator | None = None, allowed: torch.Tensor | None = None) -> int:
    """One token id. `allowed` (index tensor) restricts the choice (constrained decoding); the
    restriction is applied before top-k/top-p so that they rank allowed tokens only."""
    x = logits.detach().float()
    if allowed is not None:
        masked = torch.full((x.numel(),), float("-inf"))
        masked[allowed] = x[allowed]
        x = masked
    if not torch.isfinite(x).any():
        return int(logits.argmax())
    seen = None
    if p.presence_penalty and generated:
        seen = torch.zeros(x.numel(), dtype=torch.bool)
        ids = torch.tensor(sorted(set(generated)), dtype=torch.long)
        seen[ids[ids < x.numel()]] = True
        seen = seen.unsqueeze(0)
    u = torch.rand(1, generator=generator)
    return int(sample_batch(x.unsqueeze(0), seen, p, u)[0])


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
