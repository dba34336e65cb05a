"""Math answers: pull the final answer out of a response and decide equivalence with a reference.

Extraction order: the last `\\boxed{...}` (balanced braces), else the last "final answer" line, else
the last "answer:" line. Equivalence: normalised string match, else sympy on a *restricted* parse
(a character/name whitelist before `parse_expr`, since model output is untrusted and `parse_expr`
evaluates), comparing numbers with a relative tolerance and expressions at random points
plus `simplify`. Tuples compare in order, sets ("x = 2 or x = 3", "{2, 3}") as multisets.
"""

from __future__ import annotations

import math
import random
import re
from functools import lru_cache

import sympy as sp
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from q3.tokenizer import END_THINK, THINK

_THINK = re.compile(r"<think>.*?</think>", re.S)
_FINAL_LINE = re.compile(r"(?im)^.*?\bfinal answer\b\s*(?:is)?\s*[:：]?\s*(.+?)\s*$")
_ANSWER_LINE = re.compile(r"(?im)^\s*(?:\*\*)?answer(?:\*\*)?\s*[:：]\s*(.+?)\s*$")


def strip_thinking(response: str) -> str:
    """The part after the reasoning: answers are judged on the summary, not on the thinking."""
    if END_THINK in response:
        return response.rsplit(END_THINK, 1)[1]
    if THINK in response:   # thinking never finished (e.g. cut by the budget): no answer yet
        return response.split(THINK, 1)[0]
    return _THINK.sub("", response)


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} or \\fbox{...}, honouring nested braces."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start:i - 1].strip()
    return None


def extract_answer(response: str) -> str | None:
    text = strip_thinking(response)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_FINAL_LINE, _ANSWER_LINE):
        found = pattern.findall(text)
        if found:
            ans = found[-1].strip().rstrip(".").strip()
            inner = last_boxed(ans)
            return inner if inner is not None else ans.strip("*$ ").strip()
    return None


# ---- normalisation -------------------------------------------------------------------------------

_LATEX_SUBS = [
    (r"\\left|\\right|\\!|\\,|\\;|\\:|\\displaystyle|\$", ""),
    (r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1"),
    (r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)"),
    (r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))"),
    (r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)"),
    (r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))"),
    (r"\\sqrt(\d+)", r"sqrt(\1)"),
    (r"\\cdot|\\times", "*"),
    (r"\\div", "/"),
    (r"\\pi", "pi"),
    (r"\\infty", "oo"),
    (r"\\le(?:q)?", "<="),
    (r"\\ge(?:q)?", ">="),
    (r"[{}]", lambda m: "(" if m.group(0) == "{" else ")"),
    (r"\^", "**"),
    (r"\\%|%", ""),
]

_ALLOWED_CHARS = re.compile(r"^[0-9a-zA-Z_+\-*/().,=<>\s]*$")
_ALLOWED_NAMES = {"sqrt", "pi", "oo", "E", "I", "e", "log", "ln", "exp", "sin", "cos", "tan", "abs"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def normalise(ans: str) -> str:
    s = ans.strip()
    for pat, rep in _LATEX_SUBS:
        s = re.sub(pat, rep, s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)          # 1,000 -> 1000
    s = re.sub(r"^\s*[a-zA-Z]\s*=\s*(?!.*=)", "", s)     # "x = 5" -> "5" (single assignment)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".")
    return s


def split_parts(ans: str) -> tuple[list[str], bool]:
    """('x = 2 or x = 3' | '{2, 3}' | '(1, 2)') -> parts, ordered?"""
    s = ans.strip()
    ordered = s.startswith("(") and s.endswith(")") and "," in s
    if s.startswith("\\{") or (s.startswith("{") and s.endswith("}")):
        s = s.replace("\\{", "").replace("\\}", "").strip("{}")
    elif ordered:
        s = s[1:-1]
    pieces = re.split(r",|\bor\b|\band\b|;", s)
    parts = [normalise(re.sub(r"^\s*[a-zA-Z]\s*=", "", p)) for p in pieces]
    return [p for p in parts if p], ordered


@lru_cache(maxsize=4096)
def to_sympy(s: str) -> sp.Expr | None:
    """Parse a normalised answer, refusing anything outside a tiny arithmetic language."""
    if len(s) > 200 or not _ALLOWED_CHARS.match(s) or "__" in s or "=" in s or "<" in s or ">" in s:
        return None
    names = set(_NAME.findall(s))
    if any(n not in _ALLOWED_NAMES and len(n) > 1 for n in names):
        return None
    local = {n: sp.Symbol(n) for n in names if n not in _ALLOWED_NAMES}
    local.update({"ln": sp.log, "e": sp.E, "abs": sp.Abs})
    try:   # evaluate=False: nothing is computed before the tree is checked (9^9^9 would hang)
        expr = parse_expr(s, local_dict=local, transformations=standard_transformations
                          + (implicit_multiplication_application, convert_xor), evaluate=False)
    except Exception:
        return None
    if not isinstance(expr, sp.Basic) or not _tame(expr):
        return None
    try:
        return sp.sympify(expr)   # now safe to evaluate: exponents are small plain numbers
    except Exception:
        return None


def _tame(expr: sp.Basic) -> bool:
    """Every power has a small numeric or symbolic exponent without nested powers."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Pow):
            exp = node.exp
            if any(isinstance(x, sp.Pow) for x in sp.preorder_traversal(exp)):
                return False
            if exp.is_number and (not exp.is_finite or abs(sp.N(exp)) > 1000):
                return False
    return True


def _numbers_close(a: complex, b: complex, rel: float, abs_tol: float) -> bool:
    return abs(a - b) <= max(abs_tol, rel * max(abs(a), abs(b)))


def expr_equal(a: sp.Expr, b: sp.Expr, rel: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    try:
        if a == b:
            return True
        syms = sorted(a.free_symbols | b.free_symbols, key=str)
        if not syms:
            return _numbers_close(complex(sp.N(a, 30)), complex(sp.N(b, 30)), rel, abs_tol)
        rng = random.Random(0)
        for _ in range(5):
            point = {s: sp.Rational(rng.randint(-97, 97), rng.randint(1, 13)) for s in syms}
            va, vb = complex(sp.N(a.subs(point))), complex(sp.N(b.subs(point)))
            if math.isnan(va.real) or math.isnan(vb.real):
                continue
            if not _numbers_close(va, vb, rel, abs_tol):
                return False
        return True   # agreed at every sampled point (no simplify: it can hang on hostile input)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return False


def answers_equal(candidate: str, reference: str, rel: float = 1e-6) -> bool:
    c, r = normalise(candidate), normalise(reference)
    if c == r or c.replace(" ", "").lower() == r.replace(" ", "").lower():
        return True
    cparts, cord = split_parts(candidate)
    rparts, rord = split_parts(reference)
    if len(rparts) > 1 or len(cparts) > 1:
        if len(cparts) != len(rparts):
            return False
        ce = [to_sympy(p) for p in cparts]
        re_ = [to_sympy(p) for p in rparts]
        if any(x is None for x in ce + re_):
            return sorted(cparts) == sorted(rparts)
        if rord:
            return all(expr_equal(x, y, rel) for x, y in zip(ce, re_, strict=True))
        remaining = list(re_)
        for x in ce:   # multiset match
            hit = next((i for i, y in enumerate(remaining) if expr_equal(x, y, rel)), None)
            if hit is None:
                return False
            remaining.pop(hit)
        return True
    ce1, re1 = to_sympy(c), to_sympy(r)
    if ce1 is None or re1 is None:
        return False
    return expr_equal(ce1, re1, rel)
