"""Emulated FP8 in the real megatron-core tiny models (local spec, CPU): off = the same logits bit
for bit, on = close logits, and a few training steps stay finite and near the fp32 baseline.
The model part runs in a fresh process: megatron's parallel state and the CPU shims are global."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from q3.config import ConfigError, load_config
from train.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, torch
from kernels.fp8_emulation import FP8Emulation, set_fp8_emulation
from train.config import load_model_config
from train.model import build_model, destroy_parallel, forward_logits, init_parallel

def build(name, recipe):
    torch.manual_seed(0)
    return build_model(load_model_config(name, {"fp8_emulation": recipe}), seq_length=32)

def train(model, tokens, steps=2):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        logits = forward_logits(model, tokens[:, :-1]).float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses

init_parallel()
out = {}
tokens = torch.randint(0, 5000, (2, 17), generator=torch.Generator().manual_seed(1))
for name in ("tiny_dense", "tiny_moe"):
    base, emu = build(name, None), build(name, "delayed")
    wrapped = [n for n, m in emu.named_modules() if isinstance(getattr(m, "_forward_impl", None), FP8Emulation)]
    with torch.no_grad():
        ref = forward_logits(base, tokens)
        forward_logits(emu, tokens)        # delayed scaling: the first call only fills the amax history
        on = forward_logits(emu, tokens)
        set_fp8_emulation(emu, False)
        off = forward_logits(emu, tokens)
        set_fp8_emulation(emu, True)
    out[name] = {
        "wrapped": wrapped,
        "base_wrapped": sum(isinstance(getattr(m, "_forward_impl", None), FP8Emulation) for m in base.modules()),
        "off_identical": torch.equal(off, ref),
        "on_rel_err": ((on - ref).norm() / ref.norm()).item(),
        "base_losses": train(base, tokens),
        "fp8_losses": train(emu, tokens),
    }
destroy_parallel()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    p = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["tiny_dense", "tiny_moe"])
def test_emulation_wraps_the_gemms_and_off_is_bit_identical(probe, name):
    r = probe[name]
    assert r["base_wrapped"] == 0
    assert not any("output_layer" in n for n in r["wrapped"])          # LM head stays high precision
    per_layer = 4 if name == "tiny_dense" else 2 + 2 * 8                # qkv, proj + fc1/fc2 (per expert)
    assert len(r["wrapped"]) == 2 * per_layer
    assert r["off_identical"]
    assert 0 < r["on_rel_err"] < 0.05                                   # quantised, yet close


@pytest.mark.parametrize("name", ["tiny_dense", "tiny_moe"])
def test_a_few_fp8_training_steps_track_the_baseline(probe, name):
    base, fp8 = probe[name]["base_losses"], probe[name]["fp8_losses"]
    assert all(x == x and abs(x) < 1e3 for x in fp8)                    # finite
    assert fp8[-1] < fp8[0]                                             # it learns
    assert all(abs(a - b) / a < 0.02 for a, b in zip(base, fp8, strict=True)), (base, fp8)


def test_emulation_config_is_checked():
    cfg = load_config(ModelConfig, "model", "tiny_moe", ["fp8_emulation=blockwise"])
    assert cfg.fp8_emulation == "blockwise" and cfg.fp8_emulation_format is None
    with pytest.raises(ConfigError, match="fp8_emulation needs transformer_impl: local"):
        load_config(ModelConfig, "model", "tiny_dense", ["fp8_emulation=delayed", "transformer_impl=transformer_engine"])
    with pytest.raises(ConfigError, match="fp8_emulation"):
        load_config(ModelConfig, "model", "tiny_dense", ["fp8_emulation=mxfp8"])
