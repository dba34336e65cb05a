"""One verifier interface for RL rewards and data filters:

    verify(response, verifier_type, verifier_data) -> VerifyResult(score, reason)

verifier_type: "math" {answer, rel_tol?} | "code" {entry_point, tests, limits?} |
"logic" {kind: order|roles, answer} | "format" {require_think?, max_chars?, ...} |
"exact" {answer}. Any verifier_data may carry "format": {...}, checked first.
Never raises on a bad response: a malformed answer scores 0 with a reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synth.verifiers.code import extract_code, run_tests
from synth.verifiers.format import check_format
from synth.verifiers.logic import check_order, check_roles
from synth.verifiers.math_answer import answers_equal, extract_answer, strip_thinking
from synth.verifiers.sandbox import SandboxLimits


@dataclass(frozen=True)
class VerifyResult:
    score: float
    reason: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.score >= 1.0


def _math(response: str, data: dict[str, Any]) -> VerifyResult:
    ans = extract_answer(response)
    if ans is None:
        return VerifyResult(0.0, "no_answer")
    ok = answers_equal(ans, str(data["answer"]), rel=float(data.get("rel_tol", 1e-6)))
    return VerifyResult(1.0 if ok else 0.0, "ok" if ok else "wrong_answer", ans[:200])


def _code(response: str, data: dict[str, Any]) -> VerifyResult:
    code = extract_code(response)
    if code is None:
        return VerifyResult(0.0, "no_code")
    limits = SandboxLimits(**data.get("limits", {}))
    passed, total, reason, detail = run_tests(code, data["entry_point"], data["tests"], limits)
    score = 1.0 if passed == total else (passed / total if data.get("partial_credit") else 0.0)
    return VerifyResult(score, reason, f"{passed}/{total} passed; {detail}".strip("; "))


def _logic(response: str, data: dict[str, Any]) -> VerifyResult:
    if data["kind"] == "order":
        ok, reason = check_order(response, list(data["answer"]))
    elif data["kind"] == "roles":
        ok, reason = check_roles(response, dict(data["answer"]))
    else:
        return VerifyResult(0.0, "unknown_logic_kind", str(data["kind"]))
    return VerifyResult(1.0 if ok else 0.0, reason)


def _format(response: str, data: dict[str, Any]) -> VerifyResult:
    ok, reason = check_format(response, data)
    return VerifyResult(1.0 if ok else 0.0, reason)


def _exact(response: str, data: dict[str, Any]) -> VerifyResult:
    ans = extract_answer(response)
    if ans is None:
        ans = strip_thinking(response).strip()
    ok = ans.strip().lower() == str(data["answer"]).strip().lower()
    return VerifyResult(1.0 if ok else 0.0, "ok" if ok else "wrong_answer", ans[:200])


VERIFIERS: dict[str, Callable[[str, dict[str, Any]], VerifyResult]] = {
    "math": _math, "code": _code, "logic": _logic, "format": _format, "exact": _exact,
}


def verify(response: str, verifier_type: str, verifier_data: dict[str, Any]) -> VerifyResult:
    fn = VERIFIERS.get(verifier_type)
    if fn is None:
        return VerifyResult(0.0, "unknown_verifier", verifier_type)
    if not isinstance(response, str):
        return VerifyResult(0.0, "not_text")
    if verifier_type != "format" and verifier_data.get("format"):
        ok, reason = check_format(response, verifier_data["format"])
        if not ok:
            return VerifyResult(0.0, reason)
    try:
        return fn(response, verifier_data)
    except (KeyError, TypeError, ValueError) as e:   # malformed verifier_data is a bug upstream: say so
        return VerifyResult(0.0, "bad_verifier_data", f"{type(e).__name__}: {e}"[:200])


def verify_item(response: str, item: dict[str, Any]) -> VerifyResult:
    """verify() for one RL pair (a row of `q3 synth verifiable`): the GRPO reward entry point."""
    return verify(response, item["verifier_type"], item["verifier_data"])


__all__ = ["VerifyResult", "verify", "verify_item", "VERIFIERS", "extract_answer", "SandboxLimits"]
