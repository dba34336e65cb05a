"""Chat SFT data: the loss mask is exactly what the model writes after the generation prompt."""

import json

import pytest

from q3.config import ConfigError
from q3.tokenizer import END_THINK_ID, IM_END_ID, THINK_ID, decode, encode, render_chat
from train.post.chat import (
    THINKING_BUDGET_TEXT,
    ChatDataError,
    ChatSample,
    read_chat_jsonl,
    show_mask,
    tokenize_conversation,
)

TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}]


def u(text):
    return {"role": "user", "content": text}


def a(answer, reasoning=None, **kw):
    content = answer if reasoning is None else f"<think>\n{reasoning}\n</think>\n\n{answer}"
    return {"role": "assistant", "content": content, **kw}


def think_gen(reasoning, answer):
    """What the model writes after `<|im_start|>assistant\\n` in thinking mode."""
    return f"<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>"


def trained(sample: ChatSample) -> list[list[int]]:
    """The runs of trained ids."""
    runs, cur = [], None
    for i, m in zip(sample.ids, sample.loss_mask, strict=True):
        if m and cur is None:
            cur = []
            runs.append(cur)
        if m:
            cur.append(i)
        else:
            cur = None
    return runs


def check_turn(sample: ChatSample, prefix: list[dict], generation: str, tools=None, enable_thinking=True):
    """The sample = encode(prompt) + encode(generation) with the mask on exactly the generation."""
    prompt = encode(render_chat(prefix, enable_thinking=enable_thinking, add_generation_prompt=True, tools=tools))
    gen = encode(generation)
    assert sample.ids == prompt + gen
    assert sample.loss_mask == [0] * len(prompt) + [1] * len(gen)
    header = "<|im_start|>assistant\n" + ("" if enable_thinking else "<think>\n\n</think>\n\n")
    assert sample.ids[-1] == IM_END_ID and decode(prompt).endswith(header)


def test_render_chat_matches_transformers():
    from transformers import AutoTokenizer

    from q3.tokenizer import tokenizer_dir

    ref = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    convs = [
        ([{"role": "system", "content": "Be brief."}, u("2+2? /no_think"), a("4", ""), u("3+3?"), a("6", "add")], None),
        ([u("add 2 3"), {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
          {"role": "tool", "content": "5"}, a("5", "the tool said 5")], TOOLS),
        ([u("é ü 漢字 \"q\""), {"role": "assistant", "content": "x", "reasoning_content": "r"}], TOOLS),
    ]
    for msgs, tools in convs:
        for thinking in (True, False):
            for gen in (True, False):
                ours = render_chat(msgs, enable_thinking=thinking, add_generation_prompt=gen, tools=tools)
                theirs = ref.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=gen,
                                                 enable_thinking=thinking)
                assert ours == theirs


def test_single_turn_thinking():
    msgs = [u("What is 2+2?"), a("It is 4.", "2 plus 2 is 4.")]
    [s] = tokenize_conversation(msgs)
    check_turn(s, msgs[:1], think_gen("2 plus 2 is 4.", "It is 4."))
    [run] = trained(s)
    assert run[0] == THINK_ID and END_THINK_ID in run and run[-1] == IM_END_ID
    # the header is context, the trailing newline after <|im_end|> is not part of the sample
    assert show_mask(s).endswith("<|im_start|>assistant\n[[<think>\n2 plus 2 is 4.\n</think>\n\nIt is 4.<|im_end|>]]")
    # reasoning_content instead of an inline think block renders the same
    [s2] = tokenize_conversation([msgs[0], {"role": "assistant", "content": "It is 4.",
                                            "reasoning_content": "2 plus 2 is 4."}])
    assert (s2.ids, s2.loss_mask) == (s.ids, s.loss_mask)


@pytest.mark.parametrize("where", ["user", "system"])
def test_no_think_flag_model_writes_empty_think_block(where):
    msgs = ([u("Capital of France? /no_think")] if where == "user"
            else [{"role": "system", "content": "You are helpful. /no_think"}, u("Capital of France?")])
    msgs.append(a("Paris."))
    [s] = tokenize_conversation(msgs)
    check_turn(s, msgs[:-1], "<think>\n\n</think>\n\nParis.<|im_end|>")   # soft switch: the model writes it
    assert trained(s)[0][:2] == encode("<think>\n\n</think>\n\n")[:2]


