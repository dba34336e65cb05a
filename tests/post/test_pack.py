"""Packing: labels/masks/positions per sample, block-diagonal attention, and packed logits ==
separate forwards on a real tiny megatron model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from q3.config import ConfigError
from q3.tokenizer import EOD_ID
from train.post.chat import ChatSample, collate, pack, packed_attention_mask, tokenize_conversation

ROOT = Path(__file__).resolve().parents[2]


def sample(n: int, start: int = 100, trained_from: int = 1) -> ChatSample:
    return ChatSample(list(range(start, start + n)), [0] * trained_from + [1] * (n - trained_from))


def test_pack_invariants():
    samples = [sample(5, 100, 2), sample(7, 200, 3), sample(4, 300, 1), sample(3, 400, 1)]
    stats = {}
    out = pack(samples, 10, stats=stats)
    # first fit in order: [5] [7] -> 5+4 fits seq 0, 3 fits seq 1 (7+3)
    assert [p.sample_index for p in out] == [[0, 2], [1, 3]]
    p0, p1 = out
    assert p0.tokens == [*range(100, 105), *range(300, 304), EOD_ID]
    assert p0.labels == [*range(101, 105), EOD_ID, *range(301, 304), EOD_ID, EOD_ID]
    # loss_mask[t] is the mask of labels[t]: sample 1 trains ids 102..104, sample 2 trains 301..303
    assert p0.loss_mask == [0, 1, 1, 1, 0, 1, 1, 1, 0, 0]
    assert p0.position_ids[:9] == [0, 1, 2, 3, 4, 0, 1, 2, 3] and p0.segment_ids == [1] * 5 + [2] * 4 + [0]
    assert p1.tokens == [*range(200, 207), *range(400, 403)] and p1.loss_mask == [0, 0, 1, 1, 1, 1, 0, 1, 1, 0]
    for p in out:
        assert len(p.tokens) == len(p.labels) == len(p.loss_mask) == len(p.position_ids) == len(p.segment_ids) == 10
    assert stats["sequences"] == 2 and stats["packed"] == 4 and stats["tokens"] == 19
    assert stats["trained_tokens"] == sum(sum(s.loss_mask[1:]) for s in samples) == 12
    assert stats["fill"] == 0.95


def test_pack_is_first_fit():
    import random

    rng = random.Random(0)
    samples = [sample(rng.randint(2, 30), 10 * i) for i in range(300)]
    out = pack(samples, 32)
    room, where = [], []                                  # brute-force first fit, in input order
    for s in samples:
        b = next((k for k, r in enumerate(room) if r >= len(s.ids)), len(room))
        room += [32] * (b == len(room))
        room[b] -= len(s.ids)
        where.append(b)
    assert [p.sample_index for p in out] == [[i for i, b in enumerate(where) if b == k] for k in range(len(room))]
    assert all(len(p.tokens) == 32 for p in out)


def test_pack_overlong_and_untrained():
    long, empty = sample(12, 100, 11), sample(4, 300, 4)
    stats = {}
    assert pack([long, empty, sample(3)], 10, stats=stats)[0].tokens[:3] == [100, 101, 102]
    assert stats["dropped_overlong"] == 1 and stats["dropped_no_loss"] == 1 and stats["packed"] == 1
    stats = {}
    # truncation keeps the first 10 tokens; the trained tail is cut off, so the sample has no loss left
    assert pack([long], 10, overlong="truncate", stats=stats) == [] and stats["truncated"] == 1
    assert stats["dropped_no_loss"] == 1
    [p] = pack([sample(12, 100, 2)], 10, overlong="truncate")
    assert p.tokens == list(range(100, 110)) and p.loss_mask == [0] + [1] * 8 + [0]
    with pytest.raises(ConfigError, match="overlong"):
        pack([], 10, overlong="cut")


def test_packed_attention_mask():
    m = packed_attention_mask([1, 1, 2, 2, 2, 0])
    assert m.shape == (1, 1, 6, 6) and m.dtype == torch.bool
    allowed = (~m[0, 0]).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                       [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    assert packed_attention_mask(torch.tensor([[1, 1], [1, 2]])).shape == (2, 1, 2, 2)
    batch = collate(pack([sample(5), sample(7), sample(4)], 10))
    assert batch["tokens"].shape == (2, 10) and batch["attention_mask"].shape == (2, 1, 10, 10)
    assert batch["loss_mask"].dtype == torch.float32


PROBE = r"""
import json, torch
from train.config import load_model_config
from train.model import init_parallel, build_model, forward_logits, destroy_parallel
from train.post.chat import tokenize_conversation, pack, collate
from train.shims import causal_attention_mask

if __name__ == "__main__":
    init_parallel()
    torch.manual_seed(0)
    model = build_model(load_model_config("tiny_dense"), seq_length=64).eval()
    with torch.no_grad():
        for p in model.parameters():          # norms are ones at init: perturb everything
            p.add_(torch.randn_like(p) * 0.05)
    convs = json.loads(input())
    samples = [s for c in convs for s in tokenize_conversation(c)]
    packed = pack(samples, 64)
    b = collate(packed)
    out = {"lengths": [len(s.ids) for s in samples], "segments": [max(p.segment_ids) for p in packed]}
    with torch.no_grad():
        logits = model(b["tokens"], b["position_ids"], b["attention_mask"])
        causal = model(b["tokens"], b["position_ids"], causal_attention_mask(64))
        err, leak, k = 0.0, 0.0, 0
        for i, p in enumerate(packed):
            off = 0
            for seg, j in enumerate(p.sample_index, 1):
                ids = samples[j].ids
                k += 1
                ref = forward_logits(model, torch.tensor([ids]))[0]
                err = max(err, (logits[i, off:off + len(ids)] - ref).abs().max().item())
                if seg > 1:
                    leak = max(leak, (causal[i, off:off + len(ids)] - ref).abs().max().item())
                off += len(ids)
    destroy_parallel()
    print(json.dumps({**out, "err": err, "leak": leak, "n": k}))
"""


def test_packed_logits_equal_separate_forwards():
    def u(t):
        return {"role": "user", "content": t}

    def a(t):
        return {"role": "assistant", "content": t}

    convs = [[u("hi"), a("<think>\nsay hi\n</think>\n\nHello!")], [u("2+2? /no_think"), a("4")],
             [{"role": "system", "content": "Be brief."}, u("sky?"), a("Blue.")], [u("x"), a("y")],
             [u("Name a prime."), a("7")]]
    # a fresh process: megatron's parallel state and the CPU shims are process-global
    rendezvous = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {**{k: v for k, v in os.environ.items() if k not in rendezvous}, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(convs), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["n"] == len(r["lengths"]) == 5 and len(r["segments"]) == 2 and max(r["segments"]) >= 2
    assert r["err"] < 1e-5, r
    assert r["leak"] > 1e-3, r      # a plain causal mask would let samples see each other: the test can fail


def test_samples_from_real_conversations_pack():
    samples = tokenize_conversation([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}])
    [p] = pack(samples, 128)
    n = sum(len(s.ids) for s in samples)
    assert p.segment_ids[:n].count(1) == len(samples[0].ids) and sum(p.loss_mask) == sum(sum(s.loss_mask) for s in samples)
