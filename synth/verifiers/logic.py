"""Logic-puzzle answers: an ordering of names, or a knight/knave role per person."""

from __future__ import annotations

import re

from synth.verifiers.math_answer import extract_answer, strip_thinking


def _answer_text(response: str) -> str:
    ans = extract_answer(response)
    return ans if ans is not None else ""


def check_order(response: str, names: list[str]) -> tuple[bool, str]:
    text = _answer_text(response)
    if not text:
        return False, "no_answer"
    found = [(m.start(), n) for n in names for m in re.finditer(rf"\b{re.escape(n)}\b", text, re.I)]
    order = [n for _, n in sorted(found)]
    if sorted(order) != sorted(names):
        return False, "wrong_answer"
    return (order == names), ("ok" if order == names else "wrong_answer")


def check_roles(response: str, roles: dict[str, str]) -> tuple[bool, str]:
    text = _answer_text(response) or strip_thinking(response)[-400:]
    if not text:
        return False, "no_answer"
    for name, role in roles.items():
        m = re.search(rf"\b{re.escape(name)}\b\W*(?:is\s+)?(?:an?\s+)?(knight|knave)", text, re.I)
        if m is None:
            return False, "no_answer"
        if m.group(1).lower() != role:
            return False, "wrong_answer"
    return True, "ok"
