"""Sampling presets, thinking budget, /think /no_think rules, constrained JSON, `q3 train generate`."""

import json

import pytest
import torch
from tiny_export import tiny_checkpoint_and_export

from train.generate import (
    MegatronLM,
    Tokenizer,
    chat,
    generate,
    generate_json,
    load_lm,
    split_thinking,
    thinking_mode,
)
from train.sampling import (
    END_THINK_ID,
    PRESETS,
    THINK_ID,
    THINKING_BUDGET_TEXT,
    SamplingParams,
    ThinkingBudget,
    candidates,
    preset_for,
    process_logits,
    sample,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, cfg, ckpt, hf, _ = tiny_checkpoint_and_export(tmp_path_factory.mktemp("gen"), "tiny_dense")
    lm, tok, _ = load_lm(hf)
    return lm, tok, model, ckpt, hf


def test_presets_are_the_reports():
    t, nt = PRESETS["thinking"], PRESETS["non_thinking"]
    assert (t.temperature, t.top_p, t.top_k, t.presence_penalty, t.max_tokens) == (0.6, 0.95, 20, 0.0, 32768)
    assert (nt.temperature, nt.top_p, nt.top_k, nt.presence_penalty, nt.max_tokens) == (0.7, 0.8, 20, 1.5, 32768)
    assert preset_for(True) is t and preset_for(False) is nt
    assert t.with_(temperature=0.1, top_p=None).top_p == 0.95


def test_sampling_filters():
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])
    idx, lp = candidates(logits, [], SamplingParams(temperature=1.0, top_p=1.0, top_k=3))
    assert idx.tolist() == [0, 1, 2] and abs(lp.exp().sum().item() - 1) < 1e-6
    # top-p: softmax([4,3,2,...]) = .64,.23,.09,... -> 0.8 keeps the first two
    idx, _ = candidates(logits, [], SamplingParams(temperature=1.0, top_p=0.8, top_k=0))
    assert idx.tolist() == [0, 1]
    # temperature sharpens: T=0.5 doubles the log-odds
    _, lp1 = candidates(logits, [], SamplingParams(temperature=1.0, top_p=1.0, top_k=2))
    _, lp05 = candidates(logits, [], SamplingParams(temperature=0.5, top_p=1.0, top_k=2))
    assert torch.allclose(lp05[0] - lp05[1], 2 * (lp1[0] - lp1[1]))
    # presence penalty 1.5 once per seen token (not per occurrence): token 0 falls below token 1
    full = process_logits(logits, [0, 0, 0], SamplingParams(temperature=1.0, top_p=1.0, top_k=0,
                                                             presence_penalty=1.5))
    assert full.argmax().item() == 1
    assert torch.allclose(full[0] - full[1], torch.tensor(-0.5))
    # greedy and constrained choice
    assert sample(logits, [], SamplingParams(temperature=0.0)) == 0
    g = torch.Generator().manual_seed(0)
    draws = {sample(logits, [], PRESETS["thinking"], g, allowed=torch.tensor([3, 5])) for _ in range(50)}
    assert draws <= {3, 5}


def test_thinking_flags_last_one_wins():
    u = lambda text: {"role": "user", "content": text}            # noqa: E731
    a = {"role": "assistant", "content": "ok"}
    assert thinking_mode([u("hello")]) is True                   # thinking is the default
    assert thinking_mode([u("hello /no_think")]) is False
    assert thinking_mode([u("x /no_think"), a, u("y /think")]) is True
    assert thinking_mode([u("x /think"), a, u("y /no_think")]) is False
    assert thinking_mode([u("x /no_think"), a, u("and now?")]) is False   # the flag persists
    assert thinking_mode([u("a /think then /no_think")]) is False
    assert thinking_mode([{"role": "system", "content": "/no_think"}, u("hi")]) is False
    assert thinking_mode([u("path /thinking/x")]) is True        # not a flag


