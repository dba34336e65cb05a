"""MoE token permute / unpermute in Triton (for GPUs without TE's fused permute) + references.

Same contract as megatron-core's `moe_utils.permute` / `unpermute` (non-fused, no drop-and-pad):
`permute` groups the token copies by expert (expert-major, tokens in order within an expert:
`sorted_indices`), `unpermute` sums each token's expert outputs back, weighted by its routing
probabilities. megatron's unpermute scatter-adds (atomics on GPU, so not deterministic); here
each token instead *gathers* its K copies through a [tokens, K] slot table built from
`sorted_indices` with a stable sort, so every output row is summed by one program in a fixed
order. All four directions (permute fwd/bwd, unpermute fwd/bwd incl. the probs' gradient) are
gathers or row dot products: no atomics anywhere.
"""

from __future__ import annotations

import torch

from kernels._triton import block_size, row_sum, tl, triton

BLOCK_H = 1024


def permute_reference(tokens, routing_map, probs=None):
    """megatron-core's non-fused permute: (permuted tokens, permuted probs, sorted_indices)."""
    num_tokens, num_experts = routing_map.shape
    rm = routing_map.bool().t().contiguous()
    sorted_indices = torch.arange(num_tokens, device=tokens.device).unsqueeze(0).expand(
        num_experts, -1).masked_select(rm)
    permuted_probs = probs.t().contiguous().masked_select(rm) if probs is not None else None
    return tokens.index_select(0, sorted_indices), permuted_probs, sorted_indices


def unpermute_reference(permuted, sorted_indices, restore_shape, probs=None, routing_map=None):
    """megatron-core's non-fused unpermute (scatter-add of prob-weighted copies)."""
    if probs is not None:
        weights = probs.t().contiguous().masked_select(routing_map.bool().t().contiguous())
        permuted = permuted * weights.unsqueeze(-1)
    out = torch.zeros(restore_shape, dtype=permuted.dtype, device=permuted.device)
    out.index_add_(0, sorted_indices, permuted)
    return out


