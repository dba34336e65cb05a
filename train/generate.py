"""Generation from a megatron checkpoint or an HF export: chat template, thinking modes, budget.

Thinking-mode fusion (Qwen3 report): a user or system turn may carry `/think` or `/no_think`;
the last flag in the dialogue wins and thinking is the default. No-think renders the prompt with
an empty think block (`<think>\\n\\n</think>\\n\\n`) so the model answers directly. Sampling runs
on `train.rollout.RolloutEngine` (KV cache, n samples batched, per-token logprobs): megatron
checkpoints through megatron-core's inference context, HF exports through their own cache.
The JSON-schema decoder picks token by token from next-token logits (last position only).

    q3 train generate load=runs/s3/ckpt prompt="Why is the sky blue? /no_think" max_tokens=32
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from q3.config import ConfigError, load_config
from q3.log import get_logger
from q3.tokenizer import END_THINK, END_THINK_ID, IM_END_ID, STOP_IDS, THINK, THINK_ID, ChatTokenizer
from train.config import GenerateConfig  # noqa: F401 (re-export: its home is the light train.config)
from train.rollout import Rollout, RolloutEngine, eval_mode, row_seed
from train.sampling import (
    THINKING_BUDGET_TEXT,
    SamplingParams,
    preset_for,
    sample,
)

log = get_logger("train.generate")
_FLAG = re.compile(r"/(no_think|think)\b")


# ---------------------------------------------------------------- tokenizer and chat template

# one tokenizer class for the project (q3.tokenizer); the name stays for generate's callers
Tokenizer = ChatTokenizer


def thinking_mode(messages: list[dict], default: bool = True) -> bool:
    """The last /think or /no_think flag in the user/system turns wins; thinking by default."""
    mode = default
    for m in messages:
        if m.get("role") in ("user", "system") and isinstance(m.get("content"), str):
            flags = _FLAG.findall(m["content"])
            if flags:
                mode = flags[-1] == "think"
    return mode


# ---------------------------------------------------------------- model backends

class LM:
    """A causal LM: a `RolloutEngine` for sampling, and next-token logits for constrained decoding."""

    vocab_size: int
    model: torch.nn.Module

    @cached_property
    def engine(self) -> RolloutEngine:
        return RolloutEngine(self.model)

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        raise NotImplementedError


class MegatronLM(LM):
    def __init__(self, model):
        self.model = model
        self.vocab_size = model.vocab_size

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        from train.rollout import MegatronKV

        with eval_mode(self.model):               # logits of the last position only
            return MegatronKV(self.model, 1, len(ids)).prefill(torch.tensor([ids], dtype=torch.long))[0]


class HFLM(LM):
    def __init__(self, model):
        self.model = model.eval()
        self.vocab_size = model.config.vocab_size

    @torch.no_grad()
    def next_logits(self, ids: list[int]) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False, logits_to_keep=1)
        return out.logits[0, -1].float()


def is_hf_folder(path: str | Path) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def load_lm(path: str | Path, model: str | None = None) -> tuple[LM, Tokenizer, str]:
    """(LM, tokenizer, name) for an HF export folder or a megatron dist checkpoint."""
    if is_hf_folder(path):
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
        return HFLM(m), Tokenizer(path), Path(path).name
    from train.config import load_model_config
    from train.hf_export import load_megatron

    m, cfg, _ = load_megatron(path, load_model_config(model) if model else None)
    return MegatronLM(m), Tokenizer(), cfg.name


# ---------------------------------------------------------------- generation

@dataclass
class Completion:
    token_ids: list[int]
    text: str                 # everything generated (think block included)
    reasoning: str | None     # the text inside <think>...</think>, if any
    content: str              # the answer after the think block
    finish_reason: str        # "stop" | "length" | "cancelled"
    prompt_tokens: int
    budget_forced: bool = False
    extra: dict = field(default_factory=dict)
    logprobs: list[float] | None = None                       # per token_ids entry (T=1, full vocab)
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per token: the k likeliest (id, logprob)
    sampled: list[bool] | None = None                          # False for forced (budget) tokens


def split_thinking(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a generated text."""
    if END_THINK not in text:
        if THINK in text:                   # still thinking when cut off
            return text.split(THINK, 1)[1].strip(), ""
        return None, text.strip()
    head, tail = text.split(END_THINK, 1)
    reasoning = head.split(THINK, 1)[-1].strip()
    if tail.startswith("."):                # the budget text closes with "</think>.\n\n"
        tail = tail[1:]
    return reasoning, tail.strip()


def completion(tok: Tokenizer, r: Rollout) -> Completion:
    """A Completion from a Rollout: the stop token is dropped (it is not part of the answer)."""
    k = len(r.token_ids) - (r.finish_reason == "stop")
    ids = r.token_ids[:k]
    text = tok.decode(ids)
    reasoning, content = split_thinking(text)
    return Completion(ids, text, reasoning, content, r.finish_reason, len(r.prompt_ids), r.budget_forced,
                      logprobs=r.logprobs[:k], sampled=r.sampled[:k],
                      top_logprobs=r.top_logprobs[:k] if r.top_logprobs is not None else None)


