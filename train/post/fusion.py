"""Thinking-mode fusion data (Qwen3 report, stage 3) from chat samples with reasoning.

Each source is a single-turn conversation whose assistant answer has reasoning (e.g. synth's
cold-start `sft.jsonl`); the text after `</think>` serves as the no-think answer. Sources become:

- think:     answered with the reasoning; an explicit `/think` flag (user or system turn) or none
             (thinking is the default, so unflagged samples answer with thinking);
- no_think:  a `/no_think` flag (user or system turn); the answer has an empty think block;
- budget:    thinking mode, reasoning cut after k tokens, then THINKING_BUDGET_TEXT (inserted by
             the sampler at inference, so not trained) and the answer (trained);
- multi_turn: several sources as consecutive turns, each turn flagged /think, /no_think or not;
             every answer follows the last flag so far (train.generate.thinking_mode's rule).

Rows are chat JSONL (`train.post.chat.read_chat_jsonl` reads them back):

    {"messages": [{"role": "system", "content": "You are a helpful assistant. /no_think"},
                  {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "reasoning_content": "", "content": "4"}],
     "meta": {"kind": "no_think", "flags": ["system:no_think", "user:none"], "thinking": [false],
              "sources": ["cold.jsonl:3"]}}

A budget turn is `{"role": "assistant", "budget_forced": true, "reasoning_content": <the text
the model wrote after "<think>\\n" before the cut>, "content": <answer>}` with meta
`thinking_budget` = the k tokens it spent inside the think block (the "\\n" after <think> counts,
as in train.sampling.ThinkingBudget). The build is deterministic for a seed.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from q3.config import ConfigError, Q3Config
from q3.log import get_logger
from q3.tokenizer import END_THINK, THINK, decode, encode
from train.post.chat import read_chat_jsonl

log = get_logger("train.post.fusion")
_FLAG = re.compile(r"\s*/(no_think|think)\b")


class FusionConfig(Q3Config):
    inputs: list[str] = Field(default_factory=list)   # chat JSONL files whose answers carry reasoning
    output: str | None = None          # fusion JSONL; stats go to <output>.stats.json
    seed: int = 0
    no_think: float = Field(0.35, ge=0, le=1)     # P(a turn is flagged /no_think)
    think_flag: float = Field(0.5, ge=0, le=1)    # P(a thinking turn carries /think; else unflagged)
    system_flag: float = Field(0.25, ge=0, le=1)  # P(the first flag sits in a system turn, not the user's)
    budget: float = Field(0.1, ge=0, le=1)        # P(a single-turn thinking sample is budget-cut)
    budget_tokens: list[int] = Field(default_factory=lambda: [32, 128, 512])
    multi_turn: float = Field(0.15, ge=0, le=1)   # P(a dialogue has several turns)
    max_turns: int = Field(3, ge=2)
    system_prompt: str = "You are a helpful assistant."
    on_error: Literal["raise", "skip"] = "raise"   # bad input rows

    @model_validator(mode="after")
    def _budgets(self) -> FusionConfig:
        if any(k < 2 for k in self.budget_tokens):
            raise ValueError("budget_tokens must all be >= 2")
        if self.budget > 0 and not self.budget_tokens:
            raise ValueError("budget > 0 needs budget_tokens")
        return self


# ---------------------------------------------------------------- sources

def _source(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(source, "") or (None, why): system text, query without flags, reasoning, answer."""
    msgs = row["messages"]
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
    rest = msgs[1:] if system is not None else msgs
    if [m["role"] for m in rest] != ["user", "assistant"] or rest[1].get("tool_calls") or row.get("tools"):
        return None, "not_single_turn"
    ans = rest[1]
    content = ans.get("content") or ""
    if ans.get("reasoning_content") is not None:
        reasoning = ans["reasoning_content"]
    elif END_THINK in content:
        reasoning = content.split(END_THINK)[0].split(THINK)[-1]
        content = content.split(END_THINK)[-1]
    else:
        reasoning = ""
    reasoning, content = reasoning.strip(), content.strip()
    if not reasoning:
        return None, "no_reasoning"
    if not content:
        return None, "no_answer"
    return {"system": _FLAG.sub("", system) if system else None, "query": _FLAG.sub("", rest[0]["content"]).strip(),
            "reasoning": reasoning, "answer": content, "source": row["source"]}, ""


def budget_cut(reasoning: str, k: int) -> tuple[str, int] | None:
    """(text after "<think>\\n", tokens spent) for a reasoning cut after at most k think tokens,
    at a cut whose text re-tokenises to the same ids; None if the reasoning fits in k tokens."""
    ids = encode("\n" + reasoning)
    if len(ids) <= k:
        return None
    for n in range(k, 1, -1):
        text = decode(ids[:n])
        if text.startswith("\n") and "\ufffd" not in text and encode(text) == ids[:n]:
            return text[1:], n
    return None


