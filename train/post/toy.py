"""A toy verifiable task family for RL demonstrations and tests: single-digit addition.

    rl_rows, eval_rows, sft_rows = addition_task(noise=0.5, seed=0)

- queries: every a + b with a, b in 0..9, asked in 4 phrasings (400 queries), in no-think mode;
- RL pairs (`q3 synth verifiable` schema, `exact` verifier): phrasings 0-2 (300 queries);
- held-out eval pairs: phrasing 3 (100 queries): never sampled by RL;
- a *noisy* cold-start SFT set over all 400 queries: the answer is right with probability
  1 - noise, else off by one (a + b + 1) — a systematic error, so a model fitted to it is right
  about half the time when sampling and its greedy answer is a coin toss per query. GRPO has to
  find and reinforce the right answers from the verifier alone. A `verbose` share of the replies
  reads "Answer: N" instead of "N" (the `exact` verifier accepts both): the handle a length or
  format reward of general RL can move.
"""

from __future__ import annotations

import random

from synth.generators.schema import RLPair

PHRASINGS = ["What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.", "{a} plus {b} equals?"]


def pair(a: int, b: int, p: int) -> dict:
    q = PHRASINGS[p].format(a=a, b=b)
    item = RLPair(query=q, verifier_type="exact", verifier_data={"answer": str(a + b)}, domain="math",
                  subdomain=f"addition_p{p}", difficulty=1, source="toy.addition:v1", reference=str(a + b),
                  perturbed=str(a + b + 1))
    return {**item.__dict__}


def addition_task(noise: float = 0.5, seed: int = 0, copies: int = 2,
                  verbose: float = 0.0) -> tuple[list[dict], list[dict], list[dict]]:
    """(RL pairs, held-out eval pairs, noisy no-think SFT rows x `copies` draws of the noise)."""
    rng = random.Random(seed)
    rl, held, sft = [], [], []
    for a in range(10):
        for b in range(10):
            for p in range(len(PHRASINGS)):
                (held if p == len(PHRASINGS) - 1 else rl).append(pair(a, b, p))
                for _ in range(copies):
                    ans = a + b if rng.random() >= noise else a + b + 1
                    text = f"Answer: {ans}" if rng.random() < verbose else str(ans)
                    sft.append({"messages": [{"role": "user", "content": PHRASINGS[p].format(a=a, b=b) + " /no_think"},
                                             {"role": "assistant", "reasoning_content": "", "content": text}],
                                "source": "toy.addition:noisy", "correct": ans == a + b})
    rng.shuffle(sft)
    return rl, held, sft


# ------------------------------------------------------------------ two-digit addition (distillation)
# a + b with a, b in 10..99, answered in thinking mode with a short column-wise scratchpad whose
# steps compound: a wrong ones digit or carry makes the tens column, and so the answer, wrong.
TWO_DIGIT = range(10, 100)


def scratchpad(a: int, b: int) -> str:
    """'47+38: 7+8=15, write 5 carry 1. 4+3+1=8.' for 47 + 38: the operands restated (so each column
    reads digits at fixed offsets instead of searching a phrasing), the ones column, the carry, the
    tens column with the carry. Qwen3 tokenizes digits one by one: every step is a few tokens."""
    a1, a0, b1, b0 = a // 10, a % 10, b // 10, b % 10
    ones = a0 + b0
    carry = ones // 10
    return f"{a}+{b}: {a0}+{b0}={ones}, write {ones % 10} carry {carry}. {a1}+{b1}+{carry}={a1 + b1 + carry}."


def sum_pair(a: int, b: int, p: int) -> dict:
    """An RL pair (`exact` verifier on the text after the think block) for a + b in phrasing p."""
    q = PHRASINGS[p].format(a=a, b=b)
    item = RLPair(query=q, verifier_type="exact", verifier_data={"answer": str(a + b)}, domain="math",
                  subdomain="addition2", difficulty=2, source="toy.two_digit_addition:v1", reference=str(a + b),
                  perturbed=str(a + b + 10))
    return {**item.__dict__}


def teacher_rows(a: int, b: int, p: int, unflagged: bool) -> list[dict]:
    """The teacher's SFT rows for one query: thinking (flag `/think`, or no flag: thinking is the
    default) with the scratchpad as reasoning, and `/no_think` with an empty reasoning block."""
    q = PHRASINGS[p].format(a=a, b=b)
    src = {"source": "toy.two_digit_addition:teacher", "a": a, "b": b}
    return [{"messages": [{"role": "user", "content": q + ("" if unflagged else " /think")},
                          {"role": "assistant", "reasoning_content": scratchpad(a, b), "content": str(a + b)}],
             "mode": "think", **src},
            {"messages": [{"role": "user", "content": q + " /no_think"},
                          {"role": "assistant", "reasoning_content": "", "content": str(a + b)}],
             "mode": "no_think", **src}]


def two_digit_addition(seed: int = 0, n_prompts: int = 512, n_held: int = 200,
                       unflagged: float = 0.25) -> tuple[list[dict], list[dict], list[dict]]:
    """(distillation prompt pairs, held-out pairs, teacher SFT rows).

    The 8,100 (a, b) are shuffled by `seed`: the first `n_held` are held out (never in the prompts
    nor the teacher's rows), the next `n_prompts` are the distillation prompts; the teacher's rows
    cover every non-held (a, b) once in both modes, each query in a random phrasing (the held-out
    split is by operands, so no phrasing of a held-out sum is ever trained on). `unflagged`: share
    of thinking rows without a `/think` flag."""
    rng = random.Random(f"two_digit_addition:{seed}")
    ab = [(a, b) for a in TWO_DIGIT for b in TWO_DIGIT]
    rng.shuffle(ab)
    if n_held + n_prompts > len(ab):
        raise ValueError(f"n_held + n_prompts must be <= {len(ab)}")
    held = [sum_pair(a, b, rng.randrange(len(PHRASINGS))) for a, b in ab[:n_held]]
    prompts = [sum_pair(a, b, rng.randrange(len(PHRASINGS))) for a, b in ab[n_held:n_held + n_prompts]]
    rows = [r for a, b in ab[n_held:]
            for r in teacher_rows(a, b, rng.randrange(len(PHRASINGS)), rng.random() < unflagged)]
    rng.shuffle(rows)
    return prompts, held, rows
