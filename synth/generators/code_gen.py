"""Function-writing tasks with hidden unit tests.

Each task has a reference implementation (ours, trusted, run in-process to compute expected
outputs), a plausible buggy implementation (the perturbed response the verifier must reject), a
description, and an input generator scaled by difficulty. The query shows one example; the
verifier holds the hidden tests (edge cases first). A task whose buggy version passes every
generated test gets more random tests until one catches it.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CodeTask:
    name: str
    entry: str
    signature: str
    description: str
    difficulty: int
    reference: str
    buggy: str
    gen: Callable[[random.Random, int], list[Any]]   # (rng, size) -> argument list
    edges: tuple = ()

    def fn(self, src: str | None = None) -> Callable:
        ns: dict[str, Any] = {}
        exec(src or self.reference, ns)   # our own source text, never model output
        return ns[self.entry]


def _ints(rng: random.Random, n: int, lo: int = -50, hi: int = 50) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _word(rng: random.Random, n: int, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


TASKS = [
    CodeTask("sum_multiples", "sum_multiples", "def sum_multiples(xs: list[int], k: int) -> int",
             "Return the sum of the elements of `xs` that are divisible by `k` (k > 0).", 1,
             "def sum_multiples(xs, k):\n    return sum(x for x in xs if x % k == 0)\n",
             "def sum_multiples(xs, k):\n    return sum(x for x in xs if x % k == 0 and x > 0)\n",
             lambda r, n: [_ints(r, n), r.randint(1, 7)], edges=([[], 3], [[-6, -3, 4], 3])),
    CodeTask("count_vowels", "count_vowels", "def count_vowels(s: str) -> int",
             "Return how many characters of `s` are vowels (a, e, i, o, u; upper or lower case).", 1,
             "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n",
             "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n",
             lambda r, n: [_word(r, 2 * n, string.ascii_letters + " ")], edges=([""], ["AEIOUxyz"])),
    CodeTask("rotate_right", "rotate_right", "def rotate_right(xs: list[int], k: int) -> list[int]",
             "Return `xs` rotated to the right by `k` positions (k >= 0, may exceed len(xs)).", 1,
             "def rotate_right(xs, k):\n    if not xs:\n        return []\n    k %= len(xs)\n"
             "    return xs[-k:] + xs[:-k] if k else list(xs)\n",
             "def rotate_right(xs, k):\n    if not xs:\n        return []\n    k %= len(xs)\n    return xs[k:] + xs[:k]\n",
             lambda r, n: [_ints(r, n), r.randint(0, 2 * n + 1)], edges=([[], 5], [[1, 2, 3], 1])),
    CodeTask("second_largest", "second_largest", "def second_largest(xs: list[int]) -> int | None",
             "Return the second largest *distinct* value in `xs`, or None if there is none.", 2,
             "def second_largest(xs):\n    v = sorted(set(xs))\n    return v[-2] if len(v) >= 2 else None\n",
             "def second_largest(xs):\n    v = sorted(xs)\n    return v[-2] if len(v) >= 2 else None\n",
             lambda r, n: [_ints(r, n, -9, 9)], edges=([[]], [[5, 5, 5]], [[3, 7, 7]])),
    CodeTask("run_length", "run_length", "def run_length(s: str) -> list[list]",
             "Run-length encode `s`: a list of [character, count] pairs for maximal runs, in order.", 2,
             "def run_length(s):\n    out = []\n    for c in s:\n        if out and out[-1][0] == c:\n"
             "            out[-1][1] += 1\n        else:\n            out.append([c, 1])\n    return out\n",
             "def run_length(s):\n    out = {}\n    for c in s:\n        out[c] = out.get(c, 0) + 1\n"
             "    return [[c, n] for c, n in out.items()]\n",
             lambda r, n: [_word(r, 2 * n, "aab")], edges=([""], ["abba"])),
    CodeTask("balanced", "balanced", "def balanced(s: str) -> bool",
             "Return True if the brackets ()[]{} in `s` are balanced and properly nested; ignore other characters.", 2,
             "def balanced(s):\n    pairs = {')': '(', ']': '[', '}': '{'}\n    st = []\n    for c in s:\n"
             "        if c in '([{':\n            st.append(c)\n        elif c in pairs:\n"
             "            if not st or st.pop() != pairs[c]:\n                return False\n    return not st\n",
             "def balanced(s):\n    return all(s.count(a) == s.count(b) for a, b in ('()', '[]', '{}'))\n",
             lambda r, n: [_word(r, 2 * n, "()[]{}x")], edges=([""], ["([)]"], [")("], ["{[()]}"])),
    CodeTask("max_subarray", "max_subarray", "def max_subarray(xs: list[int]) -> int",
             "Return the largest sum of a non-empty contiguous subarray of `xs` (len(xs) >= 1).", 2,
             "def max_subarray(xs):\n    best = cur = xs[0]\n    for x in xs[1:]:\n        cur = max(x, cur + x)\n"
             "        best = max(best, cur)\n    return best\n",
             "def max_subarray(xs):\n    best = cur = 0\n    for x in xs:\n        cur = max(0, cur + x)\n"
             "        best = max(best, cur)\n    return best\n",
             lambda r, n: [_ints(r, max(1, n))], edges=([[-3]], [[-5, -2, -9]], [[2, -1, 2]])),
    CodeTask("lis_length", "lis_length", "def lis_length(xs: list[int]) -> int",
             "Return the length of the longest strictly increasing subsequence (not necessarily contiguous).", 3,
             "def lis_length(xs):\n    import bisect\n    tails = []\n    for x in xs:\n"
             "        i = bisect.bisect_left(tails, x)\n        tails[i:i + 1] = [x]\n    return len(tails)\n",
             "def lis_length(xs):\n    best = cur = 0\n    prev = None\n    for x in xs:\n"
             "        cur = cur + 1 if prev is not None and x > prev else 1\n        best = max(best, cur)\n"
             "        prev = x\n    return best\n",
             lambda r, n: [_ints(r, 2 * n, 0, 30)], edges=([[]], [[3, 1, 2, 0, 4]])),
    CodeTask("edit_distance", "edit_distance", "def edit_distance(a: str, b: str) -> int",
             "Return the Levenshtein distance (insertions, deletions, substitutions of cost 1) between `a` and `b`.", 3,
             "def edit_distance(a, b):\n    prev = list(range(len(b) + 1))\n    for i, ca in enumerate(a, 1):\n"
             "        cur = [i]\n        for j, cb in enumerate(b, 1):\n"
             "            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))\n"
             "        prev = cur\n    return prev[-1]\n",
             "def edit_distance(a, b):\n    n = max(len(a), len(b))\n"
             "    return sum(1 for i in range(n) if i >= len(a) or i >= len(b) or a[i] != b[i])\n",
             lambda r, n: [_word(r, r.randint(0, n), "abc"), _word(r, r.randint(0, n), "abc")],
             edges=(["", "abc"], ["abc", "bc"], ["kitten", "sitting"])),
    CodeTask("merge_intervals", "merge_intervals", "def merge_intervals(iv: list[list[int]]) -> list[list[int]]",
             "Merge overlapping closed intervals [start, end] (touching ones merge too); return them sorted by start.", 3,
             "def merge_intervals(iv):\n    out = []\n    for s, e in sorted(iv):\n        if out and s <= out[-1][1]:\n"
             "            out[-1][1] = max(out[-1][1], e)\n        else:\n            out.append([s, e])\n    return out\n",
             "def merge_intervals(iv):\n    out = []\n    for s, e in iv:\n        if out and s <= out[-1][1]:\n"
             "            out[-1][1] = max(out[-1][1], e)\n        else:\n            out.append([s, e])\n    return out\n",
             lambda r, n: [[sorted([r.randint(0, 40), r.randint(0, 40)]) for _ in range(n)]],
             edges=([[]], [[[5, 6], [1, 2], [2, 3]]])),
]


def make_code_item(rng: random.Random, difficulty: int, n_tests: int = 10) -> tuple[CodeTask, str, dict, str, str]:
    """(task, query, verifier_data, reference_response, perturbed_response)."""
    pool = [t for t in TASKS if t.difficulty == difficulty]
    task = rng.choice(pool)
    ref, bug = task.fn(), task.fn(task.buggy)
    size = 3 + 3 * difficulty
    inputs = [list(e) for e in task.edges] + [task.gen(rng, rng.randint(1, size)) for _ in range(n_tests)]
    for _ in range(50):   # make sure the hidden tests catch the known bug
        if any(_safe(bug, a) != ref(*_copy(a)) for a in inputs):
            break
        inputs.append(task.gen(rng, rng.randint(1, size)))
    tests = [{"input": a, "output": ref(*_copy(a))} for a in inputs]
    shown = tests[len(task.edges)]
    query = (f"Write a Python function `{task.signature}`.\n{task.description}\n"
             f"Example: {task.entry}({', '.join(repr(x) for x in shown['input'])}) == {shown['output']!r}\n"
             "Answer with the complete function in one ```python code block.")
    data = {"entry_point": task.entry, "tests": tests}
    return task, query, data, f"```python\n{task.reference}```", f"```python\n{task.buggy}```"


def _copy(args: list) -> list:
    import copy
    return copy.deepcopy(args)


def _safe(fn: Callable, args: list) -> Any:
    try:
        return fn(*_copy(args))
    except Exception as e:   # the buggy version may crash: that counts as different
        return ("exception", type(e).__name__)