def token_slots(sorted_indices: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[num_tokens, K] positions of each token's copies in the permuted order (-1: none)."""
    n = sorted_indices.numel()
    order = torch.argsort(sorted_indices, stable=True)          # copies grouped by token, expert order kept
    counts = torch.bincount(sorted_indices, minlength=num_tokens)
    k = int(counts.max()) if n else 0
    starts = torch.cumsum(counts, 0) - counts
    tok = sorted_indices[order]
    rank = torch.arange(n, device=sorted_indices.device) - starts[tok]
    slots = torch.full((num_tokens, max(k, 1)), -1, dtype=torch.long, device=sorted_indices.device)
    slots[tok, rank] = order
    return slots


@triton.jit
def _gather_rows(X, IDX, SCALE, OUT, H, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    """OUT[i] = X[IDX[i]] (* SCALE[i])."""
    i = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    src = tl.load(IDX + i)
    x = tl.load(X + src * H + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_SCALE:
        x = x * tl.load(SCALE + i).to(tl.float32)
    tl.store(OUT + i * H + cols, x.to(OUT.dtype.element_ty), mask=m)


@triton.jit
def _sum_slots(Y, SLOTS, SCALE, OUT, H, K: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    """OUT[t] = sum_j Y[SLOTS[t, j]] (* SCALE[SLOTS[t, j]]), j in slot order, skipping -1."""
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    acc = tl.full([BLOCK], 0.0, tl.float32)
    for j in range(K):
        slot = tl.load(SLOTS + t * K + j)
        ok = slot >= 0
        safe = tl.where(ok, slot, 0)
        y = tl.load(Y + safe * H + cols, mask=m & ok, other=0.0).to(tl.float32)
        if HAS_SCALE:
            y = y * tl.load(SCALE + safe).to(tl.float32)
        acc += y
    tl.store(OUT + t * H + cols, acc.to(OUT.dtype.element_ty), mask=m)


@triton.jit
def _row_dot(G, IDX, Y, OUT, H, BLOCK: tl.constexpr, NUM_BLOCKS: tl.constexpr):
    """OUT[i] = <G[IDX[i]], Y[i]> (the gradient of a copy's routing weight)."""
    i = tl.program_id(0).to(tl.int64)
    src = tl.load(IDX + i)
    acc = 0.0
    for b in range(NUM_BLOCKS):       # constexpr bound: the interpreter needs it (see linear_ce)
        cols = b * BLOCK + tl.arange(0, BLOCK)
        m = cols < H
        g = tl.load(G + src * H + cols, mask=m, other=0.0).to(tl.float32)
        y = tl.load(Y + i * H + cols, mask=m, other=0.0).to(tl.float32)
        acc += row_sum(g * y)
    tl.store(OUT + i, acc)


def _blk(h: int) -> int:
    return min(BLOCK_H, block_size(h))


def _gather(x, idx, scale=None):
    out = torch.empty(idx.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    if idx.numel():
        blk = _blk(x.shape[1])
        _gather_rows[(idx.numel(), triton.cdiv(x.shape[1], blk))](
            x, idx, scale if scale is not None else idx, out, x.shape[1],
            HAS_SCALE=scale is not None, BLOCK=blk)
    return out


def _sum(y, slots, scale=None, dtype=None):
    t, k = slots.shape
    out = torch.empty(t, y.shape[1], dtype=dtype or y.dtype, device=y.device)
    blk = _blk(y.shape[1])
    _sum_slots[(t, triton.cdiv(y.shape[1], blk))](
        y, slots, scale if scale is not None else slots, out, y.shape[1], K=k,
        HAS_SCALE=scale is not None, BLOCK=blk)
    return out


class _Permute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens, sorted_indices, slots):
        ctx.save_for_backward(slots)
        return _gather(tokens.contiguous(), sorted_indices)

    @staticmethod
    def backward(ctx, g):
        (slots,) = ctx.saved_tensors
        return _sum(g.contiguous(), slots), None, None


class _Unpermute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, permuted, weights, sorted_indices, slots):
        permuted = permuted.contiguous()
        ctx.save_for_backward(permuted, weights, sorted_indices)
        return _sum(permuted, slots, weights)

    @staticmethod
    def backward(ctx, g):
        permuted, weights, sorted_indices = ctx.saved_tensors
        g = g.contiguous()
        d_perm = _gather(g, sorted_indices, weights)
        d_w = None
        if weights is not None and ctx.needs_input_grad[1]:
            h = permuted.shape[1]
            blk = _blk(h)
            d_w = torch.empty(sorted_indices.numel(), dtype=torch.float32, device=g.device)
            if sorted_indices.numel():
                _row_dot[(sorted_indices.numel(),)](g, sorted_indices, permuted, d_w, h, BLOCK=blk,
                                                    NUM_BLOCKS=triton.cdiv(h, blk))
            d_w = d_w.to(weights.dtype)
        return d_perm, d_w, None, None


def permute(tokens: torch.Tensor, routing_map: torch.Tensor, probs: torch.Tensor | None = None):
    """tokens [T, H], routing_map [T, E] bool -> (permuted [N, H], permuted probs [N] or None,
    sorted_indices [N]), as megatron-core's `permute`."""
    num_tokens, num_experts = routing_map.shape
    rm = routing_map.bool().t().contiguous()
    sorted_indices = torch.arange(num_tokens, device=tokens.device).unsqueeze(0).expand(
        num_experts, -1).masked_select(rm)
    permuted_probs = probs.t().contiguous().masked_select(rm) if probs is not None else None
    slots = token_slots(sorted_indices, num_tokens)
    return _Permute.apply(tokens, sorted_indices, slots), permuted_probs, sorted_indices


def unpermute(permuted: torch.Tensor, sorted_indices: torch.Tensor, restore_shape,
              probs: torch.Tensor | None = None, routing_map: torch.Tensor | None = None) -> torch.Tensor:
    """Each token's expert outputs summed back (weighted by `probs` [T, E] when given, which
    then needs `routing_map`), as megatron-core's `unpermute`; gradients reach `probs`."""
    weights = None
    if probs is not None:
        if routing_map is None:
            raise ValueError("unpermute: probs need the routing_map they were routed with")
        weights = probs.t().contiguous().masked_select(routing_map.bool().t().contiguous())
    slots = token_slots(sorted_indices, restore_shape[0])
    return _Unpermute.apply(permuted, weights, sorted_indices, slots)
