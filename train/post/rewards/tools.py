"""Multi-turn tool use: environments, the Qwen3 tool-call parser, episodes, and the `tool_use` reward.

An `Environment` offers OpenAI tool schemas (rendered into the system turn by Qwen3's chat
template) and executes calls. `run_episodes` samples a reply with the rollout engine, parses its
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` blocks (only after </think>),
appends the assistant turn (with tool_calls) and one `tool` message per call, and continues
until a reply without tool calls, a bad call, a cut reply or `max_turns`.

The token view (`Episode.rollout`, a train.rollout.Rollout) is built by concatenation: each next
prompt is the previous prompt + the model's own tokens + the template's rendering of the tool
turns and the next generation prompt (rendered after a fixed probe history). So the model continues from exactly the tokens
it produced, and `sampled` is False on every injected token (excluded from the loss; their
`logprobs` are 0.0). Caveat: re-rendering the final `messages` is *not* always the same text,
because the template normalises earlier assistant turns: it drops an empty think block of a
non-final assistant turn (no_think tool calls; under the hard switch the generation prompt's
empty block too), re-serialises tool-call JSON in its own spacing, and strips reasoning of turns
before the last user query (never inside one episode: tool responses are not user queries).
`Episode.template_consistent` says whether the re-rendering matched; training must use the
token view, not a re-rendering.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from q3.tokenizer import END_THINK, IM_END_ID, THINK, decode, encode, render_chat
from synth.verifiers.math_answer import answers_equal
from train.post.rewards.base import (
    RewardInput,
    RewardOptions,
    RewardResult,
    answer_part,
    options,
    register,
    result,
)
from train.rollout import Rollout, row_seed
from train.sampling import SamplingParams

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


class Environment(Protocol):
    tools: list[dict]                       # OpenAI tool schemas, for render_chat(tools=...)

    def call(self, name: str, arguments: dict) -> str: ...   # the tool's output; errors as text


def _tool(name: str, description: str, params: dict[str, Any], required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": params, "required": required}}}


# ---------------------------------------------------------------- environments

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 10**6):
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](a, b)
    raise ValueError(f"unsupported expression element {type(node).__name__}")


class Calculator:
    """Arithmetic on an expression string (+ - * / // % ** and parentheses), parsed with ast: no eval."""

    tools = [_tool("calculator", "Evaluate an arithmetic expression, e.g. '(12 + 3) * 4'.",
                   {"expression": {"type": "string", "description": "the arithmetic expression"}}, ["expression"])]

    def call(self, name: str, arguments: dict) -> str:
        if name != "calculator":
            return f"error: unknown tool {name!r}"
        expr = arguments.get("expression")
        if not isinstance(expr, str) or len(expr) > 200:
            return "error: 'expression' must be a string of at most 200 characters"
        try:
            v = _eval(ast.parse(expr, mode="eval"))
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError) as e:
            return f"error: {type(e).__name__}: {e}"
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


WEATHER = {"paris": (18, "cloudy"), "london": (14, "rain"), "tokyo": (23, "sunny"), "cairo": (31, "sunny"),
           "oslo": (6, "snow"), "lima": (19, "fog"), "sydney": (25, "windy"), "toronto": (9, "clear")}


class WeatherTable:
    """A fixed weather table (deterministic key-value lookup) with a unit conversion."""

    tools = [_tool("get_weather", "Current weather of a city.",
                   {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   ["city"])]

    def call(self, name: str, arguments: dict) -> str:
        if name != "get_weather":
            return f"error: unknown tool {name!r}"
        city = str(arguments.get("city", "")).strip().lower()
        if city not in WEATHER:
            return f"error: no weather for {arguments.get('city')!r}; known cities: {', '.join(sorted(WEATHER))}"
        t, sky = WEATHER[city]
        if arguments.get("unit") == "fahrenheit":
            return json.dumps({"city": city.title(), "temperature": round(t * 9 / 5 + 32), "unit": "fahrenheit",
                               "sky": sky})
        return json.dumps({"city": city.title(), "temperature": t, "unit": "celsius", "sky": sky})


class Toolbox:
    """Several environments as one: tools concatenated, calls routed by tool name."""

    def __init__(self, *envs: Environment):
        self.envs = envs
        self.tools = [t for e in envs for t in e.tools]
        self._route = {t["function"]["name"]: e for e in envs for t in e.tools}

    def call(self, name: str, arguments: dict) -> str:
        env = self._route.get(name)
        return env.call(name, arguments) if env else f"error: unknown tool {name!r}; tools: {', '.join(self._route)}"


ENVIRONMENTS: dict[str, type] = {"calculator": Calculator, "weather": WeatherTable}


def make_env(names: str | list[str]) -> Environment:
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in ENVIRONMENTS]
    if unknown:
        from q3.config import ConfigError
        raise ConfigError(f"unknown tool environment(s) {unknown}; known: {', '.join(ENVIRONMENTS)}")
    envs = [ENVIRONMENTS[n]() for n in names]
    return envs[0] if len(envs) == 1 else Toolbox(*envs)