def generate(lm: LM, tok: Tokenizer, prompt_ids: list[int], params: SamplingParams,
             generator: torch.Generator | None = None, in_think: bool = False) -> Completion:
    """One completion: sample until a stop token or max_tokens, enforcing the thinking budget.
    (`in_think` is kept for callers; the engine reads it from the prompt's open <think>.)"""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
    return completion(tok, lm.engine.generate([list(prompt_ids)], params, n=1, seed=seed)[0][0])


# ---------------------------------------------------------------- constrained JSON (json_schema)

class SchemaError(ConfigError):
    """A response_format schema uses something the constrained decoder does not support."""


class JsonDecoder:
    """Generate JSON valid for a simple JSON schema by letting the model choose only among tokens
    that keep the output valid: object (all properties, in order), enum/const, integer/number,
    boolean, null, string (maxLength in tokens) and arrays of those. Structure tokens are forced."""

    def __init__(self, lm: LM, tok: Tokenizer, params: SamplingParams, generator: torch.Generator | None):
        self.lm, self.tok, self.p, self.g = lm, tok, params, generator
        self.digits = [tok.encode(str(d))[0] for d in range(10)]
        self.minus = tok.encode("-")[0]
        self.quote = tok.encode('"')[0]

    def run(self, prompt_ids: list[int], schema: dict) -> list[int]:
        self.ids = list(prompt_ids)
        self.n0 = len(prompt_ids)
        self.value(schema, [IM_END_ID])
        return self.ids[self.n0:-1]            # without the terminating <|im_end|>

    def force(self, text_or_ids) -> None:
        self.ids += self.tok.encode(text_or_ids) if isinstance(text_or_ids, str) else list(text_or_ids)

    def pick(self, allowed: list[int] | torch.Tensor) -> int:
        if len(allowed) == 1:
            t = int(allowed[0])
        else:
            logits = self.lm.next_logits(self.ids)[: self.tok.vocab_size]
            if not isinstance(allowed, torch.Tensor):
                allowed = torch.tensor(sorted(set(allowed)))
            t = sample(logits, self.ids[self.n0:], self.p, self.g, allowed)
        self.ids.append(t)
        return t

    def choose(self, options: list[list[int]]) -> int:
        """Sample one of several token sequences, token by token (a trie walk)."""
        alive = list(range(len(options)))
        pos = 0
        while True:
            done = [i for i in alive if len(options[i]) == pos]
            if done:
                return done[0]
            t = self.pick([options[i][pos] for i in alive])
            alive = [i for i in alive if options[i][pos] == t]
            pos += 1

    def value(self, s: dict, delim: list[int]) -> None:
        if not isinstance(s, dict):
            raise SchemaError(f"schema must be an object, got {s!r}")
        if "enum" in s or "const" in s:
            values = s["enum"] if "enum" in s else [s["const"]]
            opts = [self.tok.encode(json.dumps(v, ensure_ascii=False)) + delim for v in values]
            self.choose(opts)
            return
        typ = s.get("type", "object" if "properties" in s else None)
        if isinstance(typ, list):
            typ = next((t for t in typ if t != "null"), "null")
        if typ == "object":
            props = s.get("properties", {})
            self.force("{")
            for k, (name, sub) in enumerate(props.items()):
                self.force(json.dumps(name, ensure_ascii=False) + ": ")
                self.value(sub, self.tok.encode(", " if k < len(props) - 1 else "}"))
            if not props:
                self.force("}")
            self.force(delim)
        elif typ in ("integer", "number"):
            self.integer(s, delim)
        elif typ == "boolean":
            self.choose([self.tok.encode("true") + delim, self.tok.encode("false") + delim])
        elif typ == "null":
            self.force(self.tok.encode("null") + delim)
        elif typ == "string":
            self.string(s, delim)
        elif typ == "array":
            lo, hi = int(s.get("minItems", 1)), int(s.get("maxItems", 4))
            self.force("[")
            if hi == 0:
                self.force(self.tok.encode("]") + delim)
                return
            comma, close = self.tok.encode(", "), self.tok.encode("]")
            n = 0
            while True:
                n += 1
                self.value(s.get("items", {"type": "string"}), [])
                opts = ([comma] if n < hi else []) + ([close] if n >= lo else [])
                if self.choose(opts) == len(opts) - 1 and n >= lo:
                    break
            self.force(delim)
        else:
            raise SchemaError(f"unsupported schema type {typ!r} (supported: object, enum, const, integer, "
                              "number, boolean, null, string, array)")

    def integer(self, s: dict, delim: list[int]) -> None:
        lo, hi = s.get("minimum"), s.get("maximum")
        max_digits = 6 if hi is None or lo is None else max(len(str(abs(int(lo)))), len(str(abs(int(hi)))))
        start = len(self.ids)
        text = ""
        end = delim[0] if delim else IM_END_ID   # stands for "number finished"; replaced below
        while True:
            body = text.lstrip("-")
            allowed = [self.minus] if text == "" and (lo is None or lo < 0) else []
            if body != "0" and len(body) < max_digits:
                allowed += self.digits if text == "" else self.digits[1:] if not body else self.digits
            if body:
                allowed.append(end)
            t = self.pick(allowed)
            if body and t == end:
                self.ids.pop()
                break
            text += self.tok.decode([t])
        v = int(text)
        clamped = min(max(v, lo if lo is not None else v), hi if hi is not None else v)
        if clamped != v:                        # out of range: replace by the nearest bound
            del self.ids[start:]
            self.force(str(int(clamped)))
        self.force(delim)

    def string(self, s: dict, delim: list[int]) -> None:
        max_tokens = int(s.get("maxLength", 16))
        self.force('"')
        safe = torch.from_numpy(self.tok.string_safe_ids)
        safe_or_end = torch.cat([safe, torch.tensor([self.quote])])
        n = 0
        while n < max_tokens:
            t = self.pick(safe_or_end if n >= int(s.get("minLength", 1)) else safe)
            if t == self.quote:
                self.ids.pop()
                break
            n += 1
        self.force(self.tok.encode('"') + delim)


