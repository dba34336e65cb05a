"""The two-digit addition task of the distillation bench (train.post.toy): well-formed rows, right
scratchpads, a disjoint held-out split, rows the chat pipeline renders and trains as intended."""

from __future__ import annotations

import json
import re

from q3.tokenizer import decode, render_chat
from synth.verifiers import verify_item
from train.post.chat import read_chat_jsonl, tokenize_rows
from train.post.toy import scratchpad, two_digit_addition

STEP = re.compile(r"^(\d\d)\+(\d\d): (\d)\+(\d)=(\d+), write (\d) carry ([01])\. (\d)\+(\d)\+([01])=(\d+)\.$")


def operands(query: str) -> tuple[int, int]:
    a, b = map(int, re.findall(r"\d+", query))
    return a, b


def test_scratchpad_arithmetic_is_right_for_every_sum():
    for a in range(10, 100):
        for b in range(10, 100):
            m = STEP.match(scratchpad(a, b))
            assert m, scratchpad(a, b)
            aa, bb, a0, b0, ones, digit, carry, a1, b1, c, tens = map(int, m.groups())
            assert (aa, bb) == (a, b)
            assert (a0, b0, a1, b1) == (a % 10, b % 10, a // 10, b // 10)
            assert ones == a0 + b0 and digit == ones % 10 and carry == ones // 10 == c
            assert tens == a1 + b1 + carry and int(f"{tens}{digit}") == a + b


def test_split_is_disjoint_and_rows_cover_both_modes(tmp_path):
    prompts, held, rows = two_digit_addition(seed=3, n_prompts=300, n_held=150, unflagged=0.25)
    assert (len(prompts), len(held)) == (300, 150)
    assert len(rows) == 2 * (90 * 90 - 150)                 # every non-held sum, in both modes
    held_ab = {operands(it["query"]) for it in held}
    assert len(held_ab) == 150
    assert held_ab.isdisjoint(operands(it["query"]) for it in prompts)
    assert held_ab.isdisjoint((r["a"], r["b"]) for r in rows)
    assert {operands(it["query"]) for it in prompts} <= {(r["a"], r["b"]) for r in rows}
    # the same seed gives the same task; another seed another split
    assert two_digit_addition(seed=3, n_prompts=300, n_held=150)[1] == held
    assert two_digit_addition(seed=4, n_prompts=300, n_held=150)[1] != held

    modes = {"think": 0, "no_think": 0}
    unflagged = 0
    for r in rows:
        user, reply = r["messages"]
        assert operands(user["content"]) == (r["a"], r["b"]) and reply["content"] == str(r["a"] + r["b"])
        modes[r["mode"]] += 1
        if r["mode"] == "no_think":
            assert user["content"].endswith(" /no_think") and reply["reasoning_content"] == ""
        else:
            assert reply["reasoning_content"] == scratchpad(r["a"], r["b"])
            unflagged += not user["content"].endswith(" /think")
    assert modes["think"] == modes["no_think"] == len(rows) // 2
    assert 0.2 < unflagged / modes["think"] < 0.3

    # RL pairs: the exact verifier takes the reference, rejects the perturbed answer, and judges the
    # text after the think block (a scratchpad full of digits must not confuse it)
    for it in prompts[:50] + held[:50]:
        a, b = operands(it["query"])
        assert verify_item(it["reference"], it).passed and not verify_item(it["perturbed"], it).passed
        assert verify_item(f"<think>\n{scratchpad(a, b)}\n</think>\n\n{a + b}", it).passed
        assert not verify_item(f"<think>\n{scratchpad(a, b)}\n</think>\n\n{a + b + 1}", it).passed

    # the rows go through the chat pipeline: JSONL in, one sample per row, loss on the reply only
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:40]))
    back = read_chat_jsonl(path)
    samples = tokenize_rows(back, "all", on_error="raise", stats={})
    assert len(samples) == 40
    for r, s in zip(rows[:40], samples, strict=True):
        text = render_chat(r["messages"])
        reply = decode([t for t, m in zip(s.ids, s.loss_mask, strict=True) if m])
        if r["mode"] == "think":
            assert f"<think>\n{scratchpad(r['a'], r['b'])}\n</think>\n\n{r['a'] + r['b']}" in text
            assert reply == f"<think>\n{scratchpad(r['a'], r['b'])}\n</think>\n\n{r['a'] + r['b']}<|im_end|>"
        else:
            assert reply == f"<think>\n\n</think>\n\n{r['a'] + r['b']}<|im_end|>"
        assert text.startswith("<|im_start|>user\n") and len(s.ids) < 64   # fits seq_length 128 with room
