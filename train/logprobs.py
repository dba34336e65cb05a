"""Token log-probabilities and entropies of responses under the trainer's megatron model.

Convention (the trainer's label convention): position t scores the *next* token,

    logprobs[b, t] = log p(labels[b, t] | tokens[b, :t+1]),  labels[b, t] = tokens[b, t+1]

i.e. exactly `-model(tokens, position_ids, attention_mask, labels=labels)[b, t]` (megatron's
per-token cross entropy over the full padded vocabulary). `response_mask[b, t]` = 1 where
labels[b, t] is a response token (the trainer's `loss_mask`); elsewhere both outputs are 0.
A rollout's `logprobs[i]` for response token i of a prompt of length P sits at t = P - 1 + i.

Memory: the model is run with its output layer bypassed (final hidden states, after the last
norm), and the 151,936-way output layer is applied only to the response positions, `chunk_size`
rows at a time; with gradients on, each chunk is checkpointed so backward recomputes its logits
instead of keeping them. Differentiable w.r.t. the model's parameters (GRPO backprops through it).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

log = logging.getLogger("train.logprobs")


def unwrap(model):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


@contextmanager
def hidden_states_only(model):
    """Make GPTModel.forward return the decoder's final hidden states [s, b, h] (final norm
    applied) instead of logits: megatron's `_postprocess` returns them when `post_process` is
    False. The flag is restored on exit."""
    m = unwrap(model)
    was = m.post_process
    m.post_process = False
    try:
        yield
    finally:
        m.post_process = was


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """[n, V] float logits of final hidden states [n, h] (the model's output layer, tied or not)."""
    m = unwrap(model)
    weight = m.shared_embedding_or_output_weight() if m.share_embeddings_and_output_weights else None
    logits, _ = m.output_layer(hidden.unsqueeze(1), weight=weight, runtime_gather_output=True)
    return logits.squeeze(1).float()


def response_hidden(model, tokens: torch.Tensor, response_mask: torch.Tensor,
                    position_ids: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(final hidden states [n, h] at the response positions, their (batch, position) indices):
    the decoder runs on every token, the output layer on none."""
    from train.model import attention_mask as default_mask

    b, s = tokens.shape
    if position_ids is None:
        position_ids = torch.arange(s, device=tokens.device).unsqueeze(0).expand(b, s)
    if attention_mask is None:              # None for TE (causal kernels), the causal mask for local
        attention_mask = default_mask(unwrap(model).config.transformer_impl, s, tokens.device)
    if unwrap(model).config.sequence_parallel:
        raise NotImplementedError("sequence-parallel hidden states are not gathered")
    with hidden_states_only(model):
        hidden = model(tokens, position_ids, attention_mask)            # [s, b, h]
    bi, ti = response_mask.bool().nonzero(as_tuple=True)
    return hidden[ti, bi], (bi, ti)


def _chunk_stats(hidden: torch.Tensor, labels: torch.Tensor, model) -> torch.Tensor:
    """[n, 2] = (logprob of label, entropy) for hidden [n, h] at T=1 over the full vocabulary."""
    logits = output_logits(model, hidden)
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
    probs = torch.softmax(logits, dim=-1)
    entropy = lse - (probs * logits).sum(-1)
    return torch.stack([lp, entropy], dim=-1)


def token_logprobs(model, tokens: torch.Tensor, response_mask: torch.Tensor,
                   position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                   chunk_size: int = 1024, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs [b, s], entropy [b, s]) at response positions (0 elsewhere); see the module doc.

    `labels` defaults to tokens shifted left by one (the last position has no label, so
    response_mask must be 0 there). Position ids default to arange, the mask to causal.
    """
    b, s = tokens.shape
    if labels is None:
        if response_mask.bool()[:, -1].any():
            raise ValueError("response_mask marks the last position, which has no next token")
        labels = torch.cat([tokens[:, 1:], tokens.new_zeros(b, 1)], dim=1)
    h, (bi, ti) = response_hidden(model, tokens, response_mask, position_ids, attention_mask)
    y = labels[bi, ti]
    parts = []
    for k in range(0, h.shape[0], max(1, chunk_size)):
        args = (h[k:k + chunk_size], y[k:k + chunk_size], model)
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_stats, *args, use_reentrant=False))
        else:
            parts.append(_chunk_stats(*args))
    stats = torch.cat(parts) if parts else h.new_zeros(0, 2, dtype=torch.float32)
    lp = torch.zeros(b, s, dtype=torch.float32, device=tokens.device)
    ent = torch.zeros(b, s, dtype=torch.float32, device=tokens.device)
    lp = lp.index_put((bi, ti), stats[:, 0])
    ent = ent.index_put((bi, ti), stats[:, 1])
    return lp, ent


@dataclass
class LogprobGap:
    """Watches |rollout logprob - trainer logprob| on the same sampled tokens.

    A gap above `threshold` means the rollout engine's weights or numerics differ from the
    trainer's (a stale weight copy, a precision mismatch): importance ratios would be wrong.
    `check` logs a warning and returns True then. 1e-3 suits CPU fp32 (measured gaps ~1e-6);
    bf16 engines need a larger threshold.
    """

    threshold: float = 1e-3
    history: list[dict] = field(default_factory=list)

    def check(self, rollout_logprobs: torch.Tensor, trainer_logprobs: torch.Tensor,
              mask: torch.Tensor | None = None) -> bool:
        """Tensors of equal shape; `mask` (bool) selects the sampled tokens to compare."""
        gap = (rollout_logprobs.detach().float() - trainer_logprobs.detach().float()).abs()
        if mask is not None:
            gap = gap[mask.bool()]
        mean = float(gap.mean()) if gap.numel() else 0.0
        mx = float(gap.max()) if gap.numel() else 0.0
        alarm = mx > self.threshold
        self.history.append({"mean": mean, "max": mx, "n": int(gap.numel()), "alarm": alarm})
        if alarm:
            log.warning("rollout/trainer logprob gap %.3g (mean %.3g over %d tokens) exceeds %.3g: "
                        "stale rollout weights or a numerics mismatch", mx, mean, gap.numel(), self.threshold)
        return alarm

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


__all__ = ["LogprobGap", "hidden_states_only", "token_logprobs", "unwrap"]
