"""Rule-based rewards behind the one interface: verifier (real synth pairs), format, instruction,
length, mix, the per-task YAML config and its errors."""

from __future__ import annotations

import json
import time

import pytest

from q3.config import ConfigError
from train.post.rewards import REWARDS, RewardInput, TaskRewards, build_reward

THINK = "<think>\nLet me add them.\n</think>\n\n"
EMPTY = "<think>\n\n</think>\n\n"


def item(reply: str, meta: dict | None = None, user: str = "Hi", finish: str = "stop") -> RewardInput:
    return RewardInput([{"role": "user", "content": user}], reply, meta or {}, finish)


def scores(reward, items):
    return [r.score for r in reward.score(items)]


def test_registry_names_every_type():
    assert set(REWARDS) >= {"verifier", "format", "instruction", "length", "judge", "reward_model", "tool_use", "mix"}


def test_verifier_on_real_pairs_accepts_references_and_rejects_perturbed(tmp_path):
    from synth.generators import VerifiableConfig, write_pairs

    out = write_pairs(VerifiableConfig(n=24, seed=3, domains={"math": 0.5, "logic": 0.25, "code": 0.25},
                                       out=str(tmp_path), workers=1))
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert {r["verifier_type"] for r in rows} >= {"math", "logic", "code"}
    r = build_reward({"type": "verifier", "workers": 4})
    good = r.score([item(x["reference"], x) for x in rows])
    bad = r.score([item(x["perturbed"], x) for x in rows])
    assert [g.score for g in good] == [1.0] * len(rows), [g.details for g in good if g.score < 1]
    assert all(b.score < 1.0 for b in bad)
    assert all(b.details["reason"] != "ok" for b in bad)
    assert r.score([item("x", {})])[0].details["reason"] == "no_verifier"


def test_verifier_runs_code_items_concurrently():
    slow = {"verifier_type": "code", "verifier_data": {"entry_point": "f", "tests": [{"input": [], "output": 1}]}}
    reply = "```python\nimport time\ndef f():\n    time.sleep(0.6)\n    return 1\n```"
    r = build_reward({"type": "verifier", "workers": 6})
    t = time.perf_counter()
    res = r.score([item(reply, slow) for _ in range(6)])
    wall = time.perf_counter() - t
    assert [x.score for x in res] == [1.0] * 6
    assert wall < 6 * 0.6, f"6 sandboxed items took {wall:.1f}s: not concurrent"


@pytest.mark.parametrize("reply,user,meta,want", [
    (THINK + "4", "2+2?", {}, "ok"),                          # thinking by default
    ("4", "2+2?", {}, "no_think_block"),
    (EMPTY + "4", "2+2?", {}, "empty_thinking"),
    (THINK + "a" + THINK + "4", "2+2?", {}, "bad_think_tags"),
    (THINK, "2+2?", {}, "no_answer"),
    (EMPTY + "4", "2+2? /no_think", {}, "ok"),               # soft switch: the model writes the empty block
    ("4", "2+2? /no_think", {}, "missing_empty_think_block"),
    (THINK + "4", "2+2? /no_think", {}, "non_empty_think_in_no_think"),
    (THINK + "4", "/no_think 2+2? /think", {}, "ok"),         # the last flag wins
    ("4", "2+2?", {"enable_thinking": False}, "ok"),          # hard switch: the prompt holds the empty block
    (EMPTY + "4", "2+2?", {"enable_thinking": False}, "think_tags_in_no_think"),
    (EMPTY + "4", "2+2? /think", {"thinking": False}, "ok"),  # meta wins over the flags
])
def test_format_follows_the_mode(reply, user, meta, want):
    res = build_reward({"type": "format"}).score([item(reply, meta, user)])[0]
    assert res.details["reason"] == want
    assert res.score == (1.0 if want == "ok" else 0.0)


def test_format_options_and_overlong_penalty():
    assert scores(build_reward({"type": "format", "empty_block": "allowed"}), [item("4", user="/no_think")]) == [1.0]
    r = build_reward({"type": "format", "overlong_penalty": 0.5})
    assert scores(r, [item(THINK + "4", finish="length"), item("<think>\nand so", finish="length")]) == [0.5, -0.5]
    assert r.score([item(THINK + "4", finish="cancelled")])[0].details["reason"] == "cancelled"


