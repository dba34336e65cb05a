"""The maths of logit distillation, as pure tensor functions (tests/post/test_distill_loss.py).

Per response position t, with student distribution S = softmax(s_t) and teacher T = softmax(t_t)
over the vocabulary (both at temperature 1):

  reverse   KL(S || T) = sum_v S(v) (log S(v) - log T(v))     mode-seeking; the on-policy default
  forward   KL(T || S) = sum_v T(v) (log T(v) - log S(v))     mass-covering (what SFT on teacher
                                                              samples estimates)
  jsd(b)    b KL(T || M) + (1 - b) KL(S || M),  M = b T + (1 - b) S   (GKD's generalized JSD;
                                                              b = 0.5: the symmetric JSD)

Top-k (`top_k` > 0): the teacher ships only its k most likely tokens per position. Both
distributions are then coarse-grained to k + 1 buckets, the teacher's top-k tokens and one "rest"
bucket holding the remaining mass, and the divergence is taken between the bucketed
distributions. Coarse-graining never increases a KL (data-processing inequality), so top-k
reverse/forward KL is a lower bound of the full one, exact when the teacher's rest mass is 0.
"""

from __future__ import annotations

import math

import torch

DIVERGENCES = ("reverse", "forward", "jsd")


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """sum_v p (log p - log q) over the last dim; 0 log 0 = 0."""
    p = p_logp.exp()
    return torch.where(p > 0, p * (p_logp - q_logp), torch.zeros_like(p)).sum(-1)


def divergence(s_logp: torch.Tensor, t_logp: torch.Tensor, kind: str = "reverse", beta: float = 0.5) -> torch.Tensor:
    """[n] divergence per position between log-distributions [n, V] (student, teacher)."""
    if kind == "reverse":
        return _kl(s_logp, t_logp)
    if kind == "forward":
        return _kl(t_logp, s_logp)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
        m = torch.logsumexp(torch.stack([t_logp + math.log(beta), s_logp + math.log(1 - beta)]), dim=0)
        return beta * _kl(t_logp, m) + (1 - beta) * _kl(s_logp, m)
    raise ValueError(f"unknown divergence {kind!r} ({' | '.join(DIVERGENCES)})")


def bucket_top_k(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[n, k + 1] log-probabilities of the tokens `ids` [n, k] and of the rest of the vocabulary."""
    top = logp.gather(-1, ids)
    covered = torch.logsumexp(top, dim=-1).clamp(max=0.0)
    # log(1 - exp(covered)), kept finite when the k tokens hold (almost) all the mass
    rest = torch.log((-torch.expm1(covered)).clamp(min=1e-30))
    return torch.cat([top, rest.unsqueeze(-1)], dim=-1)


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "reverse",
                     beta: float = 0.5, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [n], reverse KL [n]) at n positions from [n, V] logits. The loss is `kind` over the full
    vocabulary (top_k = 0) or over the teacher's top-k buckets; the reverse KL is always the full,
    exact one, without gradient (a metric: what both training phases are judged by)."""
    s_logp = torch.log_softmax(student_logits.float(), dim=-1)
    t_logp = torch.log_softmax(teacher_logits.float(), dim=-1).detach()
    if top_k > 0:
        ids = t_logp.topk(min(top_k, t_logp.shape[-1]), dim=-1).indices
        loss = divergence(bucket_top_k(s_logp, ids), bucket_top_k(t_logp, ids), kind, beta)
    else:
        loss = divergence(s_logp, t_logp, kind, beta)
    with torch.no_grad():
        rkl = loss.detach() if kind == "reverse" and top_k == 0 else _kl(s_logp, t_logp)
    return loss, rkl
