"""Each cold-start filter on real failing and passing examples."""

from synth.filters import (
    NgramIndex,
    guessing,
    inconsistent,
    language_mixing,
    multi_part,
    repetition,
    response_filters,
    unverifiable,
    wrong_answer,
)

MATH = {"query": "What is the greatest common divisor of 84 and 126? Give the final answer as \\boxed{...}.",
        "verifier_type": "math", "verifier_data": {"answer": "42"}}

GOOD = ("<think>\nWe need gcd(84, 126). Using the Euclidean algorithm: 126 = 1*84 + 42, then 84 = 2*42 + 0, "
        "so the last non-zero remainder is 42. Check: 84 = 2*42 and 126 = 3*42, and 2 and 3 are coprime, "
        "so the answer is 42.\n</think>\n\nBy the Euclidean algorithm, gcd(84, 126) = 42.\n\n"
        "The final answer is \\boxed{42}.")


def test_good_response_passes_every_filter():
    assert response_filters(MATH, GOOD) is None


def test_unverifiable():
    assert unverifiable(MATH) is None
    assert unverifiable({"query": "Write a poem about autumn."}) == "unverifiable"
    assert unverifiable({"query": "x", "verifier_type": "math", "verifier_data": {}}) == "unverifiable"
    assert unverifiable({"query": "x", "verifier_type": "code",
                         "verifier_data": {"entry_point": "f", "tests": [{"input": [1], "output": 1}]}}) is None


def test_multi_part():
    assert multi_part(MATH["query"]) is None
    assert multi_part("Let f(x) = x^2.\n(a) Find f(3).\n(b) Find the minimum of f.") == "multi_part"
    assert multi_part("Part A: compute 2+2.\nPart B: compute 3*3.") == "multi_part"
    assert multi_part("What is 2+2? What is 3+3? And what is 4+4?") == "multi_part"
    assert multi_part("Is 7 prime? Explain.") is None


def test_wrong_answer():
    assert wrong_answer(MATH, GOOD) is None
    bad = GOOD.replace("\\boxed{42}", "\\boxed{21}")
    assert wrong_answer(MATH, bad) == "wrong_answer:wrong_answer"
    assert wrong_answer(MATH, "<think>hmm</think> I don't know") == "wrong_answer:no_answer"


def test_repetition():
    assert repetition(GOOD) is None
    looped = ("<think>\nLet me compute 126 mod 84. " + "Wait, let me recompute 126 mod 84 carefully again. " * 12
              + "</think>\n\\boxed{42}")
    assert repetition(looped) == "repetition"
    lines = "<think>\n" + "\n".join(["So the remainder is 42 here."] * 6) + "\n</think>\n\\boxed{42}"
    assert repetition(lines) == "repetition"


def test_guessing():
    assert guessing(GOOD) is None
    assert guessing("<think>It is 42.</think>\n\\boxed{42}") == "guessing:short_thinking"
    guess = ("<think>\nThese numbers look big and computing the divisors would take a while, so I'll just guess "
             "that the common divisor is something like 42 because it is a nice number.\n</think>\n\\boxed{42}")
    assert guessing(guess) == "guessing:guess_phrase"


def test_thinking_vs_summary_inconsistent():
    assert inconsistent(MATH, GOOD) is None
    flip = GOOD.replace("so the answer is 42.", "so the answer is 21.")
    assert inconsistent(MATH, flip) == "inconsistent:thinking_vs_summary"
    assert inconsistent(MATH, GOOD.split("</think>")[0] + "</think>\n") == "inconsistent:no_summary"
    # equal values in different notation are consistent
    frac = {"query": "q", "verifier_type": "math", "verifier_data": {"answer": "1/2"}}
    ok = "<think>" + "work " * 30 + "so the answer is 0.5.</think>\n\nThe final answer is \\boxed{\\frac{1}{2}}."
    assert inconsistent(frac, ok) is None


def test_language_mixing():
    assert language_mixing(MATH["query"], GOOD) is None
    mixed = GOOD.replace("Using the Euclidean algorithm:", "使用欧几里得算法，我们可以得到余数：")
    assert language_mixing(MATH["query"], mixed) == "language_mixing"
    zh_q = "求84和126的最大公约数。"
    zh_good = "<think>\n用辗转相除法：126 = 1×84 + 42，84 = 2×42，所以最大公约数是42。\n</think>\n\n答案是 \\boxed{42}。"
    assert language_mixing(zh_q, zh_good) is None
    zh_mixed = ("<think>\nWe use the Euclidean algorithm here because it is the fastest way to find the "
                "greatest common divisor of two numbers; 126 = 84 + 42.\n</think>\n\n答案是 \\boxed{42}。")
    assert language_mixing(zh_q, zh_mixed) == "language_mixing"
    ru = "<think>\nИспользуем алгоритм Евклида: 126 = 84 + 42 и 84 = 2*42.\n</think>\n\\boxed{42}"
    assert language_mixing(MATH["query"], ru) == "language_mixing"


def test_too_similar_to_validation():
    val = NgramIndex(["What is the greatest common divisor of 84 and 126 expressed as a single integer",
                      "Find all real solutions of x^2 - 5x + 6 = 0 and list them"], n=6, threshold=0.5)
    assert val.too_similar("Compute 17 * 23 and give the result as an integer.") is None
    hit = val.too_similar("Q: what is the greatest common divisor of 84 and 126 expressed as a single integer?")
    assert hit == "too_similar_to_validation:0"
    assert response_filters(MATH, GOOD, val) is not None and response_filters(MATH, GOOD, None) is None
