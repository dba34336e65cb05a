"""kernels/fp8.py against hand-computed cases and Transformer Engine's documented behaviour, and
the emulated linear's forward/backward against the GEMMs TE's FP8 linear performs."""

import pytest
import torch

from kernels.fp8 import (
    E4M3,
    E5M2,
    BlockScaling,
    CurrentScaling,
    DelayedScaling,
    block_scales,
    cast_to_fp8,
    fake_quant,
    make_quantizer,
    scale_from_amax,
)
from kernels.fp8_emulation import apply_fp8_emulation, set_fp8_emulation


def test_cast_saturates_where_torch_alone_does_not():
    x = torch.tensor([500.0, -1000.0, 448.0, 1e-9])
    assert torch.isinf(torch.tensor([1e5]).to(E5M2).float()).all()   # why cast_to_fp8 clamps first
    assert cast_to_fp8(x, 1.0, E4M3).float().tolist() == [448.0, -448.0, 448.0, 0.0]
    assert cast_to_fp8(torch.tensor([1e5, -7e4]), 1.0, E5M2).float().tolist() == [57344.0, -57344.0]


def test_rounding_to_nearest_even():
    # E4M3: 3 mantissa bits -> steps of 1/8 in [1, 2); E5M2: 2 bits -> steps of 1/4.
    x = torch.tensor([1.0625, 1.1, 1.2])
    assert fake_quant(x, 1.0, E4M3).tolist() == [1.0, 1.125, 1.25]   # 1.0625 is a tie -> even (1.0)
    assert fake_quant(x, 1.0, E5M2).tolist() == [1.0, 1.0, 1.25]


def test_scale_from_amax_te_formula():
    # scale = (fp8_max / amax) / 2**margin
    assert scale_from_amax(torch.tensor(2.0), 448.0).item() == 224.0
    assert scale_from_amax(torch.tensor(2.0), 448.0, margin=1).item() == 112.0
    assert scale_from_amax(torch.tensor(4.0), 57344.0).item() == 14336.0
    # amax 0 or non-finite: keep the previous scale (1 when none), as TE does
    prev = torch.tensor(7.0)
    assert scale_from_amax(torch.tensor(0.0), 448.0, prev_scale=prev).item() == 7.0
    assert scale_from_amax(torch.tensor(float("inf")), 448.0, prev_scale=prev).item() == 7.0
    assert scale_from_amax(torch.tensor(0.0), 448.0).item() == 1.0
    assert scale_from_amax(torch.tensor(3.0), 448.0, power_2=True).item() == 128.0   # 149.3 -> 2^7


def _delayed_scales(algo):
    q = DelayedScaling(E4M3, history_len=3, algo=algo)
    used = []
    for amax in (1.0, 4.0, 2.0, 0.5, 0.25):
        used.append(q.scale.item())
        q(torch.tensor([amax, -amax / 2]))
    return used, q


def test_delayed_scaling_max_over_a_rolling_window():
    # Hand-computed: call t uses the scale from the amaxes of calls < t; window of 3 updates.
    used, q = _delayed_scales("max")
    assert used == [1.0, 448.0, 112.0, 112.0, 112.0]
    assert q.scale.item() == 224.0               # 4.0 has left the window: max(2, .5, .25) = 2
    assert q.amax_history.tolist() == [0.0, 0.5, 0.25]   # rotated by -1, slot 0 zeroed


def test_delayed_scaling_most_recent():
    used, q = _delayed_scales("most_recent")
    assert used == [1.0, 448.0, 112.0, 224.0, 896.0]
    assert q.scale.item() == 1792.0


def test_delayed_scaling_saturates_on_a_growing_amax():
    # The known cost of delayed scaling: a jump above the history's amax is clipped.
    q = DelayedScaling(E4M3, history_len=4)
    q(torch.tensor([1.0]))                      # scale -> 448
    assert q(torch.tensor([4.0, 0.5])).tolist() == [1.0, 0.5]


