"""CPU shims for megatron-core, all in one place.

megatron-core assumes CUDA in a handful of spots outside the model (schedules, FP32Optimizer,
grad clipping, RNG tracker, router buffers). On a CPU-only torch these calls fail, so
`install_cpu_shims()` reroutes them to the CPU. Nothing here changes the maths: the model code
itself is untouched and picks its implementation through layer specs chosen by config.

On a machine with CUDA, `install_cpu_shims()` is never called (see `install_if_needed`).
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_INSTALLED = False
_MODE: TorchFunctionMode | None = None


def _cpu_device(device):
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu")
    d = torch.device(device) if isinstance(device, str) else device
    return torch.device("cpu") if isinstance(d, torch.device) and d.type == "cuda" else device


class CudaToCpuMode(TorchFunctionMode):
    """Map `device="cuda"` (megatron's schedules and optimizers hard-code it) to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        if func in (torch.Tensor.cuda,):
            return args[0]
        if func is torch.Tensor.to:
            args = tuple(_cpu_device(a) if isinstance(a, (str, torch.device)) else a for a in args)
        return func(*args, **kwargs)


def _cpu_clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """CPU version of megatron's clip (the original asserts torch.cuda.FloatTensor grads)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0:
        for p in parameters:
            g = getattr(p, "decoupled_grad", None) if use_decoupled_grad else p.grad
            if g is not None:
                g.detach().mul_(clip_coeff)


def patch_megatron_without_te() -> None:
    """megatron-core 0.16.1 references `te_general_gemm` in the MoE router even when Transformer
    Engine is absent (NameError); define it as None so the plain torch GEMM path runs."""
    import megatron.core.transformer.moe.moe_utils as mu

    if not hasattr(mu, "te_general_gemm"):
        mu.te_general_gemm = None


def install_cpu_shims() -> None:
    """Idempotently patch megatron-core / torch.cuda entry points used outside the model."""
    global _INSTALLED, _MODE
    if _INSTALLED:
        return
    import megatron.core.optimizer.optimizer as mopt
    import megatron.core.tensor_parallel.random as mrand

    cpu_gen = torch.default_generator
    torch.cuda.current_device = lambda: "cpu"          # buffers: device=torch.cuda.current_device()
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.get_rng_state = lambda *a, **k: cpu_gen.get_state()
    torch.cuda.set_rng_state = lambda state, *a, **k: cpu_gen.set_state(state)
    torch.cuda.manual_seed = lambda seed: None           # torch.manual_seed already seeds the CPU
    torch.cuda.manual_seed_all = lambda seed: None
    mrand._get_cuda_rng_state = lambda *a, **k: cpu_gen.get_state()
    mrand._set_cuda_rng_state = lambda state, *a, **k: cpu_gen.set_state(state)
    mopt.clip_grad_by_total_norm_fp32 = _cpu_clip_grad_by_total_norm_fp32
    patch_megatron_without_te()
    _MODE = CudaToCpuMode()
    _MODE.__enter__()
    _INSTALLED = True


def install_if_needed(force_cpu: bool = False) -> bool:
    """Install the CPU shims when there is no CUDA (or when asked). Returns True if installed."""
    if force_cpu or not torch.cuda.is_available():
        install_cpu_shims()
        return True
    return False


def causal_attention_mask(seq_length: int) -> torch.Tensor:
    """megatron's local (non-TE) attention wants an explicit mask: True = masked out."""
    return torch.triu(torch.ones(1, 1, seq_length, seq_length, dtype=torch.bool), diagonal=1)