def generate_json(lm: LM, tok: Tokenizer, prompt_ids: list[int], schema: dict, params: SamplingParams,
                  generator: torch.Generator | None = None) -> Completion:
    ids = JsonDecoder(lm, tok, params, generator).run(prompt_ids, schema)
    text = tok.decode(ids)
    return Completion(ids, text, None, text, "stop", len(prompt_ids))


def chat(lm: LM, tok: Tokenizer, messages: list[dict], params: SamplingParams | None = None, n: int = 1,
         seed: int | None = None, thinking: bool | None = None, json_schema: dict | None = None,
         top_logprobs: int = 0, on_token: Callable[[int, int], None] | None = None,
         cancel: threading.Event | None = None, **overrides) -> list[Completion]:
    """n completions of a chat. Sampling defaults to the preset of the dialogue's mode; keyword
    overrides (temperature, top_p, top_k, presence_penalty, max_tokens, thinking_budget) win.

    `on_token(choice_index, token_id)` is called for every token of the completions (sampled or
    forced), in order; `cancel.set()` stops early (finish_reason "cancelled"); `top_logprobs` = k
    records the k likeliest tokens per position (free generation only)."""
    if thinking is None:
        thinking = thinking_mode(messages)
    if json_schema is not None:
        thinking = False                         # structured answers skip the think block
    params = (params or preset_for(thinking)).with_(**overrides)
    prompt = tok.encode(tok.render(messages, thinking))
    seed = seed if seed is not None else int(time.time_ns() % 2**31)
    if json_schema is None:
        emit = None
        if on_token is not None:

            def emit(choice: int, token: int) -> None:   # the stop token is not part of a Completion
                if token not in STOP_IDS:
                    on_token(choice, token)
        rollouts = lm.engine.generate([prompt], params, n=n, seed=seed, top_logprobs=top_logprobs,
                                      on_token=emit, cancel=cancel)[0]
        return [completion(tok, r) for r in rollouts]
    outs = []
    for i in range(n):
        if cancel is not None and cancel.is_set():
            outs.append(Completion([], "", None, "", "cancelled", len(prompt)))
            continue
        out = generate_json(lm, tok, prompt, json_schema, params, torch.Generator().manual_seed(row_seed(seed, 0, i)))
        for t in out.token_ids if on_token is not None else ():
            on_token(i, t)
        outs.append(out)
    return outs


# ---------------------------------------------------------------- CLI



def cli(config: str | None, overrides: list[str]) -> int:
    """q3 train generate load=DIR prompt="..." [thinking_budget=16] [max_tokens=64] [n=2]"""
    c = load_config(GenerateConfig, "generate", config, overrides)
    lm, tok, _ = load_lm(c.load, c.model)
    messages = ([{"role": "system", "content": c.system}] if c.system else []) + \
        [{"role": "user", "content": c.prompt}]
    t0 = time.time()
    outs = chat(lm, tok, messages, n=c.n, seed=c.seed, thinking=c.thinking, temperature=c.temperature,
                top_p=c.top_p, top_k=c.top_k, presence_penalty=c.presence_penalty, max_tokens=c.max_tokens,
                thinking_budget=c.thinking_budget)
    dt = time.time() - t0
    for i, o in enumerate(outs):
        print(f"--- completion {i} ({len(o.token_ids)} tokens, {o.finish_reason}"
              f"{', budget reached' if o.budget_forced else ''})")
        print(o.text)
    ntok = sum(len(o.token_ids) for o in outs)
    print(f"--- {ntok} tokens in {dt:.1f}s ({ntok / max(dt, 1e-9):.1f} tokens/s)")
    return 0


__all__ = ["END_THINK_ID", "THINK_ID", "THINKING_BUDGET_TEXT", "Completion", "Tokenizer", "chat", "completion",
           "generate", "generate_json", "load_lm", "thinking_mode"]
