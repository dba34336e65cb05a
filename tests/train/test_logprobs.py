"""token_logprobs == -(megatron per-token CE), entropy, chunking invariance, gradients."""

import pytest
import torch
from tiny_export import random_model

from train.logprobs import LogprobGap, token_logprobs
from train.model import forward_logits
from train.shims import causal_attention_mask


@pytest.fixture(scope="module", params=["tiny_dense", "tiny_moe"])
def model(request):
    return random_model(request.param)[0]


def batch():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 151_000, (2, 10), generator=g)
    mask = torch.zeros(2, 10)
    mask[0, 3:9] = 1
    mask[1, 5:7] = 1
    return tokens, mask


def test_equals_minus_megatron_cross_entropy_and_entropy(model):
    tokens, mask = batch()
    labels = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1)
    pos = torch.arange(10).expand(2, 10)
    model.eval()
    with torch.no_grad():
        ce = model(tokens, pos, causal_attention_mask(10), labels=labels)          # [b, s]
        lp, ent = token_logprobs(model, tokens, mask)
        logits = forward_logits(model, tokens).float()
    m = mask.bool()
    assert (lp[m] + ce[m]).abs().max() < 1e-5
    assert (lp[~m] == 0).all() and (ent[~m] == 0).all()
    ref_ent = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    assert (ent[m] - ref_ent[m]).abs().max() < 1e-4
    with pytest.raises(ValueError, match="last position"):
        token_logprobs(model, tokens, torch.ones(2, 10))


def test_packed_positions_and_mask_follow_the_trainer(model):
    """Block-diagonal mask + reset positions (packed SFT): same as megatron's CE on that batch."""
    tokens, mask = batch()
    labels = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1)
    seg = torch.tensor([0] * 4 + [1] * 6)
    attn = ~((seg[:, None] == seg[None, :]) & torch.ones(10, 10, dtype=torch.bool).tril())
    attn = attn.view(1, 1, 10, 10)
    pos = torch.cat([torch.arange(4), torch.arange(6)]).expand(2, 10)
    with torch.no_grad():
        ce = model.eval()(tokens, pos, attn, labels=labels)
        lp, _ = token_logprobs(model, tokens, mask, position_ids=pos, attention_mask=attn, labels=labels)
    assert (lp[mask.bool()] + ce[mask.bool()]).abs().max() < 1e-5


def test_chunking_invariance_and_gradients(model):
    tokens, mask = batch()
    model.train()
    outs = {}
    for chunk in (1, 3, 4096):
        model.zero_grad(set_to_none=True)
        lp, ent = token_logprobs(model, tokens, mask, chunk_size=chunk)
        assert lp.requires_grad and ent.requires_grad
        (lp.sum() + 0.1 * ent.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        outs[chunk] = (lp.detach(), ent.detach(), grads)
    ref_lp, ref_ent, ref_g = outs[4096]
    assert len(ref_g) == len([p for p in model.parameters() if p.requires_grad])   # reaches every weight
    assert any(g.abs().sum() > 0 for n, g in ref_g.items() if "decoder" in n)
    for chunk in (1, 3):
        lp, ent, grads = outs[chunk]
        assert (lp - ref_lp).abs().max() < 1e-5 and (ent - ref_ent).abs().max() < 1e-5
        for n, g in grads.items():
            assert torch.allclose(g, ref_g[n], atol=1e-5, rtol=1e-4), n
    # the gradient of the summed logprobs is the gradient of -(masked CE sum), megatron's loss
    model.zero_grad(set_to_none=True)
    labels = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1)
    ce = model(tokens, torch.arange(10).expand(2, 10), causal_attention_mask(10), labels=labels)
    (-(ce * mask).sum()).backward()
    model_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    token_logprobs(model, tokens, mask, chunk_size=3)[0].sum().backward()
    lp_only = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for n, g in model_grads.items():
        assert torch.allclose(g, lp_only[n], atol=1e-5, rtol=1e-4), n
    model.zero_grad(set_to_none=True)
    model.eval()


def test_logprob_gap_alarm(caplog):
    gap = LogprobGap(threshold=1e-3)
    a = torch.tensor([-1.0, -2.0, -3.0])
    assert not gap.check(a, a + 1e-5)
    assert gap.last == {"mean": pytest.approx(1e-5, rel=1e-2), "max": pytest.approx(1e-5, rel=1e-2), "n": 3,
                        "alarm": False}
    with caplog.at_level("WARNING", logger="train.logprobs"):
        assert gap.check(a, a + torch.tensor([0.0, 0.5, 0.0]), mask=torch.tensor([True, True, False]))
    assert gap.last["max"] == pytest.approx(0.5) and gap.last["n"] == 2
    assert "exceeds" in caplog.text
