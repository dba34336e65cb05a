"""Chunked linear + cross-entropy (Triton) against torch's F.cross_entropy over full logits:
loss and the gradients of hidden states and weight, on a tiny vocabulary and at Qwen3's
151,936 rows with a handful of tokens."""

from __future__ import annotations

import pytest
import torch

from kernels.linear_ce import linear_cross_entropy, linear_cross_entropy_reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _both(T, H, V, chunk, reduction, ignore=(1,), seed=0):
    torch.manual_seed(seed)
    h = torch.randn(T, H, device=DEV)
    w = 0.5 * torch.randn(V, H, device=DEV)
    targets = torch.randint(0, V, (T,), device=DEV)
    targets[list(ignore)] = -100
    out = {}
    for name, fn in (("ours", lambda a, b: linear_cross_entropy(a, b, targets, reduction=reduction,
                                                               chunk_size=chunk)),
                     ("torch", lambda a, b: linear_cross_entropy_reference(a, b, targets,
                                                                          reduction=reduction))):
        a, b = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(a, b)
        (loss * 0.7).backward()               # a non-unit upstream gradient reaches both grads
        out[name] = (loss.detach(), a.grad, b.grad)
    return out["ours"], out["torch"]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk", [3, 64])     # several chunks with a partial last one; one chunk
def test_tiny_vocab_matches_torch(reduction, chunk):
    (loss, gh, gw), (loss_ref, ghr, gwr) = _both(T=10, H=8, V=37, chunk=chunk, reduction=reduction)
    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh, ghr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, gwr, atol=1e-5, rtol=1e-5)
    assert gh[1].abs().max() == 0               # the ignored token gets no gradient


def test_real_vocab_few_tokens_matches_torch():
    """Qwen3's padded vocabulary (151,936 rows: 38 vocab blocks of the online logsumexp)."""
    (loss, gh, gw), (loss_ref, ghr, gwr) = _both(T=3, H=8, V=151936, chunk=2, reduction="mean", ignore=())
    assert loss.item() > 5                          # ~log(151936) = 11.9 for random logits
    torch.testing.assert_close(loss, loss_ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gh, ghr, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gw, gwr, atol=1e-6, rtol=1e-4)


def test_large_logits_stay_finite():
    """The online logsumexp rescales: logits of +-1e4 must not overflow exp."""
    torch.manual_seed(5)
    h = torch.randn(4, 4, device=DEV) * 100
    w = torch.randn(50, 4, device=DEV) * 100
    t = torch.randint(0, 50, (4,), device=DEV)
    loss = linear_cross_entropy(h, w, t)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, linear_cross_entropy_reference(h, w, t), atol=1e-2, rtol=1e-5)


def test_bad_arguments_are_clear():
    h, w, t = torch.randn(2, 4), torch.randn(5, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, t, reduction="none")
    with pytest.raises(ValueError, match=r"hidden \[T, H\]"):
        linear_cross_entropy(h, torch.randn(5, 3), t)


def test_token_weights_and_per_token_losses():
    """The trainer's use: sum_t w_t * CE_t with a (loss-mask) weight per token, and the per-token
    CE handed back; weighted tokens' gradients scale, zero-weight tokens get none."""
    torch.manual_seed(3)
    h0, w0 = torch.randn(6, 8, device=DEV), 0.5 * torch.randn(37, 8, device=DEV)
    t = torch.randint(0, 37, (6,), device=DEV)
    wt = torch.tensor([1.0, 0.0, 1.0, 0.5, 1.0, 0.0], device=DEV)
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss, per_tok = linear_cross_entropy(h, w, t, reduction="sum", chunk_size=4, token_weights=wt,
                                         return_token_losses=True)
    loss.backward()
    hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    ce = torch.nn.functional.cross_entropy(hr @ wr.t(), t, reduction="none")
    (ce * wt).sum().backward()
    torch.testing.assert_close(per_tok, ce.detach(), atol=1e-5, rtol=1e-5)   # unweighted, every token
    torch.testing.assert_close(loss, (ce * wt).sum().detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad, hr.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.grad, wr.grad, atol=1e-5, rtol=1e-5)
    assert h.grad[1].abs().max() == 0 and not per_tok.requires_grad
    with pytest.raises(ValueError, match="reduction='sum'"):
        linear_cross_entropy(h0, w0, t, token_weights=wt)
