"""Thinking-mode fusion data: ratios, determinism, flags (last wins), budget samples."""

import json
import re

import pytest

from q3.config import ConfigError, validate
from q3.tokenizer import THINK_ID, decode, encode
from synth.coldstart import to_sft
from train.generate import thinking_mode
from train.post.chat import THINKING_BUDGET_TEXT, read_chat_jsonl, tokenize_conversation
from train.post.fusion import FusionConfig, budget_cut, build_fusion, write_fusion
from train.sampling import ThinkingBudget

WORDS = ["first", "we", "compute", "the", "sum", "then", "check", "each", "digit", "carefully", "and", "verify", "the", "result", "twice"]


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """Cold-start SFT rows as synth writes them, plus rows fusion must skip."""
    p = tmp_path_factory.mktemp("fusion") / "sft.jsonl"
    rows = []
    for i in range(400):
        think = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 40))
        query = f"What is {i} + {i}?" + (" /no_think" if i % 50 == 0 else "")    # stale flags are stripped
        rows.append({**to_sft({"query": query}, f"<think>\n{think}\n</think>\n\nIt is {2 * i}."), "id": f"q{i}"})
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    rows.append({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                              {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def cfg(cold, tmp_path, **kw):
    return FusionConfig(inputs=[str(cold)], output=str(tmp_path / "fusion.jsonl"), budget_tokens=[8, 24], **kw)


def test_ratios_and_stats(cold, tmp_path):
    c = cfg(cold, tmp_path, no_think=0.4, budget=0.25, multi_turn=0.2, system_flag=0.3)
    stats = write_fusion(c)
    rows = [json.loads(x) for x in (tmp_path / "fusion.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "fusion.jsonl.stats.json").read_text()) == stats
    assert stats["used"] == 400 and stats["skipped"]["no_reasoning"] == 1 and stats["skipped"]["not_single_turn"] == 1
    kinds = stats["kinds"]
    assert sum(kinds.values()) == len(rows) == stats["rows"]
    assert abs(kinds["multi_turn"] / len(rows) - 0.2) < 0.08
    turns = stats["turns"]
    assert abs(turns["no_think"] / sum(turns.values()) - 0.4) < 0.08
    single_thinking = kinds["think"] + kinds["budget"]
    assert abs(kinds["budget"] / single_thinking - 0.25) < 0.1       # short reasonings fall back to think
    flags = stats["flags"]
    assert flags["user:none"] > 0 and flags["user:think"] > 0 and flags["system:no_think"] > 0
    # unflagged single-turn samples answer with thinking (the default mode)
    unflagged = [r for r in rows if r["meta"]["kind"] != "multi_turn" and r["meta"]["flags"] == ["user:none"]]
    assert unflagged and all(r["meta"]["thinking"] == [True] for r in unflagged)
    # stale flags in the sources are stripped: the only flags are the ones meta records
    for r in rows:
        text = " ".join(m["content"] for m in r["messages"] if m["role"] in ("user", "system"))
        recorded = [f.split(":")[1] for f in r["meta"]["flags"] if not f.endswith(":none")]
        assert re.findall(r"/(no_think|think)\b", text) == recorded


def test_deterministic_for_a_seed(cold, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_fusion(cfg(cold, tmp_path / "a", seed=3))
    write_fusion(cfg(cold, tmp_path / "b", seed=3))
    a, b = (tmp_path / "a" / "fusion.jsonl").read_bytes(), (tmp_path / "b" / "fusion.jsonl").read_bytes()
    assert a == b
    write_fusion(cfg(cold, tmp_path / "b", seed=4))
    assert (tmp_path / "b" / "fusion.jsonl").read_bytes() != a


def test_every_answer_follows_the_last_flag(cold, tmp_path):
    c = cfg(cold, tmp_path, multi_turn=0.5, max_turns=4, budget=0.3)
    write_fusion(c)
    rows = read_chat_jsonl(c.output)
    seen = set()
    for r in rows:
        msgs, meta = r["messages"], r["meta"]
        samples = tokenize_conversation(msgs)
        assistant = [j for j, m in enumerate(msgs) if m["role"] == "assistant"]
        assert sorted(j for s in samples for j in s.turns) == assistant
        for s in samples:
            [j] = s.turns                                       # no shared samples: reasoning leaves the history
            mode = meta["thinking"][assistant.index(j)]
            assert thinking_mode(msgs[:j]) is mode              # the inference rule (train.generate)
            trained = decode([i for i, m in zip(s.ids, s.loss_mask, strict=True) if m])
            seen.add((meta["kind"], mode))
            if msgs[j].get("budget_forced"):
                assert trained.startswith("<think>\n") and THINKING_BUDGET_TEXT not in trained
                assert decode(s.ids).count(THINKING_BUDGET_TEXT) == 1
            elif mode:
                assert trained.startswith("<think>\n") and trained != "<think>\n\n</think>\n\n" + msgs[j]["content"] \
                    + "<|im_end|>"
            else:
                assert trained == "<think>\n\n</think>\n\n" + msgs[j]["content"] + "<|im_end|>"
            assert trained.endswith(msgs[j]["content"] + "<|im_end|>")
        if meta["kind"] == "multi_turn":
            assert len(assistant) >= 2
    assert {("think", True), ("no_think", False), ("budget", True), ("multi_turn", True),
            ("multi_turn", False)} <= seen


def test_budget_samples_match_the_sampler(cold, tmp_path):
    out, _ = build_fusion(read_chat_jsonl(cold, on_error="skip"), cfg(cold, tmp_path, budget=1.0, multi_turn=0,
                                                                       no_think=0))
    budget = [r for r in out if r["meta"]["kind"] == "budget"]
    assert len(budget) > 100
    for r in budget[:40]:
        k = r["meta"]["thinking_budget"]
        assert 2 <= k <= 24                                      # a stable cut at or below the budget
        [s] = tokenize_conversation(r["messages"])
        start = s.ids.index(THINK_ID)
        stop = encode(THINKING_BUDGET_TEXT)
        think = s.ids[start:start + 1 + k]
        assert s.ids[start + 1 + k:start + 1 + k + len(stop)] == stop
        assert s.loss_mask[start:start + 1 + k] == [1] * (k + 1)
        assert s.loss_mask[start + 1 + k:start + 1 + k + len(stop)] == [0] * len(stop)
        assert set(s.loss_mask[start + 1 + k + len(stop):]) == {1}          # the answer is trained
        # the sampler would force the stop sentence exactly here with thinking_budget=k
        b = ThinkingBudget(k, in_think=False)
        for j, t in enumerate(think):
            assert not b.exhausted(), j
            b.observe(t)
        assert b.exhausted()


def test_budget_cut():
    reasoning = "alpha beta gamma delta epsilon zeta eta theta"
    text, n = budget_cut(reasoning, 4)
    assert n <= 4 and encode("\n" + text) == encode("\n" + reasoning)[:n] and reasoning.startswith(text)
    assert budget_cut("short", 50) is None
    # a cut that would split a multi-byte character moves back to a stable boundary
    text, n = budget_cut("漢字漢字漢字漢字漢字漢字", 5)
    assert "\ufffd" not in text and encode("\n" + text) == encode("\n漢字漢字漢字漢字漢字漢字")[:n]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="budget_tokens"):
        validate(FusionConfig, {"budget_tokens": [1]})
    with pytest.raises(ConfigError, match="no_think"):
        validate(FusionConfig, {"no_think": 1.5})
    with pytest.raises(ConfigError, match="inputs"):
        write_fusion(FusionConfig())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    with pytest.raises(ConfigError, match=rf"{bad}:1"):
        write_fusion(FusionConfig(inputs=[str(bad)], output=str(tmp_path / "o.jsonl")))
