"""Fused Qwen3 QK-norm + RoPE in Triton + PyTorch reference.

Qwen3 applies RMSNorm to each head's query and key (weight shared over heads, [head_dim]) and
then rotary embedding. Unfused that is two reads and two writes of q and k, plus the rope's
`rotate_half` copy; fused it is one read and one write per row. Layout as megatron's
attention: x [s, b, heads, d] (any shape whose leading dims flatten with the position first),
cos/sin [s, d] (megatron's non-interleaved rope: freqs = cat(f, f), rotate_half(y) = cat(-y2, y1)).

Forward per row with y = x_hat * w, x_hat = x * rstd, halves 1 and 2:
out1 = y1 cos1 - y2 sin1,  out2 = y2 cos2 + y1 sin2.
Backward: dy1 = g1 cos1 + g2 sin2, dy2 = g2 cos2 - g1 sin1, then RMSNorm's backward.
"""

from __future__ import annotations

import torch

from kernels._triton import block_size, num_row_programs, row_sum, tl, triton

ROWS_PER_PROGRAM = 16


def rope_reference(y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """megatron's `_apply_rotary_pos_emb_bshd` (non-interleaved) for y [s, ..., d], cos/sin [s, d]."""
    shape = (cos.shape[0],) + (1,) * (y.dim() - 2) + (cos.shape[1],)
    c, s = cos.reshape(shape).to(y.dtype), sin.reshape(shape).to(y.dtype)
    y1, y2 = torch.chunk(y, 2, dim=-1)
    return y * c + torch.cat((-y2, y1), dim=-1) * s


def qk_norm_rope_reference(x, weight, cos, sin, eps: float = 1e-6) -> torch.Tensor:
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)
    return rope_reference(y, cos, sin)


@triton.jit
def _fwd(X, W, COS, SIN, Y, RSTD, rows, per_pos, half, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < half
    d = 2 * half
    w1 = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
    w2 = tl.load(W + half + cols, mask=m, other=0.0).to(tl.float32)
    for i in range(ROWS):
        row = pid * ROWS + i
        if row < rows:
            pos = row // per_pos
            x1 = tl.load(X + row * d + cols, mask=m, other=0.0).to(tl.float32)
            x2 = tl.load(X + row * d + half + cols, mask=m, other=0.0).to(tl.float32)
            rstd = 1.0 / tl.sqrt((row_sum(x1 * x1) + row_sum(x2 * x2)) / d + eps)
            tl.store(RSTD + row, rstd)
            y1 = x1 * rstd * w1
            y2 = x2 * rstd * w2
            c1 = tl.load(COS + pos * d + cols, mask=m, other=0.0).to(tl.float32)
            c2 = tl.load(COS + pos * d + half + cols, mask=m, other=0.0).to(tl.float32)
            s1 = tl.load(SIN + pos * d + cols, mask=m, other=0.0).to(tl.float32)
            s2 = tl.load(SIN + pos * d + half + cols, mask=m, other=0.0).to(tl.float32)
            tl.store(Y + row * d + cols, (y1 * c1 - y2 * s1).to(Y.dtype.element_ty), mask=m)
            tl.store(Y + row * d + half + cols, (y2 * c2 + y1 * s2).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _bwd(G, X, W, COS, SIN, RSTD, DX, DW_PART, rows, per_pos, half,
         ROWS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < half
    d = 2 * half
    w1 = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
    w2 = tl.load(W + half + cols, mask=m, other=0.0).to(tl.float32)
    dw1 = tl.full([BLOCK], 0.0, tl.float32)
    dw2 = tl.full([BLOCK], 0.0, tl.float32)
    for i in range(ROWS):
        row = pid * ROWS + i
        if row < rows:
            pos = row // per_pos
            g1 = tl.load(G + row * d + cols, mask=m, other=0.0).to(tl.float32)
            g2 = tl.load(G + row * d + half + cols, mask=m, other=0.0).to(tl.float32)
            c1 = tl.load(COS + pos * d + cols, mask=m, other=0.0).to(tl.float32)
            c2 = tl.load(COS + pos * d + half + cols, mask=m, other=0.0).to(tl.float32)
            s1 = tl.load(SIN + pos * d + cols, mask=m, other=0.0).to(tl.float32)
            s2 = tl.load(SIN + pos * d + half + cols, mask=m, other=0.0).to(tl.float32)
            dy1 = g1 * c1 + g2 * s2
            dy2 = g2 * c2 - g1 * s1
            rstd = tl.load(RSTD + row)
            xh1 = tl.load(X + row * d + cols, mask=m, other=0.0).to(tl.float32) * rstd
            xh2 = tl.load(X + row * d + half + cols, mask=m, other=0.0).to(tl.float32) * rstd
            dw1 += dy1 * xh1
            dw2 += dy2 * xh2
            h1 = dy1 * w1
            h2 = dy2 * w2
            mean = (row_sum(h1 * xh1) + row_sum(h2 * xh2)) / d
            tl.store(DX + row * d + cols, (rstd * (h1 - xh1 * mean)).to(DX.dtype.element_ty), mask=m)
            tl.store(DX + row * d + half + cols, (rstd * (h2 - xh2 * mean)).to(DX.dtype.element_ty),
                     mask=m)
    tl.store(DW_PART + pid * d + cols, dw1, mask=m)
    tl.store(DW_PART + pid * d + half + cols, dw2, mask=m)


class _QKNormRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, cos, sin, eps):
        shape = x.shape
        d = shape[-1]
        x2 = x.reshape(-1, d).contiguous()
        rows = x2.shape[0]
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
        y = torch.empty_like(x2)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        per_pos = rows // shape[0]
        grid = (num_row_programs(rows, ROWS_PER_PROGRAM),)
        _fwd[grid](x2, weight.contiguous(), cos, sin, y, rstd, rows, per_pos, d // 2, eps,
                   ROWS=ROWS_PER_PROGRAM, BLOCK=block_size(d // 2))
        ctx.save_for_backward(x2, weight, cos, sin, rstd)
        ctx.shape, ctx.per_pos = shape, per_pos
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        x2, weight, cos, sin, rstd = ctx.saved_tensors
        rows, d = x2.shape
        programs = num_row_programs(rows, ROWS_PER_PROGRAM)
        dx = torch.empty_like(x2)
        dw_part = torch.empty(programs, d, dtype=torch.float32, device=x2.device)
        _bwd[(programs,)](g.reshape(rows, d).contiguous(), x2, weight.contiguous(), cos, sin, rstd, dx,
                          dw_part, rows, ctx.per_pos, d // 2, ROWS=ROWS_PER_PROGRAM,
                          BLOCK=block_size(d // 2))
        return dx.reshape(ctx.shape), dw_part.sum(0).to(weight.dtype), None, None, None


def qk_norm_rope(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm(x) * weight over the head dim, then RoPE; x [s, ..., d], cos/sin [s, d]."""
    if x.shape[-1] % 2 or cos.shape != (x.shape[0], x.shape[-1]) or sin.shape != cos.shape:
        raise ValueError(f"qk_norm_rope: x {tuple(x.shape)} needs an even head dim and cos/sin "
                         f"[{x.shape[0]}, {x.shape[-1]}], got {tuple(cos.shape)}/{tuple(sin.shape)}")
    return _QKNormRope.apply(x, weight, cos, sin, eps)
