"""Multi-turn tool use: environments, the Qwen3 tool-call parser, episode assembly on a real tiny
megatron Qwen3 (scripted replies fed as forced tokens with the model's own logprobs, a scripted
tool call followed by a really sampled turn, and a fully sampled episode), and the tool_use reward."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from q3.tokenizer import IM_END_ID, decode, encode, render_chat
from train.logprobs import token_logprobs
from train.post.rewards import build_reward
from train.post.rewards.tools import (
    Calculator,
    Toolbox,
    WeatherTable,
    make_env,
    parse_tool_calls,
    run_episode,
    run_episodes,
)
from train.rollout import Rollout, RolloutEngine
from train.sampling import SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))   # tests/train/tiny_export.py

ASK = [{"role": "user", "content": "What is 17 * 23 + 4?"}]
CALL = '<think>\nI should use the calculator.\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23 + 4"}}\n</tool_call>'
FINAL = "<think>\nThe tool said 395.\n</think>\n\nThe answer is 395."
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_tokens=12)


@pytest.fixture(scope="module")
def model():
    from tiny_export import random_model

    return random_model("tiny_dense")[0]


class ForcedEngine:
    """Replies from a script, fed as forced tokens: each Rollout carries the model's own logprobs of
    the scripted tokens given the prompt (what a RolloutEngine reports for tokens it produced).
    After the script runs out, `then` (a real RolloutEngine) samples."""

    def __init__(self, model, script: list[str], then: RolloutEngine | None = None):
        self.model, self.script, self.then = model, list(script), then
        self.prompts: list[list[int]] = []

    def generate(self, prompts, params, n=1, seeds=None, **kw):
        self.prompts += prompts
        if not self.script:
            return self.then.generate(prompts, params, n=n, seeds=seeds, **kw)
        out = []
        for p in prompts:
            ids = encode(self.script.pop(0)) + [IM_END_ID]
            toks = torch.tensor([p + ids])
            mask = torch.zeros_like(toks)
            mask[0, len(p) - 1:len(p) - 1 + len(ids)] = 1
            with torch.no_grad():
                lp, _ = token_logprobs(self.model, toks, mask)
            out.append([Rollout(list(p), ids, lp[0, len(p) - 1:len(p) - 1 + len(ids)].tolist(), [True] * len(ids),
                                "stop")])
        return out


def test_environments_are_deterministic_and_safe():
    c = Calculator()
    assert c.call("calculator", {"expression": "17 * 23 + 4"}) == "395"
    assert c.call("calculator", {"expression": "7 / 2"}) == "3.5"
    assert c.call("calculator", {"expression": "(2 ** 10) // 3 % 7"}) == "5"
    assert c.call("calculator", {"expression": "__import__('os').system('ls')"}).startswith("error: ")
    assert c.call("calculator", {"expression": "9 ** 9 ** 9"}) == "error: ValueError: exponent too large"
    assert c.call("calculator", {"expression": "1/0"}).startswith("error: ZeroDivisionError")
    assert c.call("calculator", {}).startswith("error: 'expression'")
    w = WeatherTable()
    assert json.loads(w.call("get_weather", {"city": "Paris"})) == {"city": "Paris", "temperature": 18,
                                                                    "unit": "celsius", "sky": "cloudy"}
    assert json.loads(w.call("get_weather", {"city": "oslo", "unit": "fahrenheit"}))["temperature"] == 43
    assert "known cities" in w.call("get_weather", {"city": "Atlantis"})
    box = make_env(["calculator", "weather"])
    assert isinstance(box, Toolbox) and [t["function"]["name"] for t in box.tools] == ["calculator", "get_weather"]
    assert box.call("get_weather", {"city": "Lima"}).startswith('{"city": "Lima"')
    assert box.call("search", {}).startswith("error: unknown tool 'search'")


def test_parser_reads_the_template_format():
    assistant = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1+1"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}
    rendered = render_chat([*ASK, assistant], tools=make_env(["calculator", "weather"]).tools)
    reply = rendered.rsplit("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")
    calls, errors = parse_tool_calls(reply)                # what the template writes, we read back
    assert [(c.name, c.arguments) for c in calls] == [("calculator", {"expression": "1+1"}),
                                                      ("get_weather", {"city": "Oslo"})] and not errors
    calls, errors = parse_tool_calls('<think>\n<tool_call>\n{"name": "x", "arguments": {}}\n</tool_call>\n'
                                     '</think>\n\n<tool_call>\n{"name": "calculator", "arguments": "{\\"expression\\": \\"2\\"}"}\n'
                                     '</tool_call><tool_call>{oops}</tool_call><tool_call>{"arguments": {}}</tool_call>')
    assert [(c.name, c.arguments) for c in calls] == [("calculator", {"expression": "2"})]  # not the one in thinking
    assert len(errors) == 2 and errors[0].startswith("not JSON")
    assert parse_tool_calls("<think>\nunfinished <tool_call>") == ([], [])


def test_scripted_episode_assembly(model):
    env = Calculator()
    eng = ForcedEngine(model, [CALL, FINAL])
    ep = run_episode(eng, ASK, env, PARAMS, max_turns=4, seed=1)
    assert ep.stop == "answer" and ep.turns == 2 and ep.reply == FINAL
    assert [m["role"] for m in ep.messages] == ["user", "assistant", "tool", "assistant"]
    assert ep.messages[1]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "17 * 23 + 4"}}
    assert ep.messages[1]["reasoning_content"] == "I should use the calculator." and ep.messages[1]["content"] == ""
    assert ep.messages[2] == {"role": "tool", "content": "395"}
    assert ep.calls == [{"name": "calculator", "arguments": {"expression": "17 * 23 + 4"}, "output": "395"}]
    ro = ep.rollout
    assert ro.prompt_ids == encode(render_chat(ASK, add_generation_prompt=True, tools=env.tools))
    assert len(ro.token_ids) == len(ro.logprobs) == len(ro.sampled)
    # the second prompt the engine saw is exactly the first prompt + the model's tokens + injected tokens
    assert eng.prompts[1] == ro.prompt_ids + ro.token_ids[:len(eng.prompts[1]) - len(ro.prompt_ids)]
    n1, n2 = len(encode(CALL)) + 1, len(encode(FINAL)) + 1
    inj = len(ro.token_ids) - n1 - n2
    assert ro.sampled == [True] * n1 + [False] * inj + [True] * n2
    assert all(lp == 0.0 for lp, s in zip(ro.logprobs, ro.sampled, strict=True) if not s)
    assert decode(ro.token_ids[n1:n1 + inj]) == ("\n<|im_start|>user\n<tool_response>\n395\n</tool_response>"
                                                 "<|im_end|>\n<|im_start|>assistant\n")
    assert ep.template_consistent              # the script is in the template's own spelling
    assert decode(ro.prompt_ids + ro.token_ids) == render_chat(ep.messages, tools=env.tools).rstrip("\n")
    # the final reply scored against the whole episode
    x = ep.reward_input({"reference": "395", "expected_tool": "calculator"})
    assert x.messages == ep.messages[:-1] and x.reply == FINAL
    r = build_reward({"type": "tool_use"}).score([x, ep.reward_input({"reference": "396"}),
                                                  ep.reward_input({"reference": "395", "expected_tool": "get_weather"})])
    assert [y.score for y in r] == [1.0, 0.0, 0.0]
    assert r[2].details["answer_ok"] and not r[2].details["tool_ok"]


def test_episode_stops(model):
    env = Calculator()
    assert run_episode(ForcedEngine(model, [CALL, CALL]), ASK, env, PARAMS, max_turns=2).stop == "max_turns"
    bad = run_episode(ForcedEngine(model, ["<tool_call>\n{not json}\n</tool_call>"]), ASK, env, PARAMS)
    assert bad.stop == "bad_tool_call" and bad.turns == 1 and bad.calls == []
    # no-think, soft switch: the template drops the empty think block of a non-final turn on re-render
    soft = [{"role": "user", "content": "What is 17 * 23 + 4? /no_think"}]
    ep = run_episode(ForcedEngine(model, ["<think>\n\n</think>\n\n" + CALL.split("\n\n", 1)[1],
                                          "<think>\n\n</think>\n\n395"]), soft, env, PARAMS)
    assert ep.stop == "answer" and ep.turns == 2 and not ep.template_consistent
    assert build_reward({"type": "format"}).score([ep.reward_input({})])[0].details["reason"] == "ok"


def test_scripted_call_then_sampled_turn_is_on_policy(model):
    """Turn 2 is really sampled by the engine from the assembled prompt: the trainer's logprobs of
    the concatenated token view must equal the engine's at every sampled token of that turn."""
    env = make_env(["calculator", "weather"])
    eng = ForcedEngine(model, [CALL], then=RolloutEngine(model))
    ep = run_episode(eng, ASK, env, PARAMS, max_turns=3, seed=5)
    ro = ep.rollout
    assert ep.turns >= 2 and ep.stop in ("answer", "length", "eod", "bad_tool_call", "max_turns")
    seq = ro.prompt_ids + ro.token_ids
    mask = torch.zeros(1, len(seq), dtype=torch.long)
    for i, s in enumerate(ro.sampled):
        if s:
            mask[0, len(ro.prompt_ids) + i - 1] = 1
    with torch.no_grad():
        lp, _ = token_logprobs(model, torch.tensor([seq]), mask)
    trainer = lp[0][mask[0].bool()]
    engine = torch.tensor([x for x, s in zip(ro.logprobs, ro.sampled, strict=True) if s])
    assert torch.allclose(trainer, engine, atol=1e-4), (trainer - engine).abs().max()


def test_sampled_episodes_invariants(model):
    env = Calculator()
    eng = RolloutEngine(model)
    eps = run_episodes(eng, [ASK, ASK, [{"role": "user", "content": "Weather? /no_think"}]], [Calculator() for _ in range(3)],
                       PARAMS, max_turns=2, seed=3)
    alone = run_episode(eng, ASK, env, PARAMS, max_turns=2, seed=3)
    assert eps[0].rollout.token_ids == alone.rollout.token_ids          # batching does not change an episode
    assert eps[0].rollout.token_ids != eps[1].rollout.token_ids          # each episode its own seed
    for ep in eps:
        ro = ep.rollout
        assert ro.prompt_ids == encode(render_chat(ep.messages[:ep.prompt_len], add_generation_prompt=True, tools=env.tools))
        assert len(ro.token_ids) == len(ro.logprobs) == len(ro.sampled) > 0
        assert ep.turns >= 1 and ep.stop in ("answer", "length", "eod", "bad_tool_call", "max_turns")
        if ep.turns == 1:
            assert all(ro.sampled) and len(ro.token_ids) <= PARAMS.max_tokens
        assert ep.messages[-1]["role"] == "assistant"
