"""Format and length checks (also usable in front of any other verifier via verifier_data["format"])."""

from __future__ import annotations

import re
from typing import Any

from q3.tokenizer import END_THINK, THINK


def check_format(response: str, spec: dict[str, Any]) -> tuple[bool, str]:
    """spec keys (all optional): require_think, require_boxed, min_chars, max_chars, regex, forbid."""
    if spec.get("require_think"):
        if response.count(THINK) != 1 or response.count(END_THINK) != 1 \
                or response.index(THINK) > response.index(END_THINK):
            return False, "bad_think_tags"
        if not response.rsplit(END_THINK, 1)[1].strip():
            return False, "no_answer_after_think"
    if spec.get("require_boxed") and "\\boxed{" not in response:
        return False, "no_boxed"
    n = len(response)
    if n < int(spec.get("min_chars", 0)):
        return False, "too_short"
    if spec.get("max_chars") is not None and n > int(spec["max_chars"]):
        return False, "too_long"
    if spec.get("regex") and not re.search(spec["regex"], response, re.S):
        return False, "regex_mismatch"
    for bad in spec.get("forbid", []):
        if bad in response:
            return False, "forbidden_text"
    return True, "ok"
