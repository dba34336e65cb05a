"""MoE token permute/unpermute (Triton) against megatron-core's `moe_utils.permute/unpermute`
and our PyTorch reference: permuted rows, sorted indices, restored tokens, and the gradients
of tokens and routing probabilities."""

from __future__ import annotations

import pytest
import torch

from kernels.moe_permute import permute, permute_reference, token_slots, unpermute, unpermute_reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _routing(T, E, K, seed, drop_token=None):
    torch.manual_seed(seed)
    logits = torch.randn(T, E, device=DEV)
    top = logits.topk(K, dim=1).indices
    rm = torch.zeros(T, E, dtype=torch.bool, device=DEV).scatter_(1, top, True)
    if drop_token is not None:
        rm[drop_token] = False                   # a token no expert takes (capacity drop)
    probs = torch.softmax(logits, -1) * rm
    return rm, probs


def _round_trip(fns, x, probs, rm, g):
    perm_fn, unperm_fn = fns
    a, p = x.clone().requires_grad_(), probs.clone().requires_grad_()
    permuted, permuted_probs, idx = perm_fn(a, rm, p)
    y = permuted * 1.5 + 0.25                    # a stand-in for the experts
    out = unperm_fn(y, idx, a.shape, p, rm)
    out.backward(g)
    return permuted.detach(), idx, out.detach(), a.grad, p.grad


@pytest.mark.parametrize("T,E,K,H,drop", [(9, 5, 2, 12, None), (7, 8, 1, 1030, 3), (6, 4, 4, 8, 0)])
def test_matches_reference_forward_and_backward(T, E, K, H, drop):
    rm, probs = _routing(T, E, K, seed=T, drop_token=drop)
    x = torch.randn(T, H, device=DEV)
    g = torch.randn(T, H, device=DEV)
    ours = _round_trip((permute, unpermute), x, probs, rm, g)
    ref = _round_trip((permute_reference, unpermute_reference), x, probs, rm, g)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if drop is not None:
        assert ours[2][drop].abs().max() == 0 and ours[3][drop].abs().max() == 0


def test_same_contract_as_megatron_core():
    from megatron.core.transformer.moe import moe_utils

    rm, probs = _routing(T=11, E=6, K=2, seed=7)
    x = torch.randn(11, 16, device=DEV)
    permuted, permuted_probs, idx = permute(x, rm, probs)
    m_permuted, m_probs, m_idx = moe_utils.permute(x, rm, probs)
    assert torch.equal(idx, m_idx) and torch.equal(permuted, m_permuted)
    torch.testing.assert_close(permuted_probs, m_probs)
    y = torch.randn_like(permuted)
    torch.testing.assert_close(unpermute(y, idx, x.shape, probs, rm),
                               moe_utils.unpermute(y, m_idx, x.shape, probs, rm), atol=1e-6, rtol=1e-6)
    # without probs: a plain sum of each token's copies
    torch.testing.assert_close(unpermute(y, idx, x.shape), moe_utils.unpermute(y, m_idx, x.shape),
                               atol=1e-6, rtol=1e-6)


def test_token_slots_list_each_tokens_copies_in_expert_order():
    idx = torch.tensor([0, 2, 1, 2, 0])         # expert-major: e0 -> tokens 0,2; e1 -> 1,2; e2 -> 0
    slots = token_slots(idx, 4)
    assert slots.tolist() == [[0, 4], [2, -1], [1, 3], [-1, -1]]


def test_probs_without_routing_map_is_an_error():
    rm, probs = _routing(T=3, E=2, K=1, seed=1)
    permuted, _, idx = permute(torch.randn(3, 4, device=DEV), rm)
    with pytest.raises(ValueError, match="routing_map"):
        unpermute(permuted, idx, (3, 4), probs)
