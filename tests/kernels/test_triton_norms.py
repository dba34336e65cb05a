"""Triton RMSNorm, SwiGLU and fused QK-norm+RoPE against their PyTorch references, forward and
backward (Triton's interpreter on CPU: tiny sizes; compiled on a GPU when there is one)."""

from __future__ import annotations

import pytest
import torch

from kernels import _triton
from kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_reference
from kernels.rmsnorm import RMSNorm, rmsnorm, rmsnorm_reference
from kernels.swiglu import swiglu, swiglu_reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_runs_in_triton_interpreter_without_cuda():
    assert torch.cuda.is_available() or _triton.INTERPRET


def _fwd_bwd(fn, *inputs, grad=None):
    """Output and input gradients of fn(*inputs) for a fixed upstream gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    g = grad if grad is not None else torch.randn_like(out)
    out.backward(g)
    return out.detach(), [t.grad for t in leaves], g


@pytest.mark.parametrize("shape", [(3, 5, 48), (17, 64)])    # 17 rows: a partial last program
def test_rmsnorm_matches_reference(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, device=DEV) * 3
    w = 1 + 0.1 * torch.randn(shape[-1], device=DEV)
    y, (gx, gw), g = _fwd_bwd(lambda a, b: rmsnorm(a, b, 1e-6), x, w)
    yr, (gxr, gwr), _ = _fwd_bwd(lambda a, b: rmsnorm_reference(a, b, 1e-6), x, w, grad=g)
    torch.testing.assert_close(y, yr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gxr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, gwr, atol=1e-5, rtol=1e-5)
    # the module is a drop-in for torch.nn.RMSNorm: same output and the same state dict keys
    ref = torch.nn.RMSNorm(shape[-1], eps=1e-6).to(DEV)
    mod = RMSNorm(shape[-1], eps=1e-6).to(DEV)
    mod.load_state_dict(ref.state_dict())
    torch.testing.assert_close(mod(x), ref(x), atol=1e-5, rtol=1e-5)


def test_rmsnorm_bf16_stats_in_fp32():
    torch.manual_seed(1)
    x = torch.randn(6, 40, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(40, device=DEV, dtype=torch.bfloat16)
    y = rmsnorm(x, w)
    assert y.dtype == torch.bfloat16
    # equal to the fp32 computation rounded once to bf16 (within one bf16 ulp)
    torch.testing.assert_close(y.float(), rmsnorm_reference(x.float(), w.float(), 1e-6), atol=0, rtol=2 ** -7)


@pytest.mark.parametrize("shape", [(5, 2 * 24), (2, 3, 2 * 1100)])   # 1100 > one column block
def test_swiglu_matches_reference(shape):
    torch.manual_seed(2)
    x = torch.randn(*shape, device=DEV) * 2
    y, (gx,), g = _fwd_bwd(swiglu, x)
    yr, (gxr,), _ = _fwd_bwd(swiglu_reference, x, grad=g)
    assert y.shape == (*shape[:-1], shape[-1] // 2)
    torch.testing.assert_close(y, yr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gxr, atol=1e-5, rtol=1e-5)


def test_swiglu_rejects_odd_width():
    with pytest.raises(ValueError, match="even"):
        swiglu(torch.randn(2, 5, device=DEV))


def _rope_tables(s: int, d: int, base: float = 10000.0):
    inv = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    f = torch.outer(torch.arange(s, dtype=torch.float32), inv)
    f = torch.cat([f, f], -1).to(DEV)
    return f.cos(), f.sin()


@pytest.mark.parametrize("s,b,h,d", [(6, 2, 3, 16), (5, 1, 4, 128)])   # Qwen3's head_dim 128
def test_qk_norm_rope_matches_reference(s, b, h, d):
    torch.manual_seed(3)
    x = torch.randn(s, b, h, d, device=DEV)
    w = 1 + 0.1 * torch.randn(d, device=DEV)
    cos, sin = _rope_tables(s, d)
    y, (gx, gw), g = _fwd_bwd(lambda a, c: qk_norm_rope(a, c, cos, sin, 1e-6), x, w)
    yr, (gxr, gwr), _ = _fwd_bwd(lambda a, c: qk_norm_rope_reference(a, c, cos, sin, 1e-6), x, w, grad=g)
    torch.testing.assert_close(y, yr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gxr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, gwr, atol=1e-4, rtol=1e-5)
    # position 0 is unrotated: there the op is the plain RMSNorm
    torch.testing.assert_close(y[0], rmsnorm_reference(x[0], w, 1e-6), atol=1e-5, rtol=1e-5)


def test_qk_norm_rope_reference_is_megatrons_rope():
    """The reference's rope is megatron-core's `apply_rotary_pos_emb` (non-interleaved, sbhd)."""
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    from kernels.qk_norm_rope import rope_reference

    torch.manual_seed(4)
    s, d = 7, 16
    y = torch.randn(s, 2, 3, d)
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    f = torch.outer(torch.arange(s, dtype=torch.float32), inv)
    freqs = torch.cat([f, f], -1)
    ours = rope_reference(y, freqs.cos(), freqs.sin())
    theirs = _apply_rotary_pos_emb_bshd(y, freqs[:, None, None, :], rotary_interleaved=False)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_qk_norm_rope_rejects_wrong_tables():
    cos, sin = _rope_tables(4, 16)
    with pytest.raises(ValueError, match="cos/sin"):
        qk_norm_rope(torch.randn(5, 1, 2, 16, device=DEV), torch.ones(16, device=DEV), cos, sin)


def test_swiglu_of_no_rows():
    """An MoE expert that received no tokens calls its MLP with an empty batch."""
    x = torch.randn(0, 8, device=DEV, requires_grad=True)
    y = swiglu(x)
    y.sum().backward()
    assert y.shape == (0, 4) and x.grad.shape == (0, 8)
