"""Qwen3's tokenizer: ids and special tokens exactly as Qwen3's, megatron wrapper contract."""

import numpy as np

from q3 import tokenizer as qt


def test_ids_and_special_tokens_are_qwen3s():
    tok = qt.load_tokenizer()
    assert tok.get_vocab_size(with_added_tokens=False) == 151_643
    assert tok.get_vocab_size(with_added_tokens=True) == 151_669
    assert tok.token_to_id("<|endoftext|>") == 151_643 == qt.EOD_ID
    assert tok.token_to_id("<think>") == 151_667
    assert tok.token_to_id("</think>") == 151_668
    specials = sorted(qt.SPECIAL_TOKENS.values())
    assert specials == list(range(151_643, 151_669))


def test_megatron_wrapper_roundtrip():
    t = qt.get_tokenizer()
    assert t.vocab_size == 151_669 and t.eod == 151_643
    assert t.unique_identifiers["class"] == "MegatronQwen3Tokenizer"
    text = "Grüße, 世界! def f(x): return x ** 2\n<think>why</think>"
    ids = t.tokenize(text)
    assert ids.dtype == np.int64
    assert 151_667 in ids and 151_668 in ids
    assert t.detokenize(ids) == text
    assert t.encode_batch([text])[0] == ids.tolist()


def test_chat_template_renders():
    t = qt.get_tokenizer()
    out = t.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
