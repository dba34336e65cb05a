"""The maths of GRPO (train/post/grpo_loss.py), checked against hand computations."""

import math

import pytest
import torch

from train.post.grpo import Sample, collate, sequences
from train.post.grpo_loss import (
    Group,
    PolicyLossConfig,
    fill_batch,
    group_advantages,
    kl_estimate,
    policy_loss,
    tis_weights,
)


def test_group_advantages_normalise_within_each_group():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 2.0]])
    a = group_advantages(r, "std", eps=0.0 + 1e-12)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]))       # mean 0.5, std 0.5
    assert torch.equal(a[1], torch.zeros(4))                                 # no signal in an all-equal group
    std = math.sqrt(0.5)
    assert torch.allclose(a[2], torch.tensor([1.0, -1.0, 0.0, 0.0]) / std)
    assert torch.allclose(group_advantages(r, "mean")[2], torch.tensor([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="groups, G"):
        group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="unknown advantage norm"):
        group_advantages(r, "rank")


def test_clip_higher_is_asymmetric_and_counts_clipped_tokens():
    cfg = PolicyLossConfig(clip_low=0.2, clip_high=0.28)
    old = torch.zeros(1, 4)
    # ratios 1.5, 1.5, 0.5, 0.5 with advantages +1, -1, +1, -1
    logp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]]))
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss_sum, n, m = policy_loss(logp, old, adv, mask, cfg)
    # +A, ratio 1.5 -> clipped at 1.28; -A, 1.5 -> unclipped 1.5 (pessimistic max); +A, 0.5 -> 0.5;
    # -A, 0.5 -> clipped at 0.8
    expected = -1.28 + 1.5 - 0.5 + 0.8
    assert n == 4 and abs(float(loss_sum) - expected) < 1e-6
    assert float(m["clip_high"]) == 1 and float(m["clip_low"]) == 1
    # the gradient is zero exactly where the clip binds
    logp = logp.clone().requires_grad_(True)
    policy_loss(logp, old, adv, mask, cfg)[0].backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0
    assert logp.grad[0, 1] != 0 and logp.grad[0, 2] != 0


def test_token_mean_and_masked_tokens_never_count():
    cfg = PolicyLossConfig()
    logp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([1.0, -2.0])                       # per sample
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])   # forced / prompt / padding tokens: 0
    loss_sum, n, _ = policy_loss(logp, torch.zeros(2, 3), adv, mask, cfg)
    assert float(n) == 3 and abs(float(loss_sum.detach()) - (-1 - 1 + 2)) < 1e-6   # ratio 1: -A per token
    loss_sum.backward()
    assert logp.grad[0, 2] == 0 and logp.grad[1, 1] == 0 and logp.grad[1, 2] == 0
    # token mean: a long response weighs by its tokens (sum over tokens / all tokens of the batch)
    assert float(loss_sum / n) == pytest.approx(0.0)


def test_kl_estimators_are_zero_when_policy_equals_reference():
    logp = torch.log(torch.tensor([0.1, 0.5, 0.9]))
    for kind in ("k1", "k3"):
        assert torch.allclose(kl_estimate(logp, logp.clone(), kind), torch.zeros(3))
    ref = torch.log(torch.tensor([0.2, 0.4, 0.9]))
    k3 = kl_estimate(logp, ref, "k3")
    assert (k3 >= 0).all()
    d = ref - logp
    assert torch.allclose(k3, d.exp() - d - 1) and torch.allclose(kl_estimate(logp, ref, "k1"), logp - ref)
    # at step 0 (policy == reference) the KL term adds nothing to the loss and reports 0
    cfg = PolicyLossConfig(kl_coef=0.5)
    lp = torch.log(torch.tensor([[0.3, 0.6]]))
    with_kl = policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 2), cfg, ref_logp=lp.clone())
    without = policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 2), PolicyLossConfig())
    assert float(with_kl[0]) == pytest.approx(float(without[0])) and float(with_kl[2]["kl"]) == 0.0
    with pytest.raises(ValueError, match="reference"):
        policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 2), cfg)