def test_chat_template_renders_like_transformers():
    from transformers import AutoTokenizer

    tok = Tokenizer()
    ref = AutoTokenizer.from_pretrained(str(tok.dir))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2? /no_think"},
            {"role": "assistant", "content": "<think>\n\n</think>\n\n4"}, {"role": "user", "content": "3+3?"}]
    for thinking in (True, False):
        ours = tok.render(msgs, thinking)
        theirs = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
        assert ours == theirs
    assert tok.render(msgs, False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")   # empty think block
    assert tok.render(msgs, True).endswith("<|im_start|>assistant\n")
    assert tok.encode("<think></think>") == [THINK_ID, END_THINK_ID]


def test_thinking_budget_inserts_the_exact_text(tiny):
    lm, tok, *_ = tiny
    budget_ids = tok.encode(THINKING_BUDGET_TEXT)
    assert tok.decode(budget_ids) == THINKING_BUDGET_TEXT
    prompt = tok.encode(tok.render([{"role": "user", "content": "Prove it."}], True)) + [THINK_ID]
    p = PRESETS["thinking"].with_(thinking_budget=3, max_tokens=3 + len(budget_ids) + 3)
    out = generate(lm, tok, prompt, p, torch.Generator().manual_seed(0), in_think=True)
    assert out.budget_forced
    assert out.token_ids[3:3 + len(budget_ids)] == budget_ids     # after exactly 3 thinking tokens
    assert THINKING_BUDGET_TEXT in out.text
    assert len(out.token_ids) == p.max_tokens and out.finish_reason == "length"  # then it answers
    # tokens outside <think> don't count, and </think> ends the thinking
    b = ThinkingBudget(2, in_think=False)
    for t in (1, 2, 3, THINK_ID, 5):
        b.observe(t)
    assert not b.exhausted()
    b.observe(6)
    assert b.exhausted()
    b.observe(END_THINK_ID)
    assert not b.exhausted()


def test_split_thinking():
    assert split_thinking("<think>\nhmm\n</think>\n\nAnswer") == ("hmm", "Answer")
    assert split_thinking("hmm " + THINKING_BUDGET_TEXT + "42") == ("hmm Considering the limited time by the "
                                                                     "user, I have to give the solution based on "
                                                                     "the thinking directly now.", "42")
    assert split_thinking("plain") == (None, "plain")


def test_chat_n_seed_and_modes(tiny):
    lm, tok, model, *_ = tiny
    msgs = [{"role": "user", "content": "Say hi /no_think"}]
    a = chat(lm, tok, msgs, n=2, seed=5, max_tokens=4)
    b = chat(lm, tok, msgs, n=2, seed=5, max_tokens=4)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]   # seeded: reproducible
    assert a[0].token_ids != a[1].token_ids                      # n samples differ
    assert all(len(o.token_ids) <= 4 for o in a)
    assert a[0].prompt_tokens == len(tok.encode(tok.render(msgs, False)))
    # the megatron forward and the HF export give the same next-token logits
    ids = tok.encode("The quick brown fox")
    assert (MegatronLM(model).next_logits(ids) - lm.next_logits(ids)).abs().max() < 1e-4


def test_json_schema_constrained_output_parses(tiny):
    lm, tok, *_ = tiny
    schema = {"type": "object", "properties": {
        "label": {"enum": ["good", "bad", "borderline"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 5},
        "safe": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 3},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}}}
    prompt = tok.encode(tok.render([{"role": "user", "content": "Rate this."}], False))
    for seed in range(3):
        out = generate_json(lm, tok, prompt, schema, PRESETS["non_thinking"], torch.Generator().manual_seed(seed))
        obj = json.loads(out.content)
        assert list(obj) == ["label", "score", "safe", "note", "tags"]
        assert obj["label"] in ("good", "bad", "borderline") and 0 <= obj["score"] <= 5
        assert isinstance(obj["safe"], bool) and isinstance(obj["note"], str)
        assert 1 <= len(obj["tags"]) <= 2 and set(obj["tags"]) <= {"a", "b"}


def test_cli_generate(tiny, capsys):
    from q3.cli import main

    *_, ckpt, hf = tiny
    for load in (hf, ckpt):                      # HF export and the megatron checkpoint
        assert main(["train", "generate", f"load={load}", "prompt=Hello /no_think", "max_tokens=3",
                     "seed=1"]) in (0, None)
        out = capsys.readouterr().out
        assert "completion 0" in out and "tokens/s" in out
