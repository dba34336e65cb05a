"""SwiGLU forward/backward in Triton (for GPUs without Transformer Engine) + PyTorch reference.

Input [..., 2f] = [gate | up] (megatron's fused fc1 layout: `torch.chunk(x, 2, -1)`),
out = silu(gate) * up. Backward with s = sigmoid(gate):
d_gate = dy * up * s * (1 + gate * (1 - s)),  d_up = dy * silu(gate). Math in fp32.
"""

from __future__ import annotations

import torch

from kernels._triton import block_size, sigmoid, tl, triton

BLOCK_COLS = 1024


def swiglu_reference(x: torch.Tensor) -> torch.Tensor:
    gate, up = torch.chunk(x, 2, dim=-1)
    return torch.nn.functional.silu(gate) * up


@triton.jit
def _swiglu_fwd(X, Y, f, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < f
    a = tl.load(X + row * 2 * f + cols, mask=m, other=0.0).to(tl.float32)
    b = tl.load(X + row * 2 * f + f + cols, mask=m, other=0.0).to(tl.float32)
    y = a * sigmoid(a) * b
    tl.store(Y + row * f + cols, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _swiglu_bwd(DY, X, DX, f, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < f
    a = tl.load(X + row * 2 * f + cols, mask=m, other=0.0).to(tl.float32)
    b = tl.load(X + row * 2 * f + f + cols, mask=m, other=0.0).to(tl.float32)
    dy = tl.load(DY + row * f + cols, mask=m, other=0.0).to(tl.float32)
    s = sigmoid(a)
    da = dy * b * s * (1.0 + a * (1.0 - s))
    db = dy * a * s
    tl.store(DX + row * 2 * f + cols, da.to(DX.dtype.element_ty), mask=m)
    tl.store(DX + row * 2 * f + f + cols, db.to(DX.dtype.element_ty), mask=m)


def _grid(rows: int, f: int):
    blk = min(BLOCK_COLS, block_size(f))
    return (rows, triton.cdiv(f, blk)), blk


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        shape = x.shape
        f = shape[-1] // 2
        x2 = x.reshape(-1, 2 * f).contiguous()
        y = torch.empty(x2.shape[0], f, dtype=x.dtype, device=x.device)
        grid, blk = _grid(x2.shape[0], f)
        if x2.shape[0]:                       # an expert that got no tokens: nothing to launch
            _swiglu_fwd[grid](x2, y, f, BLOCK=blk)
        ctx.save_for_backward(x2)
        ctx.shape = shape
        return y.reshape(*shape[:-1], f)

    @staticmethod
    def backward(ctx, dy):
        (x2,) = ctx.saved_tensors
        f = x2.shape[1] // 2
        dx = torch.empty_like(x2)
        grid, blk = _grid(x2.shape[0], f)
        if x2.shape[0]:
            _swiglu_bwd[grid](dy.reshape(-1, f).contiguous(), x2, dx, f, BLOCK=blk)
        return dx.reshape(ctx.shape)


def swiglu(x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for x = [..., gate | up] (last dimension even)."""
    if x.shape[-1] % 2:
        raise ValueError(f"swiglu needs an even last dimension, got {x.shape[-1]}")
    return _SwiGLU.apply(x)