def test_current_scaling_maps_amax_to_fp8_max():
    x = torch.tensor([[0.3, -2.0], [1.0, 0.01]])
    y = CurrentScaling(E4M3)(x)
    assert cast_to_fp8(x, 224.0, E4M3).float().abs().max().item() == 448.0
    assert y[0, 1].item() == -2.0 and y[1, 0].item() == 1.0   # exact: scaled to 448 and 224
    assert torch.allclose(y, x, rtol=2 ** -4)   # E4M3: relative error <= 2^-4 in the normal range


def test_blockwise_scales_and_why_blocks_help():
    x = torch.zeros(2, 256)
    x[0, :128], x[0, 128:], x[1] = 1e-3, 1000.0, 3.0
    s = block_scales(x, (1, 128), E4M3)
    # power-of-2 scales: 448/1e-3 -> 2^18, 448/1000 -> 2^-2 (0.448 rounded down), 448/3 -> 2^7
    assert s.tolist() == [[2.0 ** 18, 0.25], [128.0, 128.0]]
    assert block_scales(torch.ones(130, 200), (128, 128), E4M3).shape == (2, 2)
    # one tensor-wide scale flushes the small block to zero; 1x128 blocks keep it
    assert CurrentScaling(E4M3)(x)[0, :128].abs().max().item() == 0.0
    assert torch.allclose(BlockScaling(E4M3)(x)[0, :128], x[0, :128], rtol=2 ** -4)
    w = BlockScaling(E4M3, (128, 128))(torch.randn(130, 200))
    assert w.shape == (130, 200) and torch.isfinite(w).all()


def test_formats_per_recipe():
    # HYBRID (TE's default for delayed/current): E4M3 forward, E5M2 grads; blockwise: E4M3 both
    assert make_quantizer("delayed", "input").dtype == E4M3
    assert make_quantizer("delayed", "grad").dtype == E5M2
    assert make_quantizer("current", "grad").dtype == E5M2
    assert make_quantizer("blockwise", "grad").dtype == E4M3
    assert make_quantizer("blockwise", "grad", fmt="hybrid").dtype == E5M2
    assert make_quantizer("delayed", "grad", fmt="e4m3").dtype == E4M3
    assert make_quantizer("blockwise", "weight").block == (128, 128)
    assert make_quantizer("blockwise", "input").block == (1, 128)
    with pytest.raises(ValueError, match="recipe"):
        make_quantizer("mxfp8", "input")
    assert CurrentScaling(E4M3)(torch.zeros(0, 4)).shape == (0, 4)   # an expert without tokens


class _Linear(torch.nn.Module):
    """Shaped like megatron's parallel linears: a `weight` and a `_forward_impl(input, weight)`."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, 5))

    def _forward_impl(self, input, weight, **_):
        return torch.nn.functional.linear(input, weight)

    def forward(self, x):
        return self._forward_impl(x, self.weight)


def test_emulated_linear_forward_and_backward_gemms():
    torch.manual_seed(0)
    net = torch.nn.Sequential(_Linear())
    assert apply_fp8_emulation(net, "current") == ["0"]
    x = torch.randn(4, 5, requires_grad=True)
    g = torch.randn(4, 6) * 1e-3
    y = net(x)
    y.backward(g)
    fq = CurrentScaling(E4M3)
    xq, wq, gq = fq(x.detach()), fq(net[0].weight.detach()), CurrentScaling(E5M2)(g)
    assert torch.equal(y, xq @ wq.T)                           # y = Q(x) Q(w)^T
    assert torch.allclose(x.grad, gq @ wq, rtol=1e-6)          # dgrad from the E5M2 grad-output
    assert torch.allclose(net[0].weight.grad, gq.T @ xq, rtol=1e-6)   # wgrad likewise
    assert not torch.allclose(x.grad, g @ net[0].weight.detach(), rtol=1e-4)
    set_fp8_emulation(net, False)                              # off: the plain GEMM, bit for bit
    assert torch.equal(net(x), x @ net[0].weight.T)
