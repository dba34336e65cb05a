"""Logic puzzles with unique solutions, found by brute force: line-up orderings and knights/knaves.

Clues are added at random until exactly one assignment satisfies them all, so every puzzle is
solvable and its answer is unique (checked, not assumed).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

NAMES = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
BOX = "Give the final answer as \\boxed{...}."


def ordering(rng: random.Random, difficulty: int) -> tuple[str, dict, str, str]:
    n = 2 + difficulty + (1 if difficulty == 3 else 0)   # 3, 4, 6 people
    names = rng.sample(NAMES, n)
    truth = names[:]
    rng.shuffle(truth)
    pos = {p: i for i, p in enumerate(truth)}
    ordinal = ["first", "second", "third", "fourth", "fifth", "sixth"]

    def candidates() -> tuple[str, Callable[[dict[str, int]], bool]]:
        a, b = rng.sample(names, 2)
        kind = rng.randrange(5)
        if kind == 0 and pos[a] < pos[b]:
            return f"{a} stands somewhere before {b}.", lambda p: p[a] < p[b]
        if kind == 1 and pos[b] == pos[a] + 1:
            return f"{b} stands immediately after {a}.", lambda p: p[b] == p[a] + 1
        if kind == 2:
            k = rng.randrange(n)
            if pos[a] != k:
                return f"{a} is not {ordinal[k]}.", lambda p: p[a] != k
        if kind == 3 and abs(pos[a] - pos[b]) > 1:
            return f"{a} and {b} are not next to each other.", lambda p: abs(p[a] - p[b]) > 1
        if kind == 4 and difficulty == 1:
            return f"{a} is {ordinal[pos[a]]}.", lambda p: p[a] == pos[a]
        return "", lambda p: True

    clues: list[tuple[str, Callable]] = []
    perms = [dict(zip(perm, range(n), strict=True)) for perm in itertools.permutations(names)]
    while True:
        alive = [p for p in perms if all(c(p) for _, c in clues)]
        if len(alive) == 1:
            break
        text, check = candidates()
        if text and text not in [t for t, _ in clues] and len([p for p in alive if check(p)]) < len(alive):
            clues.append((text, check))
    query = (f"{n} people, {', '.join(sorted(names))}, stand in a line from first to last.\n"
             + "\n".join(f"- {t}" for t, _ in clues)
             + f"\nWhat is the order from first to last? Answer with the names separated by commas. {BOX}")
    wrong = truth[:]
    wrong[0], wrong[1] = wrong[1], wrong[0]
    return query, {"kind": "order", "answer": truth}, ", ".join(truth), ", ".join(wrong)


def knights(rng: random.Random, difficulty: int) -> tuple[str, dict, str, str]:
    n = 1 + difficulty   # 2, 3, 4 islanders
    names = rng.sample(NAMES, n)
    truth = {p: rng.random() < 0.5 for p in names}   # True = knight

    def statement(speaker: str) -> tuple[str, Callable[[dict[str, bool]], bool]]:
        others = [p for p in names if p != speaker]
        kind = rng.randrange(4)
        a = rng.choice(others)
        if kind == 0:
            return f"{a} is a knave.", lambda w: not w[a]
        if kind == 1:
            return f"{a} is a knight.", lambda w: w[a]
        if kind == 2:
            b = rng.choice(names)
            if b == a:
                return f"{a} is a knight.", lambda w: w[a]
            return f"{a} and {b} are of the same kind.", lambda w: w[a] == w[b]
        k = rng.randint(1, n)
        return f"Exactly {k} of us {'is a knight' if k == 1 else 'are knights'}.", lambda w: sum(w.values()) == k

    worlds = [dict(zip(names, bits, strict=True)) for bits in itertools.product([True, False], repeat=n)]
    said: list[tuple[str, str, Callable]] = []
    for _ in range(200):
        alive = [w for w in worlds if all(w[s] == f(w) for s, _, f in said)]
        if len(alive) == 1:
            break
        speaker = rng.choice(names)
        text, f = statement(speaker)
        if truth[speaker] != f(truth):   # a knight's statement is true, a knave's false
            continue
        if len([w for w in alive if w[speaker] == f(w)]) < len(alive):
            said.append((speaker, text, f))
    else:
        return knights(rng, difficulty)
    roles = {p: "knight" if truth[p] else "knave" for p in names}
    query = ("On an island, knights always tell the truth and knaves always lie. You meet "
             f"{', '.join(names)}.\n" + "\n".join(f"- {s} says: \"{t}\"" for s, t, _ in said)
             + f"\nWho is a knight and who is a knave? Answer like \"A: knight, B: knave\". {BOX}")
    flip = rng.choice(names)
    wrong = {p: (("knave" if r == "knight" else "knight") if p == flip else r) for p, r in roles.items()}
    fmt = lambda d: ", ".join(f"{p}: {r}" for p, r in d.items())   # noqa: E731
    return query, {"kind": "roles", "answer": roles}, fmt(roles), fmt(wrong)


SUBDOMAINS = {"ordering": ordering, "knights": knights}
