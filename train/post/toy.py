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
