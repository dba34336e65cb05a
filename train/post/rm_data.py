"""Preference pairs for the reward model (`q3 post rm`), built from files only (no downloads).

A preference row is chat JSONL with two candidate replies to the same prompt:

    {"messages": [{"role": "user", "content": "2+2? /no_think"}],
     "chosen": "<think>\\n\\n</think>\\n\\n4", "rejected": "<think>\\nadd\\n</think>\\n\\n4",
     "source": "mode", "id": "<pair id>:mode"}

A reply is the assistant's raw text as the policy writes it after the generation prompt
(think block included); the scorer appends `<|im_end|>` and reads the reward there.

`build_preferences` derives four sources from `q3 synth verifiable` pairs (each has a verified
`reference` = "steps\\n\\nfinal line" and a `perturbed` reply the verifier rejects):

- `verifier`: the reference vs the perturbed reply (same reasoning, wrong final answer), both as
  thinking replies. Judging them needs the arithmetic/logic itself: hard for a tiny model.
- `format`:   a well-formed think block vs a broken one (no `</think>`, no `<think>`, or the
  block written twice).
- `mode`:     the prompt carries `/think` or `/no_think`; the reply that follows the flag (with
  reasoning / with an empty think block) vs the one that ignores it.
- `truncated`: the full reply vs the same reply cut off mid-way (no final answer).

Everything is a pure function of (pair, source, seed): one pair's rows never depend on file order.
Held-out rows are chosen by a hash of the prompt text with its mode flags removed
(`train.post.prepare.held_out`), so one query's rows never straddle the split.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from q3.config import ConfigError

SOURCES = ("format", "mode", "truncated", "verifier")
_FLAG = re.compile(r"\s*/(no_think|think)\b")


def think_reply(steps: str, answer: str) -> str:
    return f"<think>\n{steps}\n</think>\n\n{answer}"


def no_think_reply(answer: str) -> str:
    return f"<think>\n\n</think>\n\n{answer}"


def _split_reference(text: str) -> tuple[str, str] | None:
    """(steps, final answer line) of a verifiable reference, or None without worked steps."""
    text = (text or "").strip()
    if "\n\n" not in text:
        return None
    steps, answer = (p.strip() for p in text.rsplit("\n\n", 1))
    return (steps, answer) if steps and answer else None


def _row(item: dict, source: str, messages: list[dict], chosen: str, rejected: str, **meta: Any) -> dict:
    return {"messages": messages, "chosen": chosen, "rejected": rejected, "source": source,
            "id": f"{item.get('id')}:{source}", **({"meta": meta} if meta else {})}


def _broken_think(rng: random.Random, steps: str, answer: str) -> tuple[str, str]:
    kind = rng.choice(["no_close", "no_open", "twice"])
    text = {"no_close": f"<think>\n{steps}\n\n{answer}",
            "no_open": f"{steps}\n</think>\n\n{answer}",
            "twice": think_reply(steps, "") + think_reply(steps, answer)}[kind]
    return kind, text


def _truncate(rng: random.Random, text: str) -> str:
    """`text` cut at a random word boundary after the think block opens, before the answer ends."""
    head = len("<think>\n")
    cuts = [i for i, c in enumerate(text) if c == " " and head < i < len(text) - 4] or [max(head + 1, len(text) // 2)]
    return text[:rng.choice(cuts)]


def rows_for_pair(item: dict, source: str, seed: int = 0) -> list[dict]:
    """The preference rows `source` makes from one verifiable pair ([] if it cannot)."""
    ref = _split_reference(item.get("reference", ""))
    query = item.get("query")
    if ref is None or not isinstance(query, str) or not query.strip():
        return []
    steps, answer = ref
    rng = random.Random(f"{seed}:{item.get('id')}:{source}")
    user = [{"role": "user", "content": query}]
    if source == "verifier":
        bad = _split_reference(item.get("perturbed", ""))
        if bad is None or bad == ref:
            return []
        return [_row(item, source, user, think_reply(*ref), think_reply(*bad))]
    if source == "format":
        kind, broken = _broken_think(rng, steps, answer)
        return [_row(item, source, user, think_reply(steps, answer), broken, kind=kind)]
    if source == "mode":
        think = rng.random() < 0.5
        flagged = [{"role": "user", "content": f"{query} {'/think' if think else '/no_think'}"}]
        a, b = think_reply(steps, answer), no_think_reply(answer)
        return [_row(item, source, flagged, *((a, b) if think else (b, a)), flag="think" if think else "no_think")]
    if source == "truncated":
        full = think_reply(steps, answer)
        return [_row(item, source, user, full, _truncate(rng, full))]
    raise ConfigError(f"unknown preference source {source!r} (choose from {', '.join(SOURCES)})")


def build_preferences(items: list[dict], sources: list[str] | tuple[str, ...] = SOURCES, seed: int = 0) -> list[dict]:
    """Preference rows from verifiable pairs, source by source in item order."""
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise ConfigError(f"unknown preference source {bad[0]!r} (choose from {', '.join(SOURCES)})")
    return [r for it in items for s in sources for r in rows_for_pair(it, s, seed)]


def prompt_key(messages: list[dict]) -> str:
    """The prompt text the held-out split hashes: user/system turns with mode flags removed."""
    return "\n".join(_FLAG.sub("", m.get("content") or "") for m in messages
                     if m.get("role") in ("system", "user")).strip()


def split_held_out(rows: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by a hash of each row's prompt text."""
    from train.post.prepare import held_out

    held = [held_out(prompt_key(r["messages"]), share) for r in rows]
    return [r for r, h in zip(rows, held, strict=True) if not h], [r for r, h in zip(rows, held, strict=True) if h]


