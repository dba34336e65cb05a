"""Emulated FP8 GEMMs: quantise-dequantise around the linear layers of a model (CPU-friendly).

What TE's FP8 linear does, with the FP8 GEMM replaced by a GEMM on dequantised operands:
forward `y = Q_fwd(x) @ Q_fwd(w)^T`; backward `dgrad = Q_bwd(dy) @ Q_fwd(w)`,
`wgrad = Q_bwd(dy)^T @ Q_fwd(x)`. The quantisation is straight-through (its backward is the
identity), so gradients stay in high precision except for the FP8 cast of the grad-output that
feeds both backward GEMMs, as in TE. Simplification: one quantisation per tensor serves both the
forward and the transposed (wgrad) use; TE's blockwise recipe quantises the transposed copies
with their own tiles.

Duck-typed on megatron-core's `ColumnParallelLinear` / `RowParallelLinear` (the local spec's
linears and the experts of `SequentialMLP`): every module with a `_forward_impl(input, weight,
...)` and a `weight` is wrapped, except the LM head (`output_layer`), which megatron keeps out of
FP8 with TE too. Routers compute their logits with their own GEMM and stay unquantised, like TE's.
Leaf module: imports torch and kernels.fp8 only.
"""

from __future__ import annotations

import torch

from kernels.fp8 import make_quantizer

SKIP = ("output_layer",)


class _QuantSTE(torch.autograd.Function):
    """Forward: fake-quantise. Backward: identity (straight-through)."""

    @staticmethod
    def forward(ctx, x, quantizer):
        return quantizer(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _QuantGrad(torch.autograd.Function):
    """Forward: identity. Backward: fake-quantise the incoming gradient (the GEMM's grad-output)."""

    @staticmethod
    def forward(ctx, y, quantizer):
        ctx.quantizer = quantizer
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        return ctx.quantizer(grad.contiguous()), None


class FP8Emulation:
    """The three quantisers of one linear (input, weight, grad-output) around its `_forward_impl`."""

    def __init__(self, inner, recipe: str, fmt: str | None, history_len: int, algo: str):
        self.inner, self.recipe, self.enabled = inner, recipe, True
        self.q = {role: make_quantizer(recipe, role, fmt, history_len, algo)
                  for role in ("input", "weight", "grad")}

    def __call__(self, input, weight, *args, **kwargs):
        if not self.enabled:
            return self.inner(input, weight, *args, **kwargs)
        x = _QuantSTE.apply(input, self.q["input"])
        w = _QuantSTE.apply(weight, self.q["weight"])
        return _QuantGrad.apply(self.inner(x, w, *args, **kwargs), self.q["grad"])


def apply_fp8_emulation(model: torch.nn.Module, recipe: str, fmt: str | None = None,
                        history_len: int = 1024, algo: str = "max") -> list[str]:
    """Wrap the model's linears in emulated FP8 (`recipe`: delayed | current | blockwise).
    Returns the wrapped module names; raises ValueError when there is none to wrap."""
    names = []
    for name, mod in model.named_modules():
        if not hasattr(mod, "_forward_impl") or getattr(mod, "weight", None) is None:
            continue
        if name.split(".")[-1] in SKIP or isinstance(mod._forward_impl, FP8Emulation):
            continue
        mod._forward_impl = FP8Emulation(mod._forward_impl, recipe, fmt, history_len, algo)
        names.append(name)
    if not names:
        raise ValueError("fp8 emulation found no linear layer with _forward_impl (local spec only, "
                         "no grouped GEMM)")
    return names


def set_fp8_emulation(model: torch.nn.Module, enabled: bool) -> None:
    """Turn the emulation of an already wrapped model on or off (off = the plain GEMMs)."""
    for mod in model.modules():
        impl = getattr(mod, "_forward_impl", None)
        if isinstance(impl, FP8Emulation):
            impl.enabled = enabled
