"""`instruction`: IFEval-style verifiable constraints on the answer (the text after </think>).

meta["constraints"] is a list of dicts, each with a `type` from CHECKS and its arguments, e.g.
{"type": "word_count", "min": 20, "max": 60} or {"type": "include_keywords", "keywords": ["ocean"]}.
Score: the fraction satisfied, or 1/0 with `all_or_nothing`. A constraint of an unknown type or
with bad arguments counts as unmet, with its reason in details (a data bug, reported, not raised).
Language uses the corpus pipeline's fastText lid.176 (dataproc.stages.langid; <1 s to load).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from train.post.rewards.base import (
    RewardInput,
    RewardOptions,
    RewardResult,
    answer_part,
    options,
    register,
    result,
)

_WORD = re.compile(r"\b\w+\b", re.U)
_SENT_END = re.compile(r"[.!?。！？]+(?=\s|$)")
_BULLET = re.compile(r"(?m)^\s*[-*•]\s+\S")
_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.S)


def words(text: str) -> int:
    return len(_WORD.findall(text))


def sentences(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    n = len(_SENT_END.findall(text))
    return n if text[-1] in ".!?。！？" else n + 1     # a last sentence without its full stop


def _bounds(n: int, c: dict) -> tuple[bool, str]:
    lo, hi = c.get("min"), c.get("max")
    if lo is None and hi is None:
        raise ValueError("needs min and/or max")
    ok = (lo is None or n >= int(lo)) and (hi is None or n <= int(hi))
    return ok, f"{n} (min {lo}, max {hi})"


def _keywords(c: dict) -> list[str]:
    kws = c["keywords"]
    if not isinstance(kws, list) or not all(isinstance(k, str) for k in kws):
        raise ValueError("keywords must be a list of strings")
    return kws


def _has(text: str, kw: str, case: bool) -> bool:
    return (kw in text) if case else (kw.lower() in text.lower())


def _include(text: str, c: dict) -> tuple[bool, str]:
    missing = [k for k in _keywords(c) if not _has(text, k, c.get("case_sensitive", False))]
    return not missing, f"missing {missing}" if missing else "all present"


def _exclude(text: str, c: dict) -> tuple[bool, str]:
    found = [k for k in _keywords(c) if _has(text, k, c.get("case_sensitive", False))]
    return not found, f"found {found}" if found else "none present"


def _json(text: str, c: dict) -> tuple[bool, str]:
    m = _FENCE.match(text.strip())
    try:
        data = json.loads(m.group(1) if m else text)
    except ValueError as e:
        return False, f"invalid JSON: {e}"[:120]
    missing = [k for k in c.get("required_keys", []) if not (isinstance(data, dict) and k in data)]
    return (not missing), (f"missing keys {missing}" if missing else "valid")


def _language(text: str, c: dict) -> tuple[bool, str]:
    from dataproc.stages.langid import LID176, default_model_path, load_model, predict

    want = str(c["lang"])
    labels, probs = predict(load_model(default_model_path()), [text.replace("\n", " ")[:2000]])
    got = labels[0].removeprefix("__label__")
    codes = {got, LID176.get(got, got), LID176.get(got, got).split("_")[0]}
    ok = want in codes and probs[0] >= float(c.get("min_score", 0.5))
    return ok, f"{got} ({probs[0]:.2f})"


CHECKS: dict[str, Callable[[str, dict], tuple[bool, str]]] = {
    "word_count": lambda t, c: _bounds(words(t), c),
    "sentence_count": lambda t, c: _bounds(sentences(t), c),
    "char_count": lambda t, c: _bounds(len(t), c),
    "bullet_count": lambda t, c: _bounds(len(_BULLET.findall(t)), c),
    "include_keywords": _include,
    "exclude_keywords": _exclude,
    "keyword_frequency": lambda t, c: _bounds(len(re.findall(rf"\b{re.escape(c['keyword'])}\b", t, re.I)), c),
    "json": _json,
    "language": _language,
    "starts_with": lambda t, c: (t.strip().startswith(c["prefix"]), repr(t.strip()[:40])),
    "ends_with": lambda t, c: (t.strip().endswith(c["suffix"]), repr(t.strip()[-40:])),
    "lowercase": lambda t, c: (t == t.lower() and t != t.upper(), "checked"),
    "uppercase": lambda t, c: (t == t.upper() and t != t.lower(), "checked"),
    "no_commas": lambda t, c: ("," not in t and "，" not in t, "checked"),
}


def check_constraint(answer: str, c: Any) -> tuple[bool, str]:
    """(satisfied, why) for one constraint; never raises."""
    if not isinstance(c, dict) or c.get("type") not in CHECKS:
        return False, f"unknown constraint {c!r}"[:160]
    try:
        return CHECKS[c["type"]](answer, c)
    except (KeyError, TypeError, ValueError) as e:
        return False, f"bad constraint arguments: {type(e).__name__}: {e}"[:160]


class InstructionOptions(RewardOptions):
    all_or_nothing: bool = False


class InstructionReward:
    def __init__(self, opts: InstructionOptions):
        self.name = opts.name or "instruction"
        self.opts = opts

    def _one(self, item: RewardInput) -> RewardResult:
        cons = item.meta.get("constraints")
        if not isinstance(cons, list) or not cons:
            return result(0.0, "no_constraints")
        answer = answer_part(item.reply)
        checks = [(c.get("type") if isinstance(c, dict) else None, *check_constraint(answer, c)) for c in cons]
        met = sum(ok for _, ok, _ in checks)
        frac = met / len(checks)
        score = float(met == len(checks)) if self.opts.all_or_nothing else frac
        failed = {f"{i}:{t}": why for i, (t, ok, why) in enumerate(checks) if not ok}
        return result(score, "ok" if not failed else "unmet", satisfied=f"{met}/{len(checks)}", failed=failed)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        return [self._one(x) for x in items]


@register("instruction")
def build(spec: dict) -> InstructionReward:
    return InstructionReward(options(InstructionOptions, spec))
