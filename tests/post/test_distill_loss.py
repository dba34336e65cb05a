"""The divergences of logit distillation (train.post.distill_loss), one property at a time."""

import math

import pytest
import torch

from train.post.distill_loss import bucket_top_k, divergence, token_divergence


def logits(seed: int, n: int = 5, v: int = 50) -> torch.Tensor:
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * 3


def test_kl_matches_its_definition_and_is_zero_on_equal_distributions():
    s, t = torch.log_softmax(logits(0), -1), torch.log_softmax(logits(1), -1)
    by_hand = (s.exp() * (s - t)).sum(-1)
    assert torch.allclose(divergence(s, t, "reverse"), by_hand, atol=1e-6)
    assert torch.allclose(divergence(s, t, "forward"), divergence(t, s, "reverse"), atol=1e-6)
    assert divergence(s, s, "reverse").abs().max() < 1e-6
    assert (divergence(s, t, "reverse") > 0).all() and (divergence(s, t, "forward") > 0).all()


def test_jsd_is_symmetric_at_half_and_bounded_by_log_2():
    s, t = torch.log_softmax(logits(2), -1), torch.log_softmax(logits(3), -1)
    a, b = divergence(s, t, "jsd", 0.5), divergence(t, s, "jsd", 0.5)
    assert torch.allclose(a, b, atol=1e-6)
    assert (a > 0).all() and (a <= math.log(2) + 1e-6).all()
    with pytest.raises(ValueError, match="0 < beta < 1"):
        divergence(s, t, "jsd", 1.0)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence(s, t, "tvd")


def test_top_k_buckets_are_a_distribution_and_bound_the_full_kl_from_below():
    s_l, t_l = logits(4), logits(5)
    t = torch.log_softmax(t_l, -1)
    ids = t.topk(8, dim=-1).indices
    assert torch.allclose(bucket_top_k(t, ids).exp().sum(-1), torch.ones(5), atol=1e-5)
    for kind in ("reverse", "forward"):
        full, _ = token_divergence(s_l, t_l, kind)
        approx, exact = token_divergence(s_l, t_l, kind, top_k=8)
        assert (approx <= full + 1e-5).all()               # coarse-graining never increases a KL
        everything, _ = token_divergence(s_l, t_l, kind, top_k=50)
        assert torch.allclose(everything, full, atol=1e-4)   # k = V: exact (the rest bucket is empty)
    assert torch.allclose(exact, token_divergence(s_l, t_l, "reverse")[0], atol=1e-6)  # the metric is always full


def test_gradient_moves_the_student_toward_the_teacher_only():
    s_l = logits(6).requires_grad_()
    t_l = logits(7).requires_grad_()
    loss, _ = token_divergence(s_l, t_l, "reverse")
    loss.sum().backward()
    assert t_l.grad is None                                  # the teacher is a constant target
    with torch.no_grad():
        after = token_divergence(s_l - 0.5 * s_l.grad, t_l, "reverse")[0]
    assert after.sum() < loss.sum()
    zero = logits(8).requires_grad_()
    token_divergence(zero, zero.detach(), "reverse")[0].sum().backward()
    assert zero.grad.abs().max() < 1e-6                      # matched: nothing to learn
