"""Long-CoT cold-start filters (Qwen3 report, post-training stage 1), one small function each.

Query filters drop queries that make poor cold-start data: unverifiable, multi-part, or answerable
without reasoning (decided by a non-thinking sample in synth/coldstart.py). Response filters drop
candidate responses: wrong final answer, repetition, guessing without reasoning, thinking and
summary disagreeing, language mixing, too similar to validation items.

Every filter returns None (keep) or a short reason string (drop), so each is testable on its own
and the cold-start builder can count drops per reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

from q3.tokenizer import END_THINK, THINK
from synth.verifiers import VERIFIERS, verify
from synth.verifiers.math_answer import answers_equal, extract_answer, last_boxed

# ---- helpers --------------------------------------------------------------------------------------


def split_think(response: str) -> tuple[str, str] | None:
    """(thinking, summary) of a Qwen3 thinking-mode response, or None if the tags are malformed."""
    if response.count(THINK) != 1 or response.count(END_THINK) != 1:
        return None
    pre, rest = response.split(THINK, 1)
    think, summary = rest.split(END_THINK, 1)
    if pre.strip():
        return None
    return think.strip(), summary.strip()


_WORD = re.compile(r"\w+", re.U)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# ---- query filters --------------------------------------------------------------------------------


def unverifiable(item: dict[str, Any]) -> str | None:
    """No verifier we can run, or verifier data without what it needs."""
    vt, vd = item.get("verifier_type"), item.get("verifier_data")
    if vt not in VERIFIERS or vt == "format" or not isinstance(vd, dict):
        return "unverifiable"
    need = {"math": "answer", "exact": "answer", "logic": "answer", "code": "tests"}[vt]
    return None if vd.get(need) not in (None, "", [], {}) else "unverifiable"


_PART_MARKERS = [
    re.compile(r"(?m)^\s*\(?[a-d]\)\s+\S"),                  # (a) ... (b) ...
    re.compile(r"(?im)^\s*(?:part|question)\s+[a-d1-9]\b"),   # Part A / Question 2
    re.compile(r"(?m)^\s*[1-9][.)]\s+.*\?\s*$"),              # 1. ...?  2. ...?
]


def multi_part(query: str) -> str | None:
    """Several questions in one query: their answers cannot be checked as one final answer."""
    hits = sum(len(p.findall(query)) for p in _PART_MARKERS)
    questions = len(re.findall(r"\?(?=\s|$)", query))
    if hits >= 2 or questions >= 3:
        return "multi_part"
    return None


# ---- response filters ------------------------------------------------------------------------------


def wrong_answer(item: dict[str, Any], response: str) -> str | None:
    r = verify(response, item["verifier_type"], item["verifier_data"])
    return None if r.passed else f"wrong_answer:{r.reason}"


def repetition(response: str, n: int = 8, max_dup_frac: float = 0.3, max_line_repeats: int = 4) -> str | None:
    """Degenerate loops: many repeated word n-grams, or the same line over and over."""
    toks = words(response)
    grams = ngrams(toks, n)
    if len(grams) >= 20:
        counts = Counter(grams)
        dup = sum(c for c in counts.values() if c > 1) / len(grams)
        if dup > max_dup_frac:
            return "repetition"
    lines = [ln.strip() for ln in response.splitlines() if len(ln.strip()) > 10]
    if lines and Counter(lines).most_common(1)[0][1] > max_line_repeats:
        return "repetition"
    return None


_GUESS = re.compile(
    r"\b(?:i(?:'ll| will)? (?:just )?guess|just guess|random(?:ly)? (?:pick|guess|choose)|"
    r"i(?:'m| am) not sure,? (?:but|so)|without (?:checking|computing|working)|"
    r"(?:probably|maybe) (?:it'?s|the answer is)|let'?s (?:just )?say|go with)\b", re.I)


def guessing(response: str, min_think_words: int = 20) -> str | None:
    """An answer without reasoning: thinking too short, or it says it is guessing."""
    parts = split_think(response)
    think = parts[0] if parts else response
    if len(words(think)) < min_think_words:
        return "guessing:short_thinking"
    if _GUESS.search(think):
        return "guessing:guess_phrase"
    return None


_THINK_ANSWER = re.compile(r"(?i)(?:answer|result|solution) (?:is|should be|=|:)\s*([^\n]+?)\s*(?:\.(?=\s|$)|$)", re.M)


def thinking_answer(think: str) -> str | None:
    """The answer the thinking arrives at: its last \\boxed{}, else its last 'the answer is ...'."""
    boxed = last_boxed(think)
    if boxed is not None:
        return boxed
    found = _THINK_ANSWER.findall(think)
    return found[-1].strip().strip("*$ ") if found else None


def inconsistent(item: dict[str, Any], response: str) -> str | None:
    """The summary's final answer differs from the one the thinking reached."""
    parts = split_think(response)
    if parts is None:
        return "inconsistent:bad_think_tags"
    think, summary = parts
    if not summary:
        return "inconsistent:no_summary"
    if item.get("verifier_type") == "code":   # the code in the summary is the answer; compare nothing
        return None
    t_ans, s_ans = thinking_answer(think), extract_answer(summary)
    if t_ans is None or s_ans is None:
        return None   # nothing stated to compare (wrong_answer catches a missing final answer)
    if item.get("verifier_type") == "math":
        same = answers_equal(t_ans, s_ans)
    else:
        same = _norm(t_ans) == _norm(s_ans)
    return None if same else "inconsistent:thinking_vs_summary"