def test_multi_turn_flags_each_turn_as_at_inference():
    msgs = [{"role": "system", "content": "Be exact. /no_think"}, u("1+1?"), a("2", ""),
            u("Why? /think"), a("Because counting.", "Explain addition."),
            u("And 2+2?"), a("4", "Still thinking mode."),
            u("Thanks /no_think"), a("You're welcome.", "")]
    samples = tokenize_conversation(msgs)
    # reasoning is stripped from history before the last query, so every turn is its own sample
    assert [s.turns for s in samples] == [[2], [4], [6], [8]]
    gens = {2: "<think>\n\n</think>\n\n2<|im_end|>", 4: think_gen("Explain addition.", "Because counting."),
            6: think_gen("Still thinking mode.", "4"), 8: "<think>\n\n</think>\n\nYou're welcome.<|im_end|>"}
    for s in samples:
        j = s.turns[0]
        check_turn(s, msgs[:j], gens[j])
    # the history of turn 8 carries answers only (the template drops earlier reasoning)
    assert "Explain addition." not in decode(samples[-1].ids)
    last = tokenize_conversation(msgs, train_turns="last")
    assert len(last) == 1 and last[0].ids == samples[-1].ids and last[0].loss_mask == samples[-1].loss_mask
    ctx = [dict(m, train=False) if m["role"] == "assistant" else m for m in msgs[:-1]] + msgs[-1:]
    assert [s.turns for s in tokenize_conversation(ctx)] == [[8]]


def test_tools_calls_and_responses():
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
    msgs = [u("What is 2+3? Use the tool."),
            {"role": "assistant", "content": "", "reasoning_content": "Call add.", "tool_calls": [call]},
            {"role": "tool", "content": "5"},
            a("2+3 = 5.", "The tool returned 5.")]
    samples = tokenize_conversation(msgs, tools=TOOLS)
    call_text = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    # the tool-call turn renders unchanged in the longer prefix: one sample trains both turns
    assert [s.turns for s in samples] == [[1, 3]]
    s = samples[0]
    runs = trained(s)
    assert [decode(r) for r in runs] == [f"<think>\nCall add.\n</think>\n\n{call_text}<|im_end|>",
                                         "<think>\nThe tool returned 5.\n</think>\n\n2+3 = 5.<|im_end|>"]
    # each trained run starts right after its own generation prompt's tokens
    for j, r in zip((1, 3), runs, strict=True):
        prompt = encode(render_chat(msgs[:j], add_generation_prompt=True, tools=TOOLS))
        assert s.ids[:len(prompt)] == prompt and s.ids[len(prompt):len(prompt) + len(r)] == r
    assert "<tool_response>\n5\n</tool_response>" in decode(s.ids)
    assert "# Tools" in decode(s.ids)
    # without reasoning the call turn renders with no think block as history: two samples
    msgs[1].pop("reasoning_content")
    samples = tokenize_conversation(msgs, tools=TOOLS)
    assert [s.turns for s in samples] == [[1], [3]]
    check_turn(samples[0], msgs[:1], f"<think>\n\n</think>\n\n{call_text}<|im_end|>", tools=TOOLS)


def test_budget_turn_masks_out_the_stop_sentence():
    msgs = [u("Hard question"), {"role": "assistant", "budget_forced": True,
                                  "reasoning_content": "First I try x, then", "content": "The answer is 7."}]
    [s] = tokenize_conversation(msgs)
    prompt = encode(render_chat(msgs[:1], add_generation_prompt=True))
    think, stop, answer = encode("<think>\nFirst I try x, then"), encode(THINKING_BUDGET_TEXT), \
        encode("The answer is 7.<|im_end|>")
    assert s.ids == prompt + think + stop + answer                 # stop sentence tokenised alone, as the sampler does
    assert s.loss_mask == [0] * len(prompt) + [1] * len(think) + [0] * len(stop) + [1] * len(answer)
    assert [decode(r) for r in trained(s)] == ["<think>\nFirst I try x, then", "The answer is 7.<|im_end|>"]
    with pytest.raises(ChatDataError, match="enable_thinking"):
        tokenize_conversation(msgs, enable_thinking=False)


def test_hard_switch_prompt_carries_the_empty_think_block():
    msgs = [u("hi"), a("Hello!")]
    [s] = tokenize_conversation(msgs, enable_thinking=False)
    check_turn(s, msgs[:1], "Hello!<|im_end|>", enable_thinking=False)
    with pytest.raises(ChatDataError, match="enable_thinking=False"):
        tokenize_conversation([u("hi"), a("Hello!", "greet")], enable_thinking=False)


