"""Scripted replies of a 'reasoning model' for the cold-start tests, served over real HTTP.

The replies are deterministic in (query, seed): each candidate seed exercises one filter with a real
response text (correct, wrong, looping, guessing, inconsistent, language-mixed), and /no_think
requests answer correctly only for queries whose index is even (so "answerable without CoT" drops
exactly those). The items come from our own generators.
"""

from __future__ import annotations

import re
from typing import Any

from synth.verifiers.math_answer import last_boxed

# candidate seed (1000 + k) -> the kind of response produced
CANDIDATE_KINDS = ["wrong", "repetition", "good", "guess", "inconsistent", "mixed", "good"]


def _answer_of(item: dict[str, Any]) -> str:
    return last_boxed(item["reference"]) or ""


def _wrong_of(item: dict[str, Any]) -> str:
    return last_boxed(item["perturbed"]) or "0"


def reasoning(answer: str) -> str:
    return ("Let me work through this carefully. First I restate the problem and identify what is asked. "
            "Then I compute the intermediate quantities one at a time and check each step against the "
            f"statement before moving on. After verifying the arithmetic twice, the answer is {answer}.")


def reply(body: dict[str, Any], items: dict[str, dict[str, Any]], order: list[str]) -> str:
    user = body["messages"][-1]["content"]
    no_think = user.endswith("/no_think")
    query = user.removesuffix(" /no_think")
    item = items.get(query)
    if item is None:
        return "<think>\n\n</think>\n\nI do not know."
    ans, wrong = _answer_of(item), _wrong_of(item)
    if no_think:
        idx = order.index(query)
        return f"<think>\n\n</think>\n\nThe final answer is \\boxed{{{ans if idx % 2 == 0 else wrong}}}."
    kind = CANDIDATE_KINDS[(int(body.get("seed") or 1000) - 1000) % len(CANDIDATE_KINDS)]
    if kind == "good":
        return f"<think>\n{reasoning(ans)}\n</think>\n\nThe final answer is \\boxed{{{ans}}}."
    if kind == "wrong":
        return f"<think>\n{reasoning(wrong)}\n</think>\n\nThe final answer is \\boxed{{{wrong}}}."
    if kind == "repetition":
        loop = "Wait, let me recompute this value again from the beginning to be sure. " * 15
        return f"<think>\n{loop}So the answer is {ans}.\n</think>\n\nThe final answer is \\boxed{{{ans}}}."
    if kind == "guess":
        return (f"<think>\nThis looks hard, so I'll just guess {ans}.\n</think>\n\n"
                f"The final answer is \\boxed{{{ans}}}.")
    if kind == "inconsistent":
        return f"<think>\n{reasoning(wrong)}\n</think>\n\nThe final answer is \\boxed{{{ans}}}."
    mixed = re.sub(r"Then I compute", "然后我逐步计算中间量并检查每一步，", reasoning(ans))
    return f"<think>\n{mixed}\n</think>\n\nThe final answer is \\boxed{{{ans}}}."
