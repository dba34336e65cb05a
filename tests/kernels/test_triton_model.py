"""`triton_kernels` in the local spec: the tiny dense and MoE models give the same logits and
gradients with the Triton kernels on as with megatron's PyTorch modules (same weights), and
the kernels really ran. In a fresh process: megatron's parallel state and the CPU shims are
process-global (as tests/train/test_model.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

PROBE = r"""
import json, torch
import kernels.moe_permute, kernels.qk_norm_rope, kernels.rmsnorm, kernels.swiglu
from train.config import load_model_config
from train.model import init_parallel, build_model, forward_logits, destroy_parallel

calls = {"rmsnorm": 0, "swiglu": 0, "qk_norm_rope": 0, "permute": 0, "unpermute": 0}
def spy(module, name):                      # count calls; the real kernel still runs
    real = getattr(module, name)
    def wrapped(*a, **k):
        calls[name] += 1
        return real(*a, **k)
    setattr(module, name, wrapped)
spy(kernels.rmsnorm, "rmsnorm"); spy(kernels.swiglu, "swiglu"); spy(kernels.qk_norm_rope, "qk_norm_rope")
spy(kernels.moe_permute, "permute"); spy(kernels.moe_permute, "unpermute")

ALL = ["rmsnorm", "swiglu", "qk_norm_rope", "moe_permute"]
if __name__ == "__main__":
    init_parallel()
    out = {}
    tokens = torch.randint(0, 151669, (2, 8), generator=torch.Generator().manual_seed(0))
    for name in ("tiny_dense", "tiny_moe"):
        cfg = load_model_config(name)
        base = build_model(cfg, seq_length=8)
        kern = build_model(load_model_config(cfg, {"triton_kernels": ALL}),
                           seq_length=8)
        kern.load_state_dict(base.state_dict())          # strict: the same keys
        res = {}
        for tag, m in (("base", base), ("kern", kern)):
            for k in calls: calls[k] = 0
            logits = forward_logits(m, tokens)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     tokens[:, 1:].reshape(-1))
            loss.backward()
            res[tag] = (logits.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None},
                        dict(calls))
        (lb, gb, _), (lk, gk, ck) = res["base"], res["kern"]
        layer = kern.decoder.layers[0]
        mlps = [layer.mlp] if cfg.family == "dense" else list(layer.mlp.experts.local_experts)
        out[name] = {"logit_err": (lb - lk).abs().max().item(), "logit_max": lb.abs().max().item(),
                     "grad_err": max((gb[n] - gk[n]).abs().max().item() for n in gb),
                     "grad_names_equal": sorted(gb) == sorted(gk), "calls": ck,
                     "attn": type(layer.self_attention).__name__,
                     "norms": sorted({type(m).__name__ for m in (layer.input_layernorm, layer.pre_mlp_layernorm,
                                                                layer.self_attention.q_layernorm)}),
                     "mlps": sorted({type(m).__name__ for m in mlps})}
    destroy_parallel()
    print(json.dumps(out))
"""


def test_tiny_models_unchanged_with_triton_kernels():
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    # the CPU path on any machine (shims + interpreter); the kernels' GPU runs are the other files'
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["attn"] == "KernelSelfAttention" and r["norms"] == ["KernelRMSNorm"], name
        assert r["mlps"] == ["KernelMLP"], name
        # the kernels ran: 2 layers x (input + pre-MLP norm), q and k per layer, one SwiGLU per MLP call
        assert r["calls"]["rmsnorm"] == 4 and r["calls"]["qk_norm_rope"] == 4, (name, r["calls"])
        assert r["calls"]["swiglu"] >= 2, (name, r["calls"])
        moe = name == "tiny_moe"            # one permute and one unpermute per MoE layer, none when dense
        assert r["calls"]["permute"] == r["calls"]["unpermute"] == (2 if moe else 0), (name, r["calls"])
        assert r["logit_err"] <= 1e-5 * max(1.0, r["logit_max"]), (name, r)
        assert r["grad_names_equal"] and r["grad_err"] <= 1e-5, (name, r)


def test_config_rejects_kernels_outside_the_local_spec():
    from train.config import load_model_config

    with pytest.raises(ValueError, match="transformer_impl: local"):
        load_model_config("tiny_dense", {"triton_kernels": ["rmsnorm"], "transformer_impl": "transformer_engine"})
    with pytest.raises(ValueError, match="triton_kernels"):
        load_model_config("tiny_dense", {"triton_kernels": ["layernorm"]})
    with pytest.raises(ValueError, match="allgather"):
        load_model_config("tiny_moe", {"triton_kernels": ["moe_permute"], "moe_token_dispatcher_type": "alltoall"})
    assert load_model_config("tiny_dense").triton_kernels == []      # off by default