def _norm(s: str) -> str:
    return re.sub(r"[\s.*$]+", " ", s.lower()).strip()


def script_of(ch: str) -> str | None:
    """A coarse script name for a letter (None for digits, punctuation, symbols)."""
    if not ch.isalpha():
        return None
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return None
    for script in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "CYRILLIC", "GREEK", "ARABIC", "HEBREW",
                   "DEVANAGARI", "THAI", "LATIN"):
        if script in name:
            return {"HIRAGANA": "JAPANESE", "KATAKANA": "JAPANESE"}.get(script, script)
    return "OTHER"


def script_counts(text: str) -> Counter:
    # LaTeX commands and code identifiers are Latin whatever the language: ignore \commands
    text = re.sub(r"\\[a-zA-Z]+", " ", text)
    return Counter(s for s in map(script_of, text) if s)


def language_mixing(query: str, response: str, max_foreign_frac: float = 0.02) -> str | None:
    """The response uses letters of a script the query does not use (e.g. Chinese inside an
    English chain of thought). Letters of the query's own scripts are always fine; Latin is allowed
    in any response (formulas, code, variable names)."""
    q = script_counts(query)
    allowed = {s for s, c in q.items() if c >= 0.05 * max(1, sum(q.values()))} | {"LATIN"}
    r = script_counts(response)
    total = sum(r.values())
    if not total:
        return None
    foreign = sum(c for s, c in r.items() if s not in allowed)
    if foreign / total > max_foreign_frac:
        return "language_mixing"
    # a Latin-free query (e.g. Chinese) answered mostly in Latin script words is mixing too
    if "LATIN" not in {s for s, c in q.items() if c} and r.get("LATIN", 0) / total > 0.5:
        return "language_mixing"
    return None


class NgramIndex:
    """Word n-grams of validation items, for the 'too similar to validation' filter.

    Flags a text when a fraction >= `threshold` of its n-grams occur in any one validation item
    (containment, so a long response that quotes a short validation question is still caught)."""

    def __init__(self, texts: Iterable[str], n: int = 8, threshold: float = 0.5):
        self.n, self.threshold = n, threshold
        self.index: dict[tuple[str, ...], set[int]] = {}
        self.sizes: list[int] = []
        for i, t in enumerate(texts):
            grams = set(ngrams(words(t), n))
            self.sizes.append(len(grams))
            for g in grams:
                self.index.setdefault(g, set()).add(i)

    def __len__(self) -> int:
        return len(self.sizes)

    def overlap(self, text: str) -> tuple[float, int | None]:
        """(max containment of a validation item's n-grams in `text`, that item's index)."""
        grams = set(ngrams(words(text), self.n))
        hits: Counter = Counter()
        for g in grams:
            for i in self.index.get(g, ()):
                hits[i] += 1
        if not hits:
            return 0.0, None
        i, c = max(hits.items(), key=lambda kv: kv[1] / max(1, self.sizes[kv[0]]))
        return c / max(1, self.sizes[i]), i

    def too_similar(self, text: str) -> str | None:
        frac, i = self.overlap(text)
        return f"too_similar_to_validation:{i}" if frac >= self.threshold else None


def response_filters(item: dict[str, Any], response: str, validation: NgramIndex | None = None,
                     cfg: dict[str, Any] | None = None) -> str | None:
    """Apply every response filter in order; the first failing one's reason, or None to keep."""
    cfg = cfg or {}
    parts = split_think(response)
    if parts is None:
        return "format:bad_think_tags"
    checks = [
        lambda: inconsistent(item, response),
        lambda: repetition(response, **cfg.get("repetition", {})),
        lambda: guessing(response, **cfg.get("guessing", {})),
        lambda: language_mixing(item["query"], response, **cfg.get("language_mixing", {})),
        lambda: validation.too_similar(item["query"] + "\n" + parts[1]) if validation is not None else None,
        lambda: wrong_answer(item, response),   # last: it may run code in the sandbox
    ]
    for check in checks:
        reason = check()
        if reason:
            return reason
    return None


def strip_to_answer(text: str) -> str:
    """A non-thinking reply may still carry an (empty) think block; judge what follows it."""
    parts = split_think(text)
    return parts[1] if parts else text