def test_instruction_constraints_on_the_answer_only():
    cons = [{"type": "word_count", "min": 3, "max": 8}, {"type": "include_keywords", "keywords": ["Ocean"]},
            {"type": "exclude_keywords", "keywords": ["forest"]}, {"type": "ends_with", "suffix": "!"},
            {"type": "lowercase"}, {"type": "sentence_count", "max": 1}, {"type": "no_commas"}]
    r = build_reward({"type": "instruction"})
    good = item("<think>\nforest, FOREST, many words here to go over the limit\n</think>\n\nthe ocean is deep!",
                {"constraints": cons})
    res = r.score([good])[0]
    assert res.score == 1.0 and res.details["satisfied"] == "7/7"      # the thinking's words are not checked
    bad = item("The ocean, the forest. Two sentences!", {"constraints": cons})
    res = r.score([bad])[0]
    assert res.details["satisfied"] == "3/7" and res.score == pytest.approx(3 / 7)
    assert set(res.details["failed"]) == {"2:exclude_keywords", "4:lowercase", "5:sentence_count", "6:no_commas"}
    strict = build_reward({"type": "instruction", "all_or_nothing": True})
    assert scores(strict, [bad, good]) == [0.0, 1.0]


def test_instruction_json_language_and_bad_constraints():
    r = build_reward({"type": "instruction"})
    js = {"constraints": [{"type": "json", "required_keys": ["name", "age"]}]}
    assert scores(r, [item('```json\n{"name": "Ada", "age": 36}\n```', js), item('{"name": "Ada"}', js),
                      item("name: Ada", js)]) == [1.0, 0.0, 0.0]
    fr = {"constraints": [{"type": "language", "lang": "fr"}]}
    assert scores(r, [item("Le chat dort sur le canapé depuis ce matin.", fr),
                      item("The cat has been sleeping on the sofa all morning.", fr)]) == [1.0, 0.0]
    assert r.score([item("Le chat dort sur le canapé.", {"constraints": [{"type": "language", "lang": "fra"}]})])[0].score == 1.0
    res = r.score([item("x", {"constraints": [{"type": "rhymes"}, {"type": "word_count"}]})])[0]
    assert res.score == 0.0 and "unknown constraint" in res.details["failed"]["0:rhymes"]
    assert "bad constraint arguments" in res.details["failed"]["1:word_count"]
    assert r.score([item("x", {})])[0].details["reason"] == "no_constraints"


def test_length_linear_penalty_and_target():
    r = build_reward({"type": "length", "unit": "words", "max": 10, "window": 10})
    res = r.score([item(THINK + " ".join(["w"] * n)) for n in (5, 10, 15, 25)])
    assert [x.score for x in res] == [1.0, 1.0, 0.5, 0.0]
    assert res[2].details == {"reason": "over_limit", "length": 15, "limit": 10, "excess": 5}
    assert r.score([item("w", finish="length")])[0].details["reason"] == "truncated"
    per_row = r.score([item("a b c d", {"max_length": 2})])[0]
    assert per_row.details["limit"] == 2 and per_row.score == pytest.approx(0.8)
    assert r.score([item("a", {"max_length": "lots"})])[0].details["reason"] == "bad_length_meta"
    tok = build_reward({"type": "length", "unit": "tokens", "target": 3, "window": 3, "scope": "reply"})
    assert scores(tok, [item("one two three"), item("one")]) == [1.0, pytest.approx(1 - 2 / 3)]


def test_mix_weighted_sum_with_details():
    r = build_reward({"type": "mix", "components": [{"type": "format", "weight": 0.25},
                                                   {"type": "instruction", "weight": 1.0},
                                                   {"type": "instruction", "weight": 0.5, "all_or_nothing": True}]})
    meta = {"constraints": [{"type": "include_keywords", "keywords": ["x"]}, {"type": "uppercase"}]}
    res = r.score([item(THINK + "x marks", meta)])[0]
    assert res.score == pytest.approx(0.25 * 1 + 1.0 * 0.5 + 0.5 * 0)
    assert res.details["format"] == 1.0 and res.details["instruction"] == 0.5 and res.details["instruction_2"] == 0.0
    assert res.details["reasons"] == {"format": "ok", "instruction": "unmet", "instruction_2": "unmet"}
    json.dumps(res.details)                                     # JSON-able for metrics