# ---------------------------------------------------------------- parsing

@dataclass
class ToolCall:
    name: str
    arguments: dict


def parse_tool_calls(text: str) -> tuple[list[ToolCall], list[str]]:
    """(calls, errors) of the `<tool_call>` blocks after the think block."""
    tail = text.rsplit(END_THINK, 1)[-1] if END_THINK in text else ("" if THINK in text else text)
    calls, errors = [], []
    for body in _CALL.findall(tail):
        try:
            obj = json.loads(body.strip())
        except ValueError as e:
            errors.append(f"not JSON: {e}"[:120])
            continue
        args = obj.get("arguments", {}) if isinstance(obj, dict) else None
        if isinstance(args, str):                 # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                args = None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(args, dict):
            errors.append("needs {\"name\": str, \"arguments\": object}")
            continue
        calls.append(ToolCall(obj["name"], args))
    return calls, errors


def assistant_message(text: str, calls: list[ToolCall]) -> dict:
    """The OpenAI assistant message of a reply text (reasoning, content before any tool call)."""
    msg: dict[str, Any] = {"role": "assistant"}
    rest = text
    if END_THINK in text:
        head, rest = text.split(END_THINK, 1)
        msg["reasoning_content"] = head.split(THINK, 1)[-1].strip("\n")
    msg["content"] = rest.split("<tool_call>", 1)[0].strip() if calls else rest.strip()
    if calls:
        msg["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in calls]
    return msg


# ---------------------------------------------------------------- episodes

@dataclass
class Episode:
    messages: list[dict]                 # prompt + the assistant and tool turns of the episode
    rollout: Rollout                     # token view: prompt_ids = the first prompt, token_ids = the rest
    turns: int                           # assistant turns generated
    stop: str                            # answer | max_turns | length | cancelled | bad_tool_call | eod
    calls: list[dict] = field(default_factory=list)    # {"name", "arguments", "output"} in order
    template_consistent: bool = True     # render(messages) == decode(prompt_ids + token_ids)
    prompt_len: int = 0                  # messages[:prompt_len] is the prompt conversation
    reply: str = ""                      # the last assistant turn's text as written (stop token excluded)

    def reward_input(self, meta: dict) -> RewardInput:
        """The final reply against everything before it (tool turns included, for `tool_use`)."""
        finish = {"length": "length", "cancelled": "cancelled"}.get(self.stop, "stop")
        return RewardInput(self.messages[:-1], self.reply, meta, finish)


def run_episode(engine, messages: list[dict], env: Environment, params: SamplingParams, max_turns: int = 4,
                seed: int = 0, enable_thinking: bool = True) -> Episode:
    """One tool-use episode (see `run_episodes`)."""
    return run_episodes(engine, [messages], [env], params, max_turns, seed, enable_thinking)[0]


def run_episodes(engine, conversations: list[list[dict]], envs: list[Environment], params: SamplingParams,
                 max_turns: int = 4, seed: int = 0, enable_thinking: bool = True) -> list[Episode]:
    """Episodes for many conversations at once: every turn is one engine batch over the live
    episodes, each with its own seed (so an episode samples as it would alone). `envs[i]` serves
    conversation i (stateful environments must not be shared). `engine`: a RolloutEngine (or
    anything with its `generate(prompts, params, n, seeds=...)`)."""
    if len(envs) != len(conversations):
        raise ValueError(f"{len(envs)} environments for {len(conversations)} conversations")
    states = []
    for msgs, env in zip(conversations, envs, strict=True):
        ids = encode(render_chat(msgs, enable_thinking=enable_thinking, add_generation_prompt=True, tools=env.tools))
        states.append({"msgs": list(msgs), "prompt": ids, "ids": list(ids), "tok": [], "lp": [], "sampled": [],
                       "stop": None, "turns": 0, "calls": [], "text": "", "finish": "stop"})
    for turn in range(max_turns):
        live = [i for i, s in enumerate(states) if s["stop"] is None]
        if not live:
            break
        outs = engine.generate([states[i]["ids"] for i in live], params, n=1,
                               seeds=[row_seed(seed, i, turn) % 2**31 for i in live])
        for i, [r] in zip(live, outs, strict=True):
            s, env = states[i], envs[i]
            s["turns"] += 1
            s["ids"] += r.token_ids
            s["tok"] += r.token_ids
            s["lp"] += r.logprobs
            s["sampled"] += r.sampled
            s["finish"] = r.finish_reason
            ended = r.finish_reason == "stop"
            text = decode(r.token_ids[:-1] if ended else r.token_ids)
            s["text"] = text
            calls, errors = parse_tool_calls(text)
            s["msgs"].append(assistant_message(text, calls))
            if not ended:
                s["stop"] = r.finish_reason
            elif r.token_ids[-1] != IM_END_ID:
                s["stop"] = "eod"
            elif errors:
                s["stop"] = "bad_tool_call"
            elif not calls:
                s["stop"] = "answer"
            elif turn == max_turns - 1:
                s["stop"] = "max_turns"
            else:
                outputs = [env.call(c.name, c.arguments) for c in calls]
                s["calls"] += [{"name": c.name, "arguments": c.arguments, "output": o} for c, o in zip(calls, outputs, strict=True)]
                injected = _injected([{"role": "tool", "content": o} for o in outputs], enable_thinking)
                s["msgs"] += [{"role": "tool", "content": o} for o in outputs]
                s["ids"] += injected
                s["tok"] += injected
                s["lp"] += [0.0] * len(injected)
                s["sampled"] += [False] * len(injected)
    episodes = []
    for msgs, env, s in zip(conversations, envs, states, strict=True):
        ro = Rollout(s["prompt"], s["tok"], s["lp"], s["sampled"], s["finish"])
        full = decode(s["prompt"] + s["tok"])
        rendered = render_chat(s["msgs"], enable_thinking=enable_thinking, tools=env.tools)
        episodes.append(Episode(s["msgs"], ro, s["turns"], s["stop"] or "max_turns", s["calls"],
                                rendered.rstrip("\n") == full.rstrip("\n"), len(msgs), s["text"]))
    return episodes


_PROBE = [{"role": "user", "content": "?"}, {"role": "assistant", "reasoning_content": "r", "content": "",
           "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]}]


def _injected(tool_msgs: list[dict], enable_thinking: bool) -> list[int]:
    """Token ids the template puts after an assistant's <|im_end|>: the tool turns and the next
    generation prompt. Rendered after a fixed probe history, not the real one: adding turns can
    change how the template renders the real history (a last assistant turn's empty think block
    disappears once it is no longer last), while the tool turns' own rendering depends only on them."""
    before = render_chat(_PROBE, enable_thinking=enable_thinking)
    after = render_chat(_PROBE + tool_msgs, enable_thinking=enable_thinking, add_generation_prompt=True)
    if not (after.startswith(before) and before.endswith("<|im_end|>\n")):
        raise RuntimeError("the chat template renders tool turns in an unexpected way")
    return encode("\n" + after[len(before):])     # "\n" follows the model's own <|im_end|>


# ---------------------------------------------------------------- the tool_use reward

class ToolUseOptions(RewardOptions):
    match: Literal["contains", "math"] = "contains"   # how the final answer is compared with meta["reference"]
    require: Literal["answer", "tool", "both"] = "both"   # what counts as success


def answer_matches(answer: str, reference: str, how: str) -> bool:
    if how == "math":
        nums = re.findall(r"-?\d+(?:\.\d+)?", answer)
        return bool(nums) and answers_equal(nums[-1], reference)
    return re.search(rf"(?<!\w){re.escape(reference.strip())}(?!\w)", answer, re.I) is not None


class ToolUseReward:
    """Task success of a tool episode: the final answer matches meta["reference"] and/or the
    expected tool (meta["expected_tool"]) was called in the conversation before the reply."""

    def __init__(self, opts: ToolUseOptions):
        self.name = opts.name or "tool_use"
        self.opts = opts

    def _one(self, x: RewardInput) -> RewardResult:
        called = [c.get("function", c).get("name") for m in x.messages if m.get("role") == "assistant"
                  for c in m.get("tool_calls") or []]
        expected = x.meta.get("expected_tool")
        tool_ok = (expected in called) if expected else bool(called)
        ref = x.meta.get("reference")
        answer_ok = isinstance(ref, str) and answer_matches(answer_part(x.reply), ref, self.opts.match)
        ok = {"answer": answer_ok, "tool": tool_ok, "both": answer_ok and tool_ok}[self.opts.require]
        if x.finish_reason != "stop":
            ok = False
        return result(float(ok), "ok" if ok else "failed", answer_ok=answer_ok, tool_ok=tool_ok, calls=called)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        return [self._one(x) for x in items]


@register("tool_use")
def build(spec: dict) -> ToolUseReward:
    return ToolUseReward(options(ToolUseOptions, spec))
