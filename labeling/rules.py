"""Rule-based signals that need no model: code presence and math presence.

They fill `labels.has_code` / `labels.has_math` directly and add their raw signals to
`labels.extra` (`code_line_frac`, `math_density`), so the thresholds can be revisited later
without relabeling. Language-independent: they look at syntax, symbols and LaTeX, not words.
"""

from __future__ import annotations

import re

# A line that looks like program text in a C-like language, Python, shell or markup.
_CODE_LINE = re.compile(
    r"""^\s*(
        (def|class|async\s+def)\s+\w+\s*[(:]          # Python definitions
      | (import|from)\s+[\w.]+(\s+import\s+[\w.*, ]+)?\s*$
      | \#\s*include\s*[<"]                            # C preprocessor
      | \#\s*define\s+\w+
      | (if|elif|while|for)\s*\(?.*\)?\s*[:{]\s*$      # control flow ending a line
      | (return|yield|raise|throw)\b.*                 # statements
      | [\w.\[\]]+\s*(=|\+=|-=|\*=|==)\s*[^=].*[;)\]]?\s*$ # assignments
      | .*[;{}]\s*$                                    # C-like statement/block ends
      | (public|private|static|const|var|let|function|fn|func|int|void|char)\s+[\w*]+
      | [\w.]+\(.*\)\s*(;|\{)?\s*$                     # a bare call (not "ls(1)" in prose)
    )""",
    re.X,
)
_LATEX = re.compile(r"\$\$.+?\$\$|\$[^$\n]{1,200}\$|\\(frac|sum|int|sqrt|alpha|beta|gamma|theta|lambda|pi|sigma|"
                    r"partial|infty|cdot|leq|geq|neq|mathbb|mathrm|begin\{(equation|align)\})", re.S)
_MATH_SYM = re.compile(r"[∑∫√≤≥≠≈∞∂∇±×÷∈∉⊂⊆∪∩∀∃⇒⇔∝²³½¼]")
_EQUATION = re.compile(r"(?<![\w=<>!])[A-Za-z]\w{0,3}\s*=\s*[-\d(A-Za-z][^=\n]{0,40}[-+*/^][^=\n]{0,40}")

CODE_LINE_FRAC = 0.25    # has_code when at least this share of non-empty lines look like code
CODE_MIN_LINES = 3
MATH_DENSITY = 0.002     # has_math when (latex + symbols + equations) per character exceeds this
MATH_MIN_HITS = 3


def code_signal(text: str) -> tuple[bool, float]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return False, 0.0
    hits = sum(1 for ln in lines if len(ln) < 300 and _CODE_LINE.match(ln))
    frac = hits / len(lines)
    return (hits >= CODE_MIN_LINES and frac >= CODE_LINE_FRAC), frac


def math_signal(text: str) -> tuple[bool, float]:
    if not text:
        return False, 0.0
    hits = len(_LATEX.findall(text)) * 3 + len(_MATH_SYM.findall(text)) + len(_EQUATION.findall(text))
    density = hits / len(text)
    return (hits >= MATH_MIN_HITS and density >= MATH_DENSITY), density


RULES = {"code": code_signal, "math": math_signal}


def apply_rules(text: str) -> dict[str, object]:
    """{'has_code', 'has_math', 'code_line_frac', 'math_density'} for one document."""
    has_code, frac = code_signal(text)
    has_math, dens = math_signal(text)
    return {"has_code": has_code, "has_math": has_math, "code_line_frac": round(frac, 4),
            "math_density": round(dens, 5)}
