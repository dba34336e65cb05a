"""Math problems with sympy-checked answers: arithmetic, algebra, number theory; difficulty 1-3.

Each generator returns (query, answer, perturbed_answer, worked_solution). The answer is computed
one way (Python) and checked another way (sympy: solve, substitution, number-theory functions); a
mismatch raises, so a shipped item's answer is right by two independent computations.
"""

from __future__ import annotations

import random
from fractions import Fraction

import sympy as sp

BOX = "Give the final answer as \\boxed{...}."


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"sympy cross-check failed: {what}")


def _fmt(q: Fraction | int) -> str:
    q = Fraction(q)
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def arithmetic(rng: random.Random, difficulty: int) -> tuple[str, str, str, str]:
    if difficulty == 1:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        expr = f"{a} {op} {b}"
    elif difficulty == 2:
        a, b, c, d = (rng.randint(2, 40) for _ in range(4))
        o1, o2, o3 = (rng.choice(["+", "-", "*"]) for _ in range(3))
        expr = f"({a} {o1} {b}) {o2} {c} {o3} {d}"
    else:
        fr = [Fraction(rng.randint(1, 9), rng.randint(2, 12)) for _ in range(3)]
        o1, o2 = rng.choice(["+", "-"]), rng.choice(["*", "/"])
        expr = f"({_fmt(fr[0])}) {o1} ({_fmt(fr[1])}) {o2} ({_fmt(fr[2])})"
        right = fr[1] * fr[2] if o2 == "*" else fr[1] / fr[2]
        value = fr[0] + right if o1 == "+" else fr[0] - right
    if difficulty < 3:
        value = Fraction(eval(expr, {"__builtins__": {}}, {}))   # our own integer expression text
    _check(sp.sympify(expr) == sp.Rational(value.numerator, value.denominator), expr)
    ans = _fmt(Fraction(value))
    query = f"Compute {expr}. " + ("Write the result as a fraction in lowest terms. " if difficulty == 3 else "") + BOX
    return query, ans, _fmt(Fraction(value) + 1), f"Evaluating step by step, {expr} = {ans}."


def algebra(rng: random.Random, difficulty: int) -> tuple[str, str, str, str]:
    x, y = sp.symbols("x y")
    if difficulty == 1:
        sol = rng.randint(-20, 20)
        a = rng.choice([i for i in range(-9, 10) if i not in (0,)])
        b = rng.randint(-30, 30)
        c = a * sol + b
        eq = sp.Eq(a * x + b, c)
        _check(sp.solve(eq, x) == [sol], str(eq))
        query = f"Solve for x: {sp.sstr(a * x + b)} = {c}. {BOX}"
        return query, str(sol), str(sol + 1), f"Subtract {b} and divide by {a}: x = {sol}."
    if difficulty == 2:
        r1, r2 = rng.randint(-12, 12), rng.randint(-12, 12)
        while r2 == r1:
            r2 = rng.randint(-12, 12)
        poly = sp.expand((x - r1) * (x - r2))
        _check(sorted(sp.solve(poly, x)) == sorted([r1, r2]), str(poly))
        query = f"Find all real solutions of {sp.sstr(poly).replace('**', '^')} = 0. List them separated by commas. {BOX}"
        ans = f"{min(r1, r2)}, {max(r1, r2)}"
        return query, ans, f"{min(r1, r2)}, {max(r1, r2) + 1}", f"It factors as (x - {r1})(x - {r2}), so x = {ans}."
    sx, sy = rng.randint(-10, 10), rng.randint(-10, 10)
    while True:
        a, b, c, d = (rng.choice([i for i in range(-7, 8) if i]) for _ in range(4))
        if a * d - b * c != 0:
            break
    e1, e2 = a * sx + b * sy, c * sx + d * sy
    sol = sp.solve([sp.Eq(a * x + b * y, e1), sp.Eq(c * x + d * y, e2)], [x, y])
    _check(sol == {x: sx, y: sy}, "linear system")
    query = (f"Solve the system {sp.sstr(a * x + b * y)} = {e1} and {sp.sstr(c * x + d * y)} = {e2}. "
             f"Give the answer as an ordered pair (x, y). {BOX}")
    return query, f"({sx}, {sy})", f"({sy}, {sx})" if sx != sy else f"({sx}, {sy + 1})", \
        f"Eliminating one variable gives x = {sx}, y = {sy}."


def number_theory(rng: random.Random, difficulty: int) -> tuple[str, str, str, str]:
    if difficulty == 1:
        g = rng.randint(2, 15)
        a, b = g * rng.randint(2, 30), g * rng.randint(2, 30)
        if rng.random() < 0.5:
            import math
            ans = math.gcd(a, b)
            _check(int(sp.gcd(a, b)) == ans, "gcd")
            return f"What is the greatest common divisor of {a} and {b}? {BOX}", str(ans), str(ans + 1), \
                f"By the Euclidean algorithm, gcd({a}, {b}) = {ans}."
        import math
        ans = a * b // math.gcd(a, b)
        _check(int(sp.ilcm(a, b)) == ans, "lcm")
        return f"What is the least common multiple of {a} and {b}? {BOX}", str(ans), str(ans + 1), \
            f"lcm = {a}*{b}/gcd = {ans}."
    if difficulty == 2:
        base, exp, mod = rng.randint(2, 50), rng.randint(10, 400), rng.randint(7, 97)
        ans = pow(base, exp, mod)
        _check(int(sp.Mod(sp.Integer(base) ** exp, mod)) == ans, "powmod")
        return f"What is the remainder when {base}^{exp} is divided by {mod}? {BOX}", str(ans), \
            str((ans + 1) % mod), f"By repeated squaring modulo {mod}, the remainder is {ans}."
    n = rng.randint(100, 5000)
    if rng.random() < 0.5:
        ans = sum(1 for d in range(1, n + 1) if n % d == 0)
        _check(int(sp.divisor_count(n)) == ans, "divisor_count")
        return f"How many positive divisors does {n} have? {BOX}", str(ans), str(ans + 1), \
            f"{n} = {sp.factorint(n)} in prime factors, giving {ans} divisors."
    m = rng.choice([p for p in range(11, 98) if sp.isprime(p)])
    a = rng.randint(2, m - 1)
    b = rng.randint(1, m - 1)
    ans = next(k for k in range(m) if (a * k) % m == b)
    _check((a * ans - b) % m == 0 and int(sp.mod_inverse(a, m) * b % m) == ans, "linear congruence")
    return (f"Find the smallest non-negative integer k with {a}k ≡ {b} (mod {m}). {BOX}", str(ans),
            str((ans + 1) % m), f"Multiply by the inverse of {a} modulo {m}: k = {ans}.")


SUBDOMAINS = {"arithmetic": arithmetic, "algebra": algebra, "number_theory": number_theory}