def test_bpe_seam_keeps_the_inference_tokenisation():
    # no user query -> no think block; an answer starting with newlines would merge with the
    # header's "\n" if the whole text were tokenised at once
    msgs = [{"role": "system", "content": "s"}, a("\n\nhello")]
    prompt_text = render_chat(msgs[:1], add_generation_prompt=True)
    gen = "\n\nhello<|im_end|>"
    assert encode(prompt_text + gen) != encode(prompt_text) + encode(gen)      # BPE merges across the seam
    [s] = tokenize_conversation(msgs)
    check_turn(s, msgs[:1], gen)
    assert decode(s.ids) == render_chat(msgs)[:-1]


def test_seam_is_safe_for_every_template_rendering():
    """With a think block (every trained turn after a user query) the response starts with a
    special token, so whole-text tokenisation agrees with prompt + response."""
    for msgs in ([u("q"), a(" leading space")], [u("q /no_think"), a("\n\nx")], [u("q"), a("y", " r ")]):
        [s] = tokenize_conversation(msgs)
        assert s.ids == encode(render_chat(msgs)[:-1])


def test_bad_conversations_are_one_line_errors():
    for msgs, match in [([], "non-empty"), ([u("hi")], "no assistant"), ([{"role": "bot", "content": "x"}], "role"),
                        ([u("hi"), {"role": "assistant", "content": [{"type": "text"}]}], "string"),
                        ([u("hi"), {"role": "assistant", "content": None}], "neither"),
                        ([u("hi"), {"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}], "name")]:
        with pytest.raises(ChatDataError, match=match):
            tokenize_conversation(msgs)
    with pytest.raises(ChatDataError, match="train_turns"):
        tokenize_conversation([u("hi"), a("x")], train_turns="first")
    assert issubclass(ChatDataError, ConfigError)


def test_read_chat_jsonl(tmp_path):
    from synth.coldstart import to_sft

    good = {**to_sft({"query": "2+2?"}, "<think>\nadd\n</think>\n\n4"), "id": "q0-c0", "domain": "math"}
    rows = [json.dumps(good), "", json.dumps({"messages": [u("hi"), a("yo")], "tools": TOOLS}),
            "{not json", json.dumps({"text": "x"}), json.dumps({"messages": [u("hi")]})]
    p = tmp_path / "chat.jsonl"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(ChatDataError, match=rf"{p}:4: not valid JSON"):
        read_chat_jsonl(p)
    stats = {}
    out = read_chat_jsonl(p, on_error="skip", stats=stats)
    assert stats["rows"] == 5 and stats["skipped"] == 3
    assert [e.split(": ", 1)[0] for e in stats["errors"]] == [f"{p}:4", f"{p}:5", f"{p}:6"]
    assert "no assistant turn" in stats["errors"][2]
    assert [r["source"] for r in out] == [f"{p}:1", f"{p}:3"]
    assert out[0]["meta"] == {"id": "q0-c0", "domain": "math"} and out[1]["tools"] == TOOLS
    [s] = tokenize_conversation(out[0]["messages"])
    check_turn(s, out[0]["messages"][:1], think_gen("add", "4"))
    with pytest.raises(ChatDataError, match="not found"):
        read_chat_jsonl(tmp_path / "missing.jsonl")


def test_tokenize_rows_and_undecodable_lines(tmp_path):
    from train.post.chat import tokenize_rows

    p = tmp_path / "mixed.jsonl"
    good = json.dumps({"messages": [u("hi"), a("yo", "r")]}).encode()
    plain = json.dumps({"messages": [u("hey"), a("ok")]}).encode()
    p.write_bytes(good + b"\n" + b'{"messages": "\xff"}\n' + plain + b"\n")
    with pytest.raises(ChatDataError, match=rf"{p}:2: not UTF-8"):
        read_chat_jsonl(p)
    rows = read_chat_jsonl(p, on_error="skip")
    assert len(rows) == 2
    # hard switch: a row with reasoning cannot be rendered; it is named, or skipped and counted
    with pytest.raises(ChatDataError, match=rf"{p}:1: message 1"):
        tokenize_rows(rows, enable_thinking=False)
    stats = {}
    [s] = tokenize_rows(rows, enable_thinking=False, on_error="skip", stats=stats)
    assert stats["skipped"] == 1 and stats["rows"] == 2 and s.source == f"{p}:3"
    check_turn(s, [u("hey")], "ok<|im_end|>", enable_thinking=False)
    assert [s.source for s in tokenize_rows(rows)] == [f"{p}:1", f"{p}:3"]
