"""Streamed text pieces of `q3 serve` (train/serve_stream.py) with the real Qwen3 tokenizer: UTF-8
split across tokens, the reasoning/content split fed in arbitrary pieces, OpenAI logprob entries."""

import random

import pytest

from train.generate import Tokenizer, split_thinking
from train.sampling import THINKING_BUDGET_TEXT
from train.serve_stream import LOGPROB_FLOOR, ReasoningSplit, TokenBytes, TokenText, logprob_entry

TEXTS = ["Hello wörld 你好 🙂🙂 — ok", "<think>\nLet me 想想 🙂\n</think>\n\nAnswer: 42 ",
         "<think>\nhmm " + THINKING_BUDGET_TEXT + "Fine.", "plain answer  \n", "<think>still thinking 😀",
         "<think>\n\n</think>\n\nHi", "  <thi", "", "<think></think>", " . </think"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


def _split(text: str, rng: random.Random, in_think: bool = False) -> tuple[str | None, str, str]:
    sp, parts = ReasoningSplit(in_think), {"reasoning_content": "", "content": ""}
    pos = 0
    while pos < len(text):
        k = rng.randint(1, 5)
        for f, d in sp.feed(text[pos:pos + k]):
            parts[f] += d
        pos += k
    for f, d in sp.finish():
        parts[f] += d
    assert parts["content"] == sp.content and parts["reasoning_content"] == (sp.reasoning or "")
    return sp.reasoning, sp.content, parts["content"]


@pytest.mark.parametrize("text", TEXTS)
def test_reasoning_split_streams_what_split_thinking_returns(text):
    rng = random.Random(0)
    for _ in range(30):                        # many ways of cutting the same text into deltas
        reasoning, content, _ = _split(text, rng)
        assert (reasoning, content) == split_thinking(text)


def test_prompt_ending_in_think_starts_in_the_think_block():
    assert _split("step 1\n</think>\n\nDone", random.Random(1), in_think=True)[:2] == ("step 1", "Done")
    assert _split("still going", random.Random(1), in_think=True)[:2] == ("still going", "")


def test_utf8_is_never_broken_across_tokens(tok):
    tb = TokenBytes(tok)
    for text in TEXTS + ["日本語のテキスト", "emoji 👩‍👩‍👧 family"]:
        ids = tok.encode(text)
        stream = TokenText(tb)
        pieces = [stream.push(i) for i in ids] + [stream.finish()]
        assert "".join(pieces) == text == tok.decode(ids)
        assert all("\ufffd" not in p for p in pieces)          # incomplete bytes were held back
    rng = random.Random(0)                      # random ids, raw byte tokens included: as tokenizer.decode
    single = [i for i in range(300) if len(tb(i)) == 1]
    for _ in range(300):
        ids = [rng.choice(single + [rng.randrange(tok.vocab_size)]) for _ in range(rng.randint(1, 8))]
        stream = TokenText(tb)
        assert "".join(stream.push(i) for i in ids) + stream.finish() == tok.decode(ids)


def test_logprob_entry(tok):
    tb = TokenBytes(tok)
    first = tok.encode("🙂")[0] if len(tok.encode("🙂")) > 1 else tok.encode("你")[0]
    e = logprob_entry(tb, first, float("-inf"), [(first, -0.5), (tok.encode("a")[0], -1.0)])
    assert e["logprob"] == LOGPROB_FLOOR and e["bytes"] == list(tb(first))
    assert [t["logprob"] for t in e["top_logprobs"]] == [-0.5, -1.0] and e["top_logprobs"][1]["token"] == "a"
    assert logprob_entry(tb, 151645, -1.0, None) == {"token": "<|im_end|>", "logprob": -1.0,
                                                     "bytes": list(b"<|im_end|>"), "top_logprobs": []}
