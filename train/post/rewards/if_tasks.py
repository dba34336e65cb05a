"""Instruction-following and tool-use task rows for general RL, generated from a seed (no downloads).

Instruction rows (task "instruction"): a writing prompt on a topic plus 1-3 verifiable constraints,
phrased in the prompt and listed in `constraints` for the `instruction` reward, e.g.

    {"id": "if-3-0007", "task": "instruction", "messages": [{"role": "user", "content": "..."}],
     "constraints": [{"type": "word_count", "min": 20, "max": 60}, ...], "thinking": false}

Tool rows (task "tool_use"): an arithmetic or weather question whose answer needs a tool, with
`reference` and `expected_tool` for the `tool_use` reward and `env` naming the environment.
Constraint pairs that cannot hold together (lowercase + uppercase, JSON + sentence rules) are
never drawn together.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from train.post.rewards.tools import WEATHER, Calculator

TOPICS = ["the ocean", "a city at night", "learning to cook", "the history of bicycles", "volcanoes",
          "a rainy morning", "why people keep diaries", "the moon landing", "honeybees", "public libraries",
          "mountain hiking", "the invention of paper", "a train journey", "winter markets", "desert plants"]
FORMS = ["Write a short paragraph about {t}.", "Describe {t} for a curious child.", "Give advice related to {t}.",
         "Write a brief product-style blurb inspired by {t}.", "Explain what is interesting about {t}."]
KEYWORDS = ["light", "water", "history", "quiet", "journey", "colour", "memory", "energy", "craft", "season"]
LANGS = {"fr": "French", "de": "German", "es": "Spanish", "en": "English"}


def _constraint(kind: str, rng: random.Random) -> tuple[dict[str, Any], str]:
    if kind == "word_count":
        lo = rng.choice([10, 20, 30])
        hi = lo + rng.choice([20, 40])
        return {"type": "word_count", "min": lo, "max": hi}, f"Use between {lo} and {hi} words."
    if kind == "sentence_count":
        n = rng.randint(2, 4)
        return {"type": "sentence_count", "min": n, "max": n}, f"Write exactly {n} sentences."
    if kind == "include_keywords":
        kws = rng.sample(KEYWORDS, rng.randint(1, 2))
        return {"type": "include_keywords", "keywords": kws}, f"Include the word(s): {', '.join(kws)}."
    if kind == "exclude_keywords":
        kws = rng.sample(KEYWORDS, 2)
        return {"type": "exclude_keywords", "keywords": kws}, f"Do not use the words {kws[0]} or {kws[1]}."
    if kind == "lowercase":
        return {"type": "lowercase"}, "Write everything in lowercase letters."
    if kind == "uppercase":
        return {"type": "uppercase"}, "Write everything in CAPITAL LETTERS."
    if kind == "no_commas":
        return {"type": "no_commas"}, "Do not use any commas."
    if kind == "ends_with":
        s = rng.choice(["Is there anything else I can help with?", "That is all.", "The end."])
        return {"type": "ends_with", "suffix": s}, f"End your reply with the exact phrase \"{s}\"."
    if kind == "bullet_count":
        n = rng.randint(2, 4)
        return {"type": "bullet_count", "min": n, "max": n}, f"Answer with exactly {n} bullet points using '- '."
    if kind == "language":
        code = rng.choice(list(LANGS))
        return {"type": "language", "lang": code}, f"Answer in {LANGS[code]} only."
    if kind == "json":
        keys = rng.sample(["title", "summary", "mood", "keywords", "audience"], 2)
        return ({"type": "json", "required_keys": keys},
                f"Answer with a JSON object only, with the keys {keys[0]!r} and {keys[1]!r}.")
    raise ValueError(kind)


KINDS = ["word_count", "sentence_count", "include_keywords", "exclude_keywords", "lowercase", "uppercase",
         "no_commas", "ends_with", "bullet_count", "language", "json"]
CLASH = [{"lowercase", "uppercase"}, {"lowercase", "ends_with"}, {"uppercase", "ends_with"},
         {"sentence_count", "bullet_count"}, {"include_keywords", "exclude_keywords"},
         {"language", "include_keywords"}, {"language", "exclude_keywords"}, {"language", "ends_with"},
         {"language", "uppercase"}, {"language", "lowercase"}]
ALONE = {"json"}                           # JSON answers take no other format rule


def instruction_rows(n: int, seed: int = 0, no_think: float = 0.3) -> list[dict[str, Any]]:
    """`n` instruction-following rows; a `no_think` fraction carries the /no_think flag."""
    rng = random.Random(f"if:{seed}")
    rows = []
    for i in range(n):
        kinds: list[str] = []
        want = rng.randint(1, 3)
        for kind in rng.sample(KINDS, len(KINDS)):
            if len(kinds) == want:
                break
            if (kind in ALONE and kinds) or any(k in ALONE for k in kinds):
                continue
            if any({kind, k} in CLASH for k in kinds):
                continue
            kinds.append(kind)
        cons = [_constraint(k, rng) for k in kinds]
        thinking = rng.random() >= no_think
        text = rng.choice(FORMS).format(t=rng.choice(TOPICS)) + " " + " ".join(p for _, p in cons)
        if not thinking:
            text += " /no_think"
        rows.append({"id": f"if-{seed}-{i:04d}", "task": "instruction", "messages": [{"role": "user", "content": text}],
                     "constraints": [c for c, _ in cons], "thinking": thinking})
    return rows


def tool_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` tool-use rows: arithmetic (calculator) or weather look-ups with the exact reference."""
    rng = random.Random(f"tool:{seed}")
    calc = Calculator()
    rows = []
    for i in range(n):
        if rng.random() < 0.5:
            a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(2, 999)
            expr = f"{a} * {b} + {c}"
            q = f"What is {a} times {b}, plus {c}? Use the calculator tool, then state the number."
            ref, tool = calc.call("calculator", {"expression": expr}), "calculator"
        else:
            city = rng.choice(sorted(WEATHER))
            q = f"What is the temperature in {city.title()} right now, in celsius? Use the weather tool."
            ref, tool = str(WEATHER[city][0]), "get_weather"
        rows.append({"id": f"tool-{seed}-{i:04d}", "task": "tool_use", "messages": [{"role": "user", "content": q}],
                     "env": ["calculator", "weather"], "reference": ref, "expected_tool": tool})
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    from q3.atomic import atomic_write_text

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return p


def task_rows(task: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one configured task (`tasks.<task>.data` in rl_tasks.yaml), tagged with `task`:
    {source: if_tasks|tool_tasks, n, seed} generated here, or {source: pairs, path, domains?}
    from a `q3 synth verifiable` pairs file."""
    from q3.config import ConfigError

    src = data.get("source")
    if src == "if_tasks":
        rows = instruction_rows(int(data.get("n", 256)), int(data.get("seed", 0)), float(data.get("no_think", 0.3)))
    elif src == "tool_tasks":
        rows = tool_rows(int(data.get("n", 256)), int(data.get("seed", 0)))
    elif src == "pairs":
        path = Path(str(data.get("path", "")))
        if not path.is_file():
            raise ConfigError(f"tasks.{task}.data.path: RL pairs file not found: {path}")
        domains = data.get("domains")
        rows = [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())
                if domains is None or r.get("domain") in domains]
        for r in rows:
            r.setdefault("messages", [{"role": "user", "content": r["query"]}])
    else:
        raise ConfigError(f"tasks.{task}.data.source: {src!r} is not one of if_tasks, tool_tasks, pairs")
    return [{**r, "task": task} for r in rows]
