"""Answer extraction, equivalence, and the one verify() interface on real responses."""

import pytest

from synth.verifiers import verify
from synth.verifiers.math_answer import answers_equal, extract_answer


@pytest.mark.parametrize("response,expected", [
    ("so we get \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
    ("<think>maybe \\boxed{1}</think>The total is \\boxed{2}", "2"),
    ("Work...\nFinal answer: 42.", "42"),
    ("Work...\n**Answer:** x = -3", "x = -3"),
    ("The final answer is $\\boxed{(1, 2)}$", "(1, 2)"),
    ("no answer here", None),
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize("a,b,same", [
    ("\\frac{3}{4}", "0.75", True), ("\\dfrac{\\sqrt{2}}{2}", "sqrt(2)/2", True), ("x = 5", "5", True),
    ("-3, 2", "2, -3", True), ("x = 2 or x = -3", "-3, 2", True), ("(1, 2)", "(2, 1)", False),
    ("2x+1", "1 + 2*x", True), ("1,000", "1000", True), ("2\\pi", "6.283185307", True),
    ("7", "8", False), ("3, 3", "3", False), ("0.3333333333", "1/3", True), ("0.33", "1/3", False),
    ("__import__('os').system('id')", "0", False), ("9**999999", "1", False), ("9^9^9", "1", False),
    ("2^(2^(2^(2^2)))", "3", False), ("2^10", "1024", True), ("\\sqrt{8}", "2\\sqrt{2}", True),
])
def test_answers_equal(a, b, same):
    assert answers_equal(a, b) is same


def test_math_verify():
    assert verify("x = 1/2 so \\boxed{0.5}", "math", {"answer": "1/2"}).score == 1.0
    r = verify("\\boxed{0.6}", "math", {"answer": "1/2"})
    assert r.score == 0.0 and r.reason == "wrong_answer"
    assert verify("I give up", "math", {"answer": "1"}).reason == "no_answer"


CODE = {"entry_point": "add", "tests": [{"input": [1, 2], "output": 3}, {"input": [-5, 5], "output": 0}]}


def test_code_verify_accepts_correct_and_rejects_wrong():
    assert verify("```python\ndef add(a, b):\n    return a + b\n```", "code", CODE).score == 1.0
    r = verify("```python\ndef add(a, b):\n    return a - b\n```", "code", CODE)
    assert r.score == 0.0 and r.reason == "tests_failed" and "0/2" in r.detail


def test_code_verify_cannot_be_faked_by_printing_or_exiting():
    cheat = ("```python\nimport sys, re\nsrc = open('main.py').read()\n"
             "m = re.search(r'@@Q3RESULT-[0-9a-f]+@@', src)\nprint(m.group(0) + '[[\"ok\", 3], [\"ok\", 0]]')\n"
             "def add(a, b):\n    return 0\n```")
    assert verify(cheat, "code", CODE).score == 0.0
    exit_early = "```python\nimport os\nos._exit(0)\ndef add(a, b):\n    return a + b\n```"
    assert verify(exit_early, "code", CODE).score == 0.0


def test_code_verify_contains_hostile_code():
    # CPU limit, or the wall clock first when the shared machine is busy: contained either way
    assert verify("```python\ndef add(a, b):\n    while True: pass\n```", "code", CODE).reason in ("cpu_limit", "timeout")
    assert verify("```python\ndef sub(a, b):\n    return a - b\n```", "code", CODE).reason == "missing_function"
    assert verify("no code at all", "code", CODE).reason == "no_code"


def test_logic_and_format_and_errors():
    order = {"kind": "order", "answer": ["Ava", "Ben", "Cleo"]}
    assert verify("Final answer: \\boxed{Ava, Ben, Cleo}", "logic", order).score == 1.0
    assert verify("Final answer: \\boxed{Ben, Ava, Cleo}", "logic", order).score == 0.0
    roles = {"kind": "roles", "answer": {"Ava": "knight", "Ben": "knave"}}
    assert verify("\\boxed{Ava: knight, Ben: knave}", "logic", roles).score == 1.0
    assert verify("\\boxed{Ava: knave, Ben: knave}", "logic", roles).score == 0.0
    spec = {"require_think": True, "max_chars": 100}
    assert verify("<think>hm</think>42", "format", spec).score == 1.0
    assert verify("<think>hm 42", "format", spec).reason == "bad_think_tags"
    assert verify("<think>" + "x" * 200 + "</think>42", "format", spec).reason == "too_long"
    assert verify("\\boxed{2}", "math", {"answer": "2", "format": {"require_think": True}}).reason == "bad_think_tags"
    assert verify("x", "nope", {}).reason == "unknown_verifier"
    assert verify("\\boxed{2}", "math", {}).reason == "bad_verifier_data"


def test_unfinished_thinking_has_no_answer():
    assert extract_answer("<think>so it is \\boxed{4} maybe") is None
    assert verify("<think>so it is \\boxed{4} maybe", "math", {"answer": "4"}).reason == "no_answer"