def check_row(row: Any, where: str) -> None:
    """A one-line ConfigError unless `row` is a preference row."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: not a JSON object")
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                         for m in msgs):
        raise ConfigError(f"{where}: needs `messages`, a non-empty list of chat turns (the prompt)")
    if msgs[-1]["role"] == "assistant":
        raise ConfigError(f"{where}: `messages` is the prompt only; the replies go in `chosen` / `rejected`")
    if not isinstance(row.get("source", ""), str):
        raise ConfigError(f"{where}: `source` must be a string (it names the row's group in the per-source accuracy)")
    for k in ("chosen", "rejected"):
        if not isinstance(row.get(k), str) or not row[k].strip():
            raise ConfigError(f"{where}: needs `chosen` and `rejected` reply strings (missing or empty `{k}`)")


def read_preferences(path: str | Path) -> list[dict]:
    """Preference rows of a JSONL file, checked; `source` defaults to the file name."""
    from q3.jsonl import read_jsonl

    p = Path(path)
    rows = []
    for where, row in read_jsonl(p, "preference"):
        check_row(row, where)
        row.setdefault("source", p.stem)
        rows.append(row)
    if not rows:
        raise ConfigError(f"{p}: no preference rows")
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def preferences_from_pairs(pairs: str | Path, sources: list[str] | tuple[str, ...] = SOURCES, seed: int = 0,
                           domains: list[str] | tuple[str, ...] = ("math", "logic")) -> list[dict]:
    """Read `q3 synth verifiable` pairs.jsonl and build the preference rows of its pairs of `domains`
    (those whose reference is worked steps + a final line; a code reference is a program)."""
    p = Path(pairs)
    if not p.is_file():
        raise ConfigError(f"pairs file not found: {p} (make it with `q3 synth verifiable`)")
    try:
        items = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not a JSONL file of RL pairs ({e})") from None
    if not all(isinstance(it, dict) and "query" in it and "reference" in it for it in items):
        raise ConfigError(f"{p}: rows need `query` and `reference` (RL pairs of `q3 synth verifiable`)")
    rows = build_preferences([it for it in items if it.get("domain") in domains], sources, seed)
    if not rows:
        raise ConfigError(f"{p}: no pair of domains {list(domains)} has a worked reference (steps, blank line, "
                          "answer) to build preferences from")
    return rows


# ---------------------------------------------------------------- tokens

def encode_reply(messages: list[dict], reply: str, max_len: int | None = None) -> list[int]:
    """Prompt (generation prompt, thinking on: the soft switch decides) + reply + <|im_end|>, the
    token sequence a rollout would have. Over `max_len`, the prompt's head is cut so the reply's
    end -- where the reward is read -- survives."""
    from q3.tokenizer import IM_END_ID, encode, render_chat

    ids = encode(render_chat(messages, add_generation_prompt=True)) + encode(reply) + [IM_END_ID]
    return ids[-max_len:] if max_len and len(ids) > max_len else ids