# ---------------------------------------------------------------- building

def _flag(rng: random.Random, cfg: FusionConfig) -> str | None:
    r = rng.random()
    if r < cfg.no_think:
        return "no_think"
    return "think" if rng.random() < cfg.think_flag else None


def _dialogue(srcs: list[dict[str, Any]], flags: list[str | None], in_system: bool, cfg: FusionConfig,
              budget: tuple[str, int] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    flag_log, modes = [], []
    system = srcs[0]["system"]
    thinking = True                                   # default mode; the last flag so far wins
    if in_system and flags[0]:
        thinking = flags[0] == "think"
        msgs.append({"role": "system", "content": f"{system or cfg.system_prompt} /{flags[0]}"})
        flag_log.append(f"system:{flags[0]}")
        flags = [None, *flags[1:]]
    elif system:
        msgs.append({"role": "system", "content": system})
    for s, f in zip(srcs, flags, strict=True):
        if f:
            thinking = f == "think"
            flag_log.append(f"user:{f}")
        else:
            flag_log.append("user:none")
        msgs.append({"role": "user", "content": f"{s['query']} /{f}" if f else s["query"]})
        if budget is not None:
            msgs.append({"role": "assistant", "budget_forced": True, "reasoning_content": budget[0],
                         "content": s["answer"]})
        else:
            msgs.append({"role": "assistant", "reasoning_content": s["reasoning"] if thinking else "",
                         "content": s["answer"]})
        modes.append(thinking)
    return msgs, {"flags": flag_log, "thinking": modes, "sources": [s["source"] for s in srcs]}


def build_fusion(rows: list[dict[str, Any]], cfg: FusionConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fusion rows (see module doc) and stats from `read_chat_jsonl` rows."""
    rng = random.Random(cfg.seed)
    skipped: Counter = Counter()
    srcs = []
    for r in rows:
        s, why = _source(r)
        if s is None:
            skipped[why] += 1
        else:
            srcs.append(s)
    rng.shuffle(srcs)
    out: list[dict[str, Any]] = []
    kinds: Counter = Counter()
    i = 0
    while i < len(srcs):
        multi = rng.random() < cfg.multi_turn and len(srcs) - i >= 2
        n = rng.randint(2, min(cfg.max_turns, len(srcs) - i)) if multi else 1
        group = srcs[i:i + n]
        i += n
        flags = [_flag(rng, cfg) for _ in group]
        in_system = rng.random() < cfg.system_flag
        budget = None
        if not multi and flags[0] != "no_think" and rng.random() < cfg.budget:
            budget = budget_cut(group[0]["reasoning"], rng.choice(cfg.budget_tokens))
            if budget is None:
                skipped["budget_fallback_short_reasoning"] += 1
        msgs, meta = _dialogue(group, flags, in_system, cfg, budget)
        kind = "multi_turn" if multi else "budget" if budget else "think" if meta["thinking"][0] else "no_think"
        meta = {"kind": kind, **meta}
        if budget:
            meta["thinking_budget"] = budget[1]
        kinds[kind] += 1
        out.append({"messages": msgs, "meta": meta})
    flags_c = Counter(f for r in out for f in r["meta"]["flags"])
    turns = Counter("think" if t else "no_think" for r in out for t in r["meta"]["thinking"])
    stats = {"sources": len(rows), "used": len(srcs), "skipped": dict(skipped), "rows": len(out),
             "kinds": dict(kinds), "flags": dict(flags_c), "turns": dict(turns), "seed": cfg.seed}
    return out, stats


def write_fusion(cfg: FusionConfig) -> dict[str, Any]:
    """Read cfg.inputs, build, write cfg.output (JSONL) and <output>.stats.json; returns the stats."""
    if not cfg.inputs or not cfg.output:
        raise ConfigError("fusion needs inputs=[...] and output=PATH")
    rows: list[dict[str, Any]] = []
    read: dict[str, Any] = {}
    for p in cfg.inputs:
        st: dict[str, Any] = {}
        rows += read_chat_jsonl(p, on_error=cfg.on_error, stats=st)
        read[p] = {"rows": st["rows"], "skipped": st["skipped"]}
    out_rows, stats = build_fusion(rows, cfg)
    stats["inputs"] = read
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows)
    tmp.replace(out)
    stats_path = out.with_name(out.name + ".stats.json")
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    log.info("fusion: %d rows -> %s (%s)", len(out_rows), out, stats["kinds"])
    return stats


__all__ = ["FusionConfig", "budget_cut", "build_fusion", "write_fusion"]
