"""`q3 post eval`: post-training evals on held-out verifiable sets, with the rollout engine.

- verifiable: pass@1 (mean over k samples) and pass@k (unbiased estimator of Chen et al. 2021)
  per domain, scored by synth's verifiers — the same reward the RL stages use;
- thinkfollow (the report's ThinkFollow): multi-turn dialogues with random /think and /no_think
  flags in user turns; the reply must open with an empty think block iff the last flag is
  /no_think (thinking is the default). The prompt uses the soft switch (flags only, template's
  `enable_thinking` left on), so the model itself must write the empty block;
- budget: thinking replies under `thinking_budget=k`: at most k thinking tokens before the
  report's stop sentence (inserted by the engine, never sampled), then an answer;
- answer length: completion tokens per reply.

Writes `<out>/eval.json` and prints a table:

    q3 post eval load=runs/post/fusion pairs=data/post/eval_pairs.jsonl k=4
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from q3.atomic import atomic_write_text
from q3.config import ConfigError, Q3Config, load_config
from q3.log import get_logger, print_table
from q3.tokenizer import END_THINK, END_THINK_ID, EOD_ID, IM_END_ID, THINK, THINK_ID
from train.sampling import THINKING_BUDGET_TEXT

log = get_logger("q3.post.eval")
EMPTY_THINK = "<think>\n\n</think>"


class EvalConfig(Q3Config):
    load: str                                   # checkpoint (megatron) or HF folder
    model: str | None = None                    # conf/model name for checkpoints without a sidecar
    pairs: str                                  # held-out RL pairs JSONL (`q3 synth verifiable` rows)
    out: str | None = None                      # default: <load>/eval
    limit: int = Field(default=64, ge=1)        # items per eval
    k: int = Field(default=4, ge=1)             # samples per item for pass@k
    max_tokens: int = Field(default=128, ge=1)
    temperature: float | None = None            # None: the mode's preset (report's evaluation settings)
    mode: str = "think"                         # think | no_think: flag appended to verifiable queries
    evals: list[str] = Field(default_factory=lambda: ["verifiable", "thinkfollow", "budget"])
    thinkfollow_turns: int = Field(default=3, ge=1)
    budget: int = Field(default=8, ge=0)        # thinking_budget of the budget eval
    seed: int = 0


@dataclass
class Reply:
    text: str
    thinking: str | None          # inside <think>...</think> (None: no think block)
    answer: str
    tokens: int
    thinking_tokens: int          # sampled tokens inside the think block
    budget_forced: bool
    finish_reason: str


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def thinking_tokens(token_ids: list[int], sampled: list[bool]) -> int:
    """Sampled tokens between <think> and </think> (the forced budget sentence not counted)."""
    inside, n = False, 0
    for t, s in zip(token_ids, sampled, strict=True):
        if t == THINK_ID:
            inside = True
        elif t == END_THINK_ID:
            inside = False
        elif inside and s:
            n += 1
    return n


def opens_with_empty_think(text: str) -> bool:
    return text.lstrip().startswith(EMPTY_THINK)


def opens_with_thinking(text: str) -> bool:
    """A non-empty think block first: what /think (or no flag) asks for."""
    t = text.lstrip()
    if not t.startswith(THINK):
        return False
    inner = t[len(THINK):].split(END_THINK, 1)[0]
    return bool(inner.strip())


class Evaluator:
    """Turns chats into replies with the rollout engine; one place for rendering and decoding."""

    def __init__(self, engine, tokenizer, cfg: EvalConfig):
        self.engine, self.tok, self.cfg = engine, tokenizer, cfg

    def replies(self, dialogues: list[list[dict]], thinking: list[bool], n: int, seed: int,
                thinking_budget: int | None = None, max_tokens: int | None = None) -> list[list[Reply]]:
        """n replies per dialogue, sampled with the report's preset of the dialogue's mode; the
        prompts of one mode go to the engine as one batched call."""
        from q3.tokenizer import render_chat
        from train.generate import split_thinking
        from train.sampling import preset_for

        out: list[list[Reply]] = [[] for _ in dialogues]
        for mode in (True, False):
            idx = [i for i, t in enumerate(thinking) if t == mode]
            if not idx:
                continue
            params = preset_for(mode).with_(max_tokens=max_tokens or self.cfg.max_tokens, temperature=self.cfg.temperature,
                                            thinking_budget=thinking_budget)
            prompts = [self.tok.encode(render_chat(dialogues[i], add_generation_prompt=True)) for i in idx]
            groups = self.engine.generate(prompts, params, n=n, seed=seed + (0 if mode else 1))
            for i, rolls in zip(idx, groups, strict=True):
                for r in rolls:
                    ids = r.token_ids[:-1] if r.token_ids and r.token_ids[-1] in (EOD_ID, IM_END_ID) else r.token_ids
                    text = self.tok.decode(ids)                      # the reply, stop token dropped
                    reasoning, answer = split_thinking(text)
                    out[i].append(Reply(text, reasoning, answer, len(r.token_ids),
                                        thinking_tokens(r.token_ids, r.sampled), r.budget_forced, r.finish_reason))
        return out


def flag(mode: str) -> str:
    return {"think": " /think", "no_think": " /no_think", "none": ""}[mode]


def eval_verifiable(ev: Evaluator, items: list[dict]) -> dict:
    from synth.verifiers import verify_item

    cfg = ev.cfg
    think = cfg.mode != "no_think"
    dialogues = [[{"role": "user", "content": it["query"] + flag(cfg.mode)}] for it in items]
    groups = ev.replies(dialogues, [think] * len(items), cfg.k, cfg.seed)
    per_domain: dict[str, list[tuple[int, int]]] = defaultdict(list)
    lengths = []
    for it, group in zip(items, groups, strict=True):
        c = sum(verify_item(r.text, it).passed for r in group)
        per_domain[it.get("domain", "all")].append((len(group), c))
        lengths += [r.tokens for r in group]
    res = {}
    for dom, nc in sorted(per_domain.items()):
        res[dom] = {"items": len(nc), "pass@1": sum(c / n for n, c in nc) / len(nc),
                    f"pass@{cfg.k}": sum(pass_at_k(n, c, cfg.k) for n, c in nc) / len(nc)}
    allnc = [x for v in per_domain.values() for x in v]
    res["all"] = {"items": len(allnc), "pass@1": sum(c / n for n, c in allnc) / max(len(allnc), 1),
                  f"pass@{cfg.k}": sum(pass_at_k(n, c, cfg.k) for n, c in allnc) / max(len(allnc), 1),
                  "mean_tokens": sum(lengths) / max(len(lengths), 1)}
    return res


def thinkfollow_dialogues(items: list[dict], turns: int, seed: int) -> tuple[list[list[dict]], list[str]]:
    """Multi-turn dialogues with random flags; earlier turns answered with references (no reasoning,
    as the template renders history). Returns (dialogues, the expected mode of each final reply)."""
    rng = random.Random(f"thinkfollow:{seed}")
    dialogues, expected = [], []
    for _ in range(len(items)):
        n_turns = rng.randint(1, turns)
        picks = [items[rng.randrange(len(items))] for _ in range(n_turns)]
        msgs, mode = [], "think"
        for j, it in enumerate(picks):
            f = rng.choice(["think", "no_think", "none"])
            if f != "none":
                mode = f
            msgs.append({"role": "user", "content": it["query"] + flag(f)})
            if j < n_turns - 1:
                answer = it.get("reference", "").rsplit("\n\n", 1)[-1]
                msgs.append({"role": "assistant", "content": answer})
        dialogues.append(msgs)
        expected.append(mode)
    return dialogues, expected


def eval_thinkfollow(ev: Evaluator, items: list[dict]) -> dict:
    dialogues, expected = thinkfollow_dialogues(items, ev.cfg.thinkfollow_turns, ev.cfg.seed)
    groups = ev.replies(dialogues, [e == "think" for e in expected], 1, ev.cfg.seed + 7919)
    ok: dict[str, list[bool]] = {"think": [], "no_think": []}
    misses = []
    for e, msgs, group in zip(expected, dialogues, groups, strict=True):
        text = group[0].text
        good = opens_with_empty_think(text) if e == "no_think" else opens_with_thinking(text)
        ok[e].append(good)
        if not good and len(misses) < 5:
            misses.append({"expected": e, "turns": sum(m["role"] == "user" for m in msgs),
                           "last_user": msgs[-1]["content"][-60:], "reply": text[:120]})
    rate = {m: (sum(v) / len(v) if v else None) for m, v in ok.items()}
    n = sum(len(v) for v in ok.values())
    return {"dialogues": n, "accuracy": sum(sum(v) for v in ok.values()) / max(n, 1),
            "think_ok": rate["think"], "no_think_ok": rate["no_think"],
            "think_n": len(ok["think"]), "no_think_n": len(ok["no_think"]), "misses": misses}


def eval_budget(ev: Evaluator, items: list[dict]) -> dict:
    b = ev.cfg.budget
    dialogues = [[{"role": "user", "content": it["query"] + " /think"}] for it in items]
    # room for k thinking tokens, the forced sentence and max_tokens of answer
    room = b + len(ev.tok.encode(THINKING_BUDGET_TEXT)) + ev.cfg.max_tokens
    groups = ev.replies(dialogues, [True] * len(items), 1, ev.cfg.seed + 104729, thinking_budget=b, max_tokens=room)
    replies = [g[0] for g in groups]
    within = [r.thinking_tokens <= b for r in replies]
    forced = [r for r in replies if r.budget_forced]
    return {"budget": b, "replies": len(replies), "within_budget": sum(within) / max(len(replies), 1),
            "forced": len(forced), "answered_after_forcing": sum(bool(r.answer.strip()) for r in forced)
            / max(len(forced), 1) if forced else None,
            "max_thinking_tokens": max((r.thinking_tokens for r in replies), default=0)}


EVALS = {"verifiable": eval_verifiable, "thinkfollow": eval_thinkfollow, "budget": eval_budget}


def run(cfg: EvalConfig) -> dict:
    from train.generate import load_lm

    unknown = [e for e in cfg.evals if e not in EVALS]
    if unknown:
        raise ConfigError(f"unknown evals {unknown}; known: {', '.join(EVALS)}")
    if cfg.mode not in ("think", "no_think", "none"):
        raise ConfigError(f"mode must be think, no_think or none, got {cfg.mode!r}")
    if not Path(cfg.load).exists():
        raise ConfigError(f"load={cfg.load}: no such checkpoint or HF folder")
    path = Path(cfg.pairs)
    if not path.is_file():
        raise ConfigError(f"pairs file not found: {path}")
    from synth.generators.schema import read_pairs

    items = read_pairs(str(path))[: cfg.limit]
    if not items:
        raise ConfigError(f"{path}: no items")
    lm, tok, name = load_lm(cfg.load, cfg.model)
    ev = Evaluator(lm.engine, tok, cfg)
    result: dict = {"model": name, "load": cfg.load, "pairs": str(path), "items": len(items), "k": cfg.k,
                    "max_tokens": cfg.max_tokens, "mode": cfg.mode}
    for e in cfg.evals:
        t0 = time.time()
        result[e] = EVALS[e](ev, items)
        result[e]["seconds"] = round(time.time() - t0, 2)
        log.info("%s: %s", e, json.dumps(result[e]))
    out = Path(cfg.out or Path(cfg.load) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(result, indent=1, sort_keys=True))
    rows = []
    for e in cfg.evals:
        for k, v in result[e].items():
            if isinstance(v, dict):
                rows += [(e, f"{k} {kk}", vv) for kk, vv in v.items()]
            elif not isinstance(v, list):              # lists are examples: in eval.json only
                rows.append((e, k, v))
    print_table(f"post eval: {name} on {len(items)} held-out items", ["eval", "metric", "value"], rows)
    print(f"eval: {out / 'eval.json'}")
    return result


def cli(config: str | None, overrides: list[str]) -> int:
    """pass@k, ThinkFollow, budget compliance: q3 post eval load=CKPT pairs=held_out.jsonl [k=4]"""
    run(load_config(EvalConfig, "post", config, overrides))
    return 0
