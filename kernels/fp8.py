"""Reference FP8 recipes (what Transformer Engine computes), in plain torch on any device.

A leaf module: torch only. Used to emulate FP8 GEMMs on CPU (`kernels.fp8_emulation`) and as
the oracle the tests check the scale/amax arithmetic against. Values are quantised with torch's
`float8_e4m3fn` / `float8_e5m2` dtypes and dequantised back ("fake quantisation"), so a GEMM on
the dequantised operands equals an FP8 GEMM with fp32 accumulation up to summation order.

Recipes (TE names, `transformer_engine.common.recipe`):
- `DelayedScaling`: per-tensor scale from an amax *history* of previous iterations.
- `Float8CurrentScaling` ("current", megatron's "tensorwise"): per-tensor scale from this tensor's amax.
- `Float8BlockScaling` ("blockwise", DeepSeek-V3 style): one scale per 1x128 block of activations
  and gradients, per 128x128 block of weights.
Formats: E4M3 everywhere, or HYBRID = E4M3 in the forward pass, E5M2 for gradients.

Sources (what the tests hold this to): TE's Common API docs (nvidia.github.io/TransformerEngine/
api/common.html: `DelayedScaling(margin=0, fp8_format=HYBRID, amax_history_len=1024,
amax_compute_algo='max')`, "max chooses the largest amax in the history window, while most_recent
always chooses the most recently seen value"), recipe.h (api/c/recipe.html: the history "is rotated
by -1 ... and the first entry is set to zero"), transformer_engine/common/recipe/__init__.py
(DelayedScaling note: `new_scaling_factor = (FP8_MAX / amax) / (2 ^ margin)`; Float8CurrentScaling:
`QParams(power_2_scale=False, amax_epsilon=0.0)` by default; Float8BlockScaling: power-of-2 scales
by default, `x_block_scaling_dim=1, w_block_scaling_dim=2, grad_block_scaling_dim=1`, E4M3), and the
FP8 Blockwise Scaling page (features/low_precision_training/fp8_blockwise_scaling).
"""

from __future__ import annotations

import math

import torch

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
# Largest finite magnitudes (OCP FP8 spec; TE `Format.E4M3.value.max_fwd` = 448, E5M2 = 57344).
FP8_MAX = {E4M3: 448.0, E5M2: 57344.0}
# (forward dtype, backward dtype). TE docs, `recipe.Format`: "HYBRID - FP8 tensors in the forward
# pass are in e4m3 format, FP8 tensors in the backward pass are in e5m2 format".
FORMATS = {"e4m3": (E4M3, E4M3), "hybrid": (E4M3, E5M2)}
# TE's default format per recipe: DelayedScaling / Float8CurrentScaling default to HYBRID;
# "Unlike FP8 Current/Delayed Scaling, E4M3 is used by default for both forward and backward
# passes" (TE docs, FP8 Blockwise Scaling, "FP8 format").
DEFAULT_FORMAT = {"delayed": "hybrid", "current": "hybrid", "blockwise": "e4m3"}
BLOCK = 128