def test_tis_weights_are_capped_and_carry_no_gradient():
    old = torch.log(torch.tensor([0.5, 0.9, 0.1])).requires_grad_(True)
    roll = torch.log(torch.tensor([0.5, 0.1, 0.2]))
    w = tis_weights(old, roll, cap=2.0)
    assert torch.allclose(w, torch.tensor([1.0, 2.0, 0.5]))        # 1, min(9, 2), 0.5
    assert not w.requires_grad
    cfg = PolicyLossConfig(tis_cap=2.0)
    lp = old.detach().unsqueeze(0)
    loss_sum, _, m = policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 3), cfg, rollout_logp=roll.unsqueeze(0))
    assert float(loss_sum) == pytest.approx(-(1.0 + 2.0 + 0.5))
    assert float(m["tis_weight"]) == pytest.approx(3.5)


def test_entropy_bonus_lowers_the_loss_by_its_coefficient():
    lp, ent = torch.zeros(1, 2), torch.tensor([[1.0, 3.0]])
    base = policy_loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 2), PolicyLossConfig(), entropy=ent)
    bonus = policy_loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 2), PolicyLossConfig(entropy_coef=0.1), entropy=ent)
    assert float(base[0]) == 0.0 and float(bonus[0]) == pytest.approx(-0.4)
    assert float(base[2]["entropy"]) == 4.0


def _stream(reward_lists):
    """draw(n) over a fixed list of groups' rewards (None: the stream has run dry)."""
    it = iter(enumerate(reward_lists))
    calls = []

    def draw(n):
        calls.append(n)
        return [Group(k, r) for k, r in (next(it, (None, None)) for _ in range(n)) if r is not None]
    return draw, calls


def test_dynamic_sampling_drops_zero_variance_groups_and_refills():
    draw, calls = _stream([[1, 1], [0, 1], [0, 0], [1, 0], [1, 1], [0, 1], [1, 0], [0, 1]])
    f = fill_batch(draw, target=3, max_rounds=5)
    assert [g.key for g in f.groups] == [1, 3, 5]          # informative groups, in draw order
    assert (f.drawn, f.dropped, f.rounds, f.short) == (6, 3, 2, False)
    assert calls == [3, 3] and f.zero_std_share == 0.5


def test_dynamic_sampling_is_bounded_and_tops_up_with_zero_variance_groups():
    draw, calls = _stream([[1, 1]] * 5 + [[0, 1]] + [[0, 0]] * 10)
    f = fill_batch(draw, target=4, max_rounds=2)
    assert calls == [4, 4] and f.rounds == 2 and f.short
    assert len(f.groups) == 4 and f.groups[0].key == 5       # the one informative group first
    assert f.dropped == 7 and f.drawn == 8
    off = fill_batch(_stream([[1, 1], [0, 1]])[0], target=2, dynamic=False)
    assert [g.key for g in off.groups] == [0, 1] and off.dropped == 0


def test_sequences_mask_only_sampled_tokens_of_unmasked_samples():
    s = Sample(0, 0, prompt=[10, 11, 12], tokens=[20, 21, 22], logprobs=[-0.1, -0.2, -0.3],
               sampled=[True, False, True], finish_reason="stop")
    cut = Sample(0, 1, prompt=[10, 11, 12], tokens=[20, 21], logprobs=[-0.5, -0.6], sampled=[True, True],
                 finish_reason="length", masked=True)
    rows = sequences([s, cut], [1.5, -1.5])
    r = rows[0]
    assert r["tokens"] == [10, 11, 12, 20, 21] and r["labels"] == [11, 12, 20, 21, 22]
    assert r["loss_mask"] == [0, 0, 1, 0, 1]                  # the forced token 21 is not trained
    assert r["rollout_logprobs"] == [0, 0, -0.1, -0.2, -0.3]
    assert sum(rows[1]["loss_mask"]) == 0                     # over-long and masked: nothing in the loss
    b = collate(rows)
    assert b["tokens"].shape == (2, 5) and b["loss_mask"][1].sum() == 0
    assert torch.equal(b["advantages"], torch.tensor([1.5, -1.5]))
