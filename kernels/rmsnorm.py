"""RMSNorm forward/backward in Triton (for GPUs without Transformer Engine) + PyTorch reference.

y = x / sqrt(mean(x^2) + eps) * w, statistics in fp32 whatever the input dtype (as torch's
RMSNorm and TE do). Backward: with x_hat = x * rstd and g = dy * w,
dx = rstd * (g - x_hat * mean(g * x_hat)),  dw = sum_rows(dy * x_hat).
dw is reduced per program over a block of rows into a [programs, n] fp32 buffer, then summed
by torch: no atomics, so the result is deterministic.
"""

from __future__ import annotations

import torch

from kernels._triton import block_size, num_row_programs, row_sum, tl, triton

ROWS_PER_PROGRAM = 16


def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * rstd * weight.float()).to(x.dtype)


@triton.jit
def _rmsnorm_fwd(X, W, Y, RSTD, rows, n, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    cmask = cols < n
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    for i in range(ROWS):
        row = pid * ROWS + i
        if row < rows:
            x = tl.load(X + row * n + cols, mask=cmask, other=0.0).to(tl.float32)
            rstd = 1.0 / tl.sqrt(row_sum(x * x) / n + eps)
            tl.store(RSTD + row, rstd)
            tl.store(Y + row * n + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=cmask)


@triton.jit
def _rmsnorm_bwd(DY, X, W, RSTD, DX, DW_PART, rows, n, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    cmask = cols < n
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.full([BLOCK], 0.0, tl.float32)
    for i in range(ROWS):
        row = pid * ROWS + i
        if row < rows:
            x = tl.load(X + row * n + cols, mask=cmask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * n + cols, mask=cmask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + row)
            xhat = x * rstd
            g = dy * w
            dx = rstd * (g - xhat * (row_sum(g * xhat) / n))
            tl.store(DX + row * n + cols, dx.to(DX.dtype.element_ty), mask=cmask)
            dw += dy * xhat
    tl.store(DW_PART + pid * n + cols, dw, mask=cmask)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        rows, n = x2.shape
        y = torch.empty_like(x2)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        grid = (num_row_programs(rows, ROWS_PER_PROGRAM),)
        _rmsnorm_fwd[grid](x2, weight.contiguous(), y, rstd, rows, n, eps,
                           ROWS=ROWS_PER_PROGRAM, BLOCK=block_size(n))
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        rows, n = x2.shape
        programs = num_row_programs(rows, ROWS_PER_PROGRAM)
        dx = torch.empty_like(x2)
        dw_part = torch.empty(programs, n, dtype=torch.float32, device=x2.device)
        _rmsnorm_bwd[(programs,)](dy.reshape(rows, n).contiguous(), x2, weight.contiguous(), rstd, dx,
                                  dw_part, rows, n, ROWS=ROWS_PER_PROGRAM, BLOCK=block_size(n))
        return dx.reshape(ctx.shape), dw_part.sum(0).to(weight.dtype), None


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension of `x` (any leading shape), Triton forward and backward."""
    return _RMSNorm.apply(x, weight, eps)


class RMSNorm(torch.nn.Module):
    """Drop-in for `torch.nn.RMSNorm(hidden, eps)`: same `weight` parameter, so the same state dict."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm(x, self.weight, self.eps)