def cast_to_fp8(x: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """`x * scale` in FP8, saturating at +-max like TE's cast kernels. torch's own cast turns
    E5M2 overflow into inf (and E4M3FN's overflow behaviour is backend-dependent), so clamp first."""
    m = FP8_MAX[dtype]
    return (x.float() * scale).clamp(-m, m).to(dtype)


def dequantize(q: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """FP8 data back to `dtype`: multiply by the scale's inverse (TE stores `scale_inv`)."""
    return (q.float() * (1.0 / scale if isinstance(scale, float) else scale.reciprocal())).to(dtype)


def fake_quant(x: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """Quantise to FP8 with `scale` and back, in `x`'s dtype."""
    return dequantize(cast_to_fp8(x, scale, dtype), scale, x.dtype)


def scale_from_amax(amax: torch.Tensor, fp8_max: float, margin: int = 0,
                    prev_scale: torch.Tensor | None = None, power_2: bool = False) -> torch.Tensor:
    """TE's scale: `(fp8_max / amax) / 2**margin` (recipe.h: "the FP8 tensor's maximum absolute
    value is 2^-margin max_fp8_dtype"). Where amax is 0 or not finite the previous scale is kept
    (1 when there is none), as TE's `_default_sf_compute` does. `power_2`: round the scale down
    to a power of two (TE's blockwise default), so scaling is exact in binary."""
    amax = amax.float()
    prev = torch.ones_like(amax) if prev_scale is None else prev_scale.float().expand_as(amax)
    ok = (amax > 0) & torch.isfinite(amax)
    sf = (fp8_max / torch.where(ok, amax, torch.ones_like(amax))) / (2.0 ** margin)
    if power_2:
        sf = torch.exp2(torch.floor(torch.log2(sf)))
    return torch.where(ok & torch.isfinite(sf), sf, prev)


class DelayedScaling:
    """One tensor's delayed-scaling state (TE `DelayedScaling`: "Use scale factor from previous
    iteration ... and record amax history of amax_history_len steps").

    `quantize(x)` casts with the *current* scale and records `amax(x)` in history slot 0; then
    `update()` (TE's amax-and-scale update, recipe.h `nvte_delayed_scaling_recipe_amax_and_scale_update`)
    reduces the history (`max`: the largest amax in the window; `most_recent`: slot 0), computes
    the next scale, and rotates the history by -1 with slot 0 zeroed. The emulation calls both per
    GEMM call, so call t is scaled from the amaxes of calls < t. Initial scale: 1.
    """

    def __init__(self, dtype: torch.dtype, history_len: int = 1024, algo: str = "max", margin: int = 0):
        if algo not in ("max", "most_recent"):
            raise ValueError(f"amax_compute_algo must be 'max' or 'most_recent', not {algo!r}")
        if history_len < 1:
            raise ValueError("amax_history_len must be >= 1")
        self.dtype, self.algo, self.margin = dtype, algo, margin
        self.amax_history = torch.zeros(history_len)
        self.scale = torch.ones(())

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        self.amax_history[0] = torch.maximum(self.amax_history[0], x.detach().abs().amax().float().cpu())
        return fake_quant(x, self.scale.to(x.device), self.dtype)

    def update(self) -> None:
        h = self.amax_history
        amax = h.max() if self.algo == "max" else h[0]
        self.scale = scale_from_amax(amax, FP8_MAX[self.dtype], self.margin, self.scale)
        self.amax_history = torch.roll(h, -1)
        self.amax_history[0] = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:              # an expert that got no tokens: nothing to cast or record
            return x
        out = self.quantize(x)
        self.update()
        return out


class CurrentScaling:
    """TE `Float8CurrentScaling`: the scale comes from this tensor's own amax (no history)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        scale = scale_from_amax(x.detach().abs().amax(), FP8_MAX[self.dtype])
        return fake_quant(x, scale, self.dtype)


def block_scales(x: torch.Tensor, block: tuple[int, int], dtype: torch.dtype,
                 power_2: bool = True) -> torch.Tensor:
    """Scales of a 2-D tensor's (block[0] x block[1]) tiles, shape [ceil(rows/b0), ceil(cols/b1)].
    Edge tiles are partial (padding with zeros does not change an amax)."""
    rows, cols = x.shape
    b0, b1 = block
    pr, pc = math.ceil(rows / b0) * b0, math.ceil(cols / b1) * b1
    xp = torch.nn.functional.pad(x.detach().float().abs(), (0, pc - cols, 0, pr - rows))
    amax = xp.reshape(pr // b0, b0, pc // b1, b1).amax(dim=(1, 3))
    return scale_from_amax(amax, FP8_MAX[dtype], power_2=power_2)


def fake_quant_blockwise(x: torch.Tensor, block: tuple[int, int], dtype: torch.dtype,
                         power_2: bool = True) -> torch.Tensor:
    """Blockwise quantise-dequantise over the last dim (leading dims are flattened to rows)."""
    x2 = x.reshape(-1, x.shape[-1])
    s = block_scales(x2, block, dtype, power_2)
    full = s.repeat_interleave(block[0], 0)[: x2.shape[0]].repeat_interleave(block[1], 1)[:, : x2.shape[1]]
    return fake_quant(x2, full, dtype).reshape(x.shape)


class BlockScaling:
    """TE `Float8BlockScaling`: 1x128 tiles for activations and gradients (one scale per 128
    consecutive elements along the GEMM's inner dim), 128x128 tiles for weights. Scales are powers
    of two by default (TE's `QParams(power_2_scale=True)` for this recipe)."""

    def __init__(self, dtype: torch.dtype, block: tuple[int, int] = (1, BLOCK), power_2: bool = True):
        self.dtype, self.block, self.power_2 = dtype, block, power_2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        return fake_quant_blockwise(x, self.block, self.dtype, self.power_2)


RECIPES = ("delayed", "current", "blockwise")


def make_quantizer(recipe: str, role: str, fmt: str | None = None, history_len: int = 1024,
                   algo: str = "max", margin: int = 0):
    """The quantiser of one GEMM operand. `role`: "input", "weight" or "grad" (grad-output, cast
    to the format's backward dtype). `fmt`: "e4m3" / "hybrid", None = TE's default for `recipe`."""
    if recipe not in RECIPES:
        raise ValueError(f"fp8 recipe must be one of {RECIPES}, not {recipe!r}")
    fwd, bwd = FORMATS[fmt or DEFAULT_FORMAT[recipe]]
    dtype = bwd if role == "grad" else fwd
    if recipe == "delayed":
        return DelayedScaling(dtype, history_len, algo, margin)
    if recipe == "current":
        return CurrentScaling(dtype)
    return BlockScaling(dtype, (BLOCK, BLOCK) if role == "weight" else (1, BLOCK))
