"""The built megatron GPTModel has Qwen3's architecture (checked on the module tree, in a fresh
process because megatron's parallel state and the CPU shims are process-global)."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import child_env

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, torch
from train.config import load_model_config
from train.model import init_parallel, build_model, forward_logits, moe_routers, destroy_parallel
if __name__ == "__main__":
    init_parallel()
    out = {}
    for name in ("tiny_dense", "tiny_moe"):
        cfg = load_model_config(name)
        m = build_model(cfg, seq_length=32, rope_base=1e6)
        names = dict(m.named_parameters())
        attn = m.decoder.layers[0].self_attention
        out[name] = {
            "n_params": sum(p.numel() for p in m.parameters()),
            "expected": cfg.num_params(),
            "biases": [n for n in names if n.endswith(".bias")],
            "q_norm": type(attn.q_layernorm).__name__, "k_norm": type(attn.k_layernorm).__name__,
            "qkv_out": attn.linear_qkv.weight.shape[0],
            "tied": m.share_embeddings_and_output_weights,
            "norm": type(m.decoder.final_layernorm).__name__,
            "rope_base": m.rotary_pos_emb.inv_freq[1].item(),
            "routers": len(moe_routers(m)),
            "shared_experts": any("shared_experts" in n for n in names),
            "logits": list(forward_logits(m, torch.randint(0, 151669, (2, 32))).shape),
        }
    destroy_parallel()
    print(json.dumps(out))
"""


def test_qwen3_architecture():
    env = child_env()
    p = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["n_params"] == r["expected"], name
        assert r["biases"] == []                                  # no bias anywhere
        assert "Norm" in r["q_norm"] and "Norm" in r["k_norm"]    # QK-Norm
        assert r["qkv_out"] == (4 + 2 * 2) * 16                   # GQA: 4 q heads, 2 kv groups, head_dim 16
        assert r["logits"] == [2, 32, 151936]
        assert abs(r["rope_base"] - 1e6 ** (-2 / 16)) < 1e-6      # RoPE base from the stage
    assert out["tiny_dense"]["tied"] and not out["tiny_moe"]["tied"]
    assert out["tiny_moe"]["routers"] == 2 and not out["tiny_moe"]["shared_experts"]
    assert out["tiny_dense"]["routers"] == 0
