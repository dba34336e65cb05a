"""The maths of GRPO, as pure tensor functions (unit-tested one by one in tests/post/test_grpo_loss.py).

Notation per response token t of sample i in group g (G samples of one prompt):
  r_i            reward of sample i;  A_i = (r_i - mean_g r) / (std_g r + eps)   (group-normalised)
  ratio_t        exp(logp_t - old_logp_t): current policy over the policy that sampled (recomputed
                 by the trainer before the first update of a rollout batch)
  loss_t         max(-A ratio_t, -A clip(ratio_t, 1 - eps_low, 1 + eps_high))     (clip-higher, DAPO)
                 x w_t, w_t = min(exp(old_logp_t - rollout_logp_t), tis_cap)       (truncated IS, optional)
                 + beta KL_t(pi || ref)  - entropy_coef H_t
The step's loss is the token mean over every loss token of the global batch (all microbatches and DP
ranks): `loss_sum / n_tokens`, which the trainer core divides globally (`per_token_loss`). Forced
tokens (the thinking-budget sentence, tool responses) and over-long responses (when masked) have
loss_mask 0 and never enter a sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


def group_advantages(rewards: torch.Tensor, norm: str = "std", eps: float = 1e-6) -> torch.Tensor:
    """[groups, G] rewards -> [groups, G] advantages. norm "std": GRPO's (r - mean) / (std + eps);
    "mean": r - mean only (Dr. GRPO: no per-group std weighting). A group with equal rewards gets 0."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [groups, G], got shape {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if norm == "mean":
        return centred
    if norm != "std":
        raise ValueError(f"unknown advantage norm {norm!r} (std | mean)")
    # unbiased=False: a group of identical rewards has std 0 -> advantage exactly 0
    return centred / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL(pi || ref) estimates on tokens sampled from pi (Schulman's k1 / k3):
    k1 = logp - ref_logp (unbiased, can be negative); k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {kind!r} (k1 | k3)")


def tis_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights min(pi_old / pi_rollout, cap), no gradient: corrects for a rollout
    engine whose numerics differ from the trainer's (vLLM/SGLang in bf16)."""
    return torch.exp(old_logp.detach() - rollout_logp.detach()).clamp(max=cap)


@dataclass
class PolicyLossConfig:
    clip_low: float = 0.2
    clip_high: float = 0.28           # > clip_low: clip-higher keeps low-probability tokens able to rise
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    tis_cap: float | None = None      # None: no truncated importance sampling


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cfg: PolicyLossConfig, entropy: torch.Tensor | None = None, ref_logp: torch.Tensor | None = None,
                rollout_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss_sum, n_tokens, metric sums) over the masked tokens of [b, s] tensors; `advantages` is
    per token ([b, s]) or per sample ([b]). Metric sums (divide by n_tokens for means): clipped
    tokens (low / high side), KL, entropy, ratio, TIS weight."""
    m = mask.float()
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand_as(logp)
    ratio = torch.exp(logp - old_logp.detach())
    clipped = ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    per_token = torch.maximum(-adv * ratio, -adv * clipped)
    metrics: dict[str, torch.Tensor] = {
        "clip_low": (((ratio < 1.0 - cfg.clip_low) & (adv < 0)).float() * m).sum(),
        "clip_high": (((ratio > 1.0 + cfg.clip_high) & (adv > 0)).float() * m).sum(),
        "ratio": (ratio.detach() * m).sum(),
    }
    if cfg.tis_cap is not None:
        if rollout_logp is None:
            raise ValueError("tis_cap is set but no rollout logprobs were given")
        w = tis_weights(old_logp, rollout_logp, cfg.tis_cap)
        per_token = per_token * w
        metrics["tis_weight"] = (w * m).sum()
    if cfg.kl_coef:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs reference logprobs")
        kl = kl_estimate(logp, ref_logp.detach(), cfg.kl_estimator)
        per_token = per_token + cfg.kl_coef * kl
        metrics["kl"] = (kl.detach() * m).sum()
    if entropy is not None:
        if cfg.entropy_coef:
            per_token = per_token - cfg.entropy_coef * entropy
        metrics["entropy"] = (entropy.detach() * m).sum()
    return (per_token * m).sum(), m.sum(), metrics


# ------------------------------------------------------------------------------ dynamic sampling
@dataclass(eq=False)          # identity equality: the payload may be large
class Group:
    """One prompt's G samples with their rewards (payload: whatever the loop needs to train on it)."""

    key: int                          # the prompt's position in the query stream
    rewards: list[float]
    payload: object = None

    @property
    def informative(self) -> bool:
        """Equal rewards -> all advantages 0 -> no gradient signal."""
        return max(self.rewards) - min(self.rewards) > 1e-9


@dataclass
class Filled:
    groups: list[Group]               # the kept groups, at most `target`, in draw order
    drawn: int                        # groups sampled in total
    dropped: int                      # zero-variance groups dropped
    rounds: int                       # sampling rounds used
    short: bool = False               # the bound was hit before the batch was full
    all_groups: list[Group] = field(default_factory=list)

    @property
    def zero_std_share(self) -> float:
        return self.dropped / self.drawn if self.drawn else 0.0


def fill_batch(draw: Callable[[int], Sequence[Group]], target: int, max_rounds: int = 3,
               dynamic: bool = True) -> Filled:
    """Draw groups `target` at a time (`draw(n)` samples n new prompts' groups), dropping groups whose
    rewards are all equal, until `target` informative groups are kept or `max_rounds` rounds were
    drawn (DAPO's dynamic sampling, bounded; when the bound is hit the batch is topped up with
    zero-variance groups, as plain GRPO would train on them). Without `dynamic` one round is drawn
    and kept as is.
    Extra informative groups of the last round beyond `target` are discarded (not carried over), so
    a step depends only on the query stream position it started at."""
    kept: list[Group] = []
    every: list[Group] = []
    drawn = dropped = rounds = 0
    while len(kept) < target and rounds < (max_rounds if dynamic else 1):
        got = list(draw(target))
        rounds += 1
        drawn += len(got)
        every += got
        for g in got:
            if not dynamic or g.informative:
                kept.append(g)
            else:
                dropped += 1
        if not got:
            break
    short = len(kept) < target
    if short:        # bound hit: top up with zero-variance groups (advantage 0: they only add tokens)
        kept += [g for g in every if g not in kept][: target - len(kept)]
    return Filled(kept[:target], drawn, dropped, rounds, short=short, all_groups=every)


__all__ = ["Filled", "Group", "PolicyLossConfig", "fill_batch", "group_advantages", "kl_estimate",
           "policy_loss", "tis_weights"]
