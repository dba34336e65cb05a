"""Chunked linear + cross-entropy for the 151,936-row vocabulary, forward and backward.

The full logits of a 16K-token microbatch are 16K x 151,936 x 4 B = 10 GB (plus as much again
for their gradient). Here tokens are processed `chunk_size` at a time: the chunk's logits
[chunk, V] are formed by one GEMM, a Triton kernel makes one pass for an online logsumexp
(running max and rescaled sum over vocab blocks) and a second pass that overwrites the logits
in place with d loss / d logits = softmax - onehot (times the token's scale), and two more
GEMMs fold that into the gradients of the hidden states and of the weight. The gradients are
thus computed during the forward (as Liger-Kernel's fused linear-CE does) and only scaled by
the incoming gradient in backward: peak extra memory is one [chunk, V] fp32 buffer plus the
fp32 weight gradient [V, H] (accumulated over chunks in fp32 whatever the weight dtype).

Reductions: "mean" over non-ignored tokens (F.cross_entropy's default) or "sum"; with "sum",
optional `token_weights` [T] scale each token's loss and gradient (the trainer's loss mask), and
`return_token_losses` also hands back the unweighted per-token losses [T] (no gradient).
"""

from __future__ import annotations

import torch

from kernels._triton import block_size, row_max, row_sum, tl, triton

BLOCK_V = 4096


def linear_cross_entropy_reference(hidden, weight, targets, ignore_index: int = -100,
                                   reduction: str = "mean") -> torch.Tensor:
    """Full logits, torch's cross-entropy: what the chunked kernel must equal."""
    logits = (hidden @ weight.t()).float()
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=ignore_index,
                                             reduction=reduction)


@triton.jit
def _ce_rows(LOGITS, TARGETS, SCALE, LOSS, V, ignore_index, BLOCK: tl.constexpr, NUM_BLOCKS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * V
    target = tl.load(TARGETS + row)
    scale = tl.load(SCALE + row)
    cols = tl.arange(0, BLOCK)
    # Loop bounds are constexpr: Triton's interpreter cannot take a runtime `range` bound under
    # numpy >= 2.4 (its 1-element scalars no longer convert to int); compiled, it stays a loop.
    # pass 1: online logsumexp over vocab blocks
    m = float("-inf")
    s = 0.0
    for b in range(NUM_BLOCKS):
        v0 = b * BLOCK
        x = tl.load(base + v0 + cols, mask=v0 + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, row_max(x))
        s = s * tl.exp(m - m_new) + row_sum(tl.exp(x - m_new))
        m = m_new
    lse = m + tl.log(s)
    valid = target != ignore_index
    safe_target = tl.where(valid, target, 0)
    x_t = tl.load(base + safe_target).to(tl.float32)
    tl.store(LOSS + row, tl.where(valid, lse - x_t, 0.0))
    # pass 2: the logits become their gradient, (softmax - onehot) * scale
    for b in range(NUM_BLOCKS):
        v0 = b * BLOCK
        idx = v0 + cols
        x = tl.load(base + idx, mask=idx < V, other=0.0).to(tl.float32)
        p = tl.exp(x - lse)
        p = tl.where(idx == safe_target, p - 1.0, p)
        tl.store(base + idx, p * scale, mask=idx < V)


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, chunk_size, token_weights):
        T, V = hidden.shape[0], weight.shape[0]
        valid = targets != ignore_index
        count = valid.sum()
        if reduction == "mean":
            denom = count.clamp(min=1).float()
        else:
            denom = torch.ones((), device=hidden.device)
        w = valid.float() if token_weights is None else valid.float() * token_weights.float()
        scale = w / denom
        grad_h = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if weight.requires_grad else None
        losses = torch.empty(T, dtype=torch.float32, device=hidden.device)
        blk = min(BLOCK_V, block_size(V))
        for start in range(0, T, chunk_size):
            end = min(start + chunk_size, T)
            h = hidden[start:end]
            logits = (h @ weight.t()).float().contiguous()       # [chunk, V]: the only big buffer
            _ce_rows[(end - start,)](logits, targets[start:end].contiguous(), scale[start:end].contiguous(),
                                     losses[start:end], V, ignore_index, BLOCK=blk,
                                     NUM_BLOCKS=triton.cdiv(V, blk))
            if grad_h is not None:
                grad_h[start:end] = (logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_w is not None:
                grad_w += logits.t() @ h.float()
            del logits
        ctx.save_for_backward(grad_h, grad_w)            # None where no gradient is wanted
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(losses)
        loss = (losses * w).sum()
        return (loss / denom if reduction == "mean" else loss), losses

    @staticmethod
    def backward(ctx, g, _g_losses):
        grad_h, grad_w = ctx.saved_tensors
        grad_h = grad_h * g.to(grad_h.dtype) if grad_h is not None else None
        grad_w = (grad_w * g).to(ctx.weight_dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100, reduction: str = "mean",
                         chunk_size: int = 1024, token_weights: torch.Tensor | None = None,
                         return_token_losses: bool = False):
    """cross_entropy(hidden @ weight.T, targets) without the full logits.

    hidden [T, H], weight [V, H], targets [T] (ignore_index skipped). chunk_size tokens' logits
    exist at a time (1024 x 151,936 fp32 = 0.6 GB). `token_weights` [T] (reduction "sum" only):
    the loss is sum_t w_t * CE_t, gradients weighted alike. `return_token_losses`: return
    (loss, per-token CE [T] fp32, unweighted, 0 where ignored, no gradient).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"linear_cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] \
            or targets.shape != hidden.shape[:1]:
        raise ValueError(f"linear_cross_entropy: hidden [T, H], weight [V, H], targets [T]; got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    if token_weights is not None and (reduction != "sum" or token_weights.shape != targets.shape):
        raise ValueError("linear_cross_entropy: token_weights [T] need reduction='sum' "
                         "(a weighted mean's denominator is the caller's choice)")
    loss, losses = _LinearCE.apply(hidden, weight, targets, ignore_index, reduction, max(1, int(chunk_size)),
                                   token_weights)
    return (loss, losses) if return_token_losses else loss