def test_task_rewards_route_by_task():
    tr = TaskRewards.from_config({
        "tasks": {"math": {"rewards": [{"type": "verifier"}, {"type": "format", "weight": 0.1}]},
                  "if": {"rewards": [{"type": "instruction"}]},
                  "off": {"enabled": False, "rewards": [{"type": "instruction"}]}},
        "default": [{"type": "format"}]})
    math = {"task": "math", "verifier_type": "math", "verifier_data": {"answer": "4"}}
    res = tr.score([item(THINK + "\\boxed{4}", math),
                    item("nope", {"task": "if", "constraints": [{"type": "lowercase"}]}),
                    item(THINK + "hi"), item(THINK + "\\boxed{5}", math)])
    assert [r.score for r in res] == [pytest.approx(1.1), 1.0, 1.0, pytest.approx(0.1)]
    assert [r.details["task"] for r in res] == ["math", "if", "default", "math"]
    with pytest.raises(ConfigError, match="task 'off' has no reward mix; configured tasks: if, math"):
        tr.score([item("x", {"task": "off"})])


@pytest.mark.parametrize("cfg,msg", [
    ({"tasks": {"a": {"rewards": [{"type": "fromat"}]}}}, "tasks.a: unknown reward type 'fromat'; known types: "),
    ({"tasks": {"a": {"rewards": [{"type": "format", "weight": -1}]}}}, "weight: Input should be greater than or equal to 0"),
    ({"tasks": {"a": {"rewards": [{"type": "format", "weight": "heavy"}]}}}, "weight: Input should be a valid number"),
    ({"tasks": {"a": {"rewards": [{"type": "format", "weight": float("inf")}]}}}, "weight: Input should be a finite number"),
    ({"tasks": {"a": {"rewards": [{"type": "format", "weight": 0}]}}}, "tasks.a: the reward weights sum to 0.0"),
    ({"tasks": {"a": {"rewards": [{"type": "format", "empty_blok": "allowed"}]}}}, "unknown key 'empty_blok' (did you mean 'empty_block'?)"),
    ({"tasks": {"a": {"rewards": []}}}, "tasks.a.rewards: List should have at least 1 item"),
    ({"tasks": {"a": {"reward": [{"type": "format"}]}}}, "unknown key 'tasks.a.reward'"),
    ({"tasks": {"a": {"rewards": [{"type": "length", "max": 3, "target": 2}]}}}, "set max or target, not both"),
])
def test_config_errors_are_one_clear_line(cfg, msg):
    with pytest.raises(ConfigError) as e:
        TaskRewards.from_config(cfg)
    assert msg in str(e.value)
    assert "Traceback" not in str(e.value)


def test_rl_tasks_yaml_loads_and_scores_generated_rows():
    from train.post.rewards.if_tasks import instruction_rows, task_rows, tool_rows
    from train.post.rewards.instruction import check_constraint

    tr = TaskRewards.load("rl_tasks")
    assert set(tr.mixes) == {"math", "logic_code", "instruction", "format", "tool_use"}   # judged_qa is off
    with pytest.raises(ConfigError, match="no judge endpoint"):
        TaskRewards.load("rl_tasks", ["tasks.judged_qa.enabled=true"])
    rows = instruction_rows(64, seed=7)
    assert rows == instruction_rows(64, seed=7) and rows != instruction_rows(64, seed=8)   # deterministic
    assert {r["thinking"] for r in rows} == {True, False}
    assert all(("/no_think" in r["messages"][0]["content"]) != r["thinking"] for r in rows)
    kinds = {c["type"] for r in rows for c in r["constraints"]}
    assert len(kinds) >= 8
    for r in rows:                                         # well-formed: no unknown types or bad arguments
        for c in r["constraints"]:
            ok, why = check_constraint("some answer text.", c)
            assert "unknown" not in why and "bad constraint" not in why, (c, why)
    res = tr.score([item("<think>\nok\n</think>\n\nx", r) for r in rows[:8]])
    assert all(r.details["task"] == "instruction" and "instruction" in r.details for r in res)
    tools = tool_rows(6, seed=1)
    assert {t["expected_tool"] for t in tool_rows(40)} == {"calculator", "get_weather"}
    assert task_rows("tool_use", {"source": "tool_tasks", "n": 6, "seed": 1}) == tools
    with pytest.raises(ConfigError, match="RL pairs file not found"):
        task_rows("math", {"source": "pairs", "path": "/nonexistent.jsonl"})
