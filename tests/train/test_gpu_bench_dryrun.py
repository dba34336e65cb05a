"""bench/gpu dry run: FLOPs per token by Megatron-LM's formula against a GEMM-by-GEMM count,
argument parsing, the wheel plan and size report, and the whole benchmark on CPU at tiny size
(real trainer, real dev tokens) writing its JSON and table."""

from __future__ import annotations

import json

import pytest

from bench.gpu import fetch_wheels, run
from bench.gpu.flops import megatron_flops_per_token, peak_flops
from train.config import load_model_config


def _gemm_count(m, seq: int) -> float:
    """Training FLOPs per token counted GEMM by GEMM: 2 FLOPs per multiply-add, x3 for forward,
    dgrad and wgrad; only the top-k experts a token is routed to; causal scores are half of s."""
    h, q, kv = m.hidden_size, m.num_attention_heads * m.kv_channels, m.num_query_groups * m.kv_channels
    proj = h * q + 2 * h * kv + q * h                        # Q, K, V, O
    scores = 2 * (seq / 2) * q                               # QK^T and PV over half the positions
    if m.family == "moe":
        mlp = m.moe_router_topk * 3 * h * m.moe_ffn_hidden_size
    else:
        mlp = 3 * h * m.ffn_hidden_size
    head = h * m.padded_vocab_size
    return 3 * 2 * (m.num_layers * (proj + scores + mlp) + head)


@pytest.mark.parametrize("name,seq", [("qwen3_1.7b", 4096), ("qwen3_30b_a3b", 4096), ("tiny_moe", 32)])
def test_flops_per_token_is_megatron_formula(name, seq):
    m = load_model_config(name)
    assert megatron_flops_per_token(m, seq) == pytest.approx(_gemm_count(m, seq), rel=1e-12)


def test_flops_hand_values():
    # Qwen3-1.7B cut to 16 layers, 4096 tokens: 12*16*2048^2*((1+8/16+1)*1 + 3*1.5 + 151936/(2*16*2048))
    dense = load_model_config("qwen3_1.7b", {"num_layers": 16})
    assert megatron_flops_per_token(dense, 4096) == pytest.approx(
        12 * 16 * 2048**2 * (2.5 + 4.5 + 151936 / 65536), rel=1e-12)
    # 30B-A3B: 8 of 128 experts are active; counting all experts would be 16x the MLP term
    moe = load_model_config("qwen3_30b_a3b")
    mlp_active = 12 * 48 * 2048**2 * (768 / 2048 * 8 * 1.5)
    assert megatron_flops_per_token(moe, 4096) == pytest.approx(
        12 * 48 * 2048**2 * ((1 + 4 / 32 + 1) * 2 + 151936 / (2 * 48 * 2048)) + mlp_active, rel=1e-12)
    # ~6 x 3.0B active non-embedding params + the LM head + causal attention at 4096 tokens
    assert 2.0e10 < megatron_flops_per_token(moe, 4096) < 2.6e10
    assert peak_flops("NVIDIA H200", "bf16") == 989.4e12 and peak_flops("NVIDIA H200", "fp8") == 1978.9e12
    assert peak_flops("Some CPU") is None


def test_argument_parsing(tmp_path, capsys):
    a = run.parse_args(["--out", str(tmp_path)])
    assert (a.dry_run, a.steps, a.loss_steps, a.budget_s) == (False, 6, 120, 450.0)
    assert a.precisions.split(",") == ["bf16", "fp8_delayed", "fp8_current"]
    d = run.parse_args(["--out", str(tmp_path), "--dry-run"])
    assert (d.steps, d.loss_steps) == (1, 2)
    with pytest.raises(SystemExit) as e:
        run.parse_args(["--out", str(tmp_path), "--precisions", "bf16,fp4"])
    assert e.value.code == 2 and "unknown ['fp4']" in capsys.readouterr().err
    full = run.plan(dry_run=False)
    assert full["models"]["dense_1b"] == ("qwen3_1.7b", {"num_layers": 16}, 4, 4096)
    assert full["models"]["moe_30b_a3b_4l"][0] == "qwen3_30b_a3b" and full["loss"][0] == "qwen3_0.6b"


def test_wheel_plan_and_size_report(tmp_path, capsys):
    cmd = fetch_wheels.pip_download_cmd("megatron-core==0.16.1", tmp_path)
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in cmd
    assert "manylinux_2_28_x86_64" in cmd and "--no-deps" in cmd
    assert any(w.startswith("megatron-core==") for w in fetch_wheels.WHEELS)
    assert not any(w.startswith("torch") for w in fetch_wheels.WHEELS)     # the GPU machine has its torch
    assert fetch_wheels.main(["--dry-run", "--with-te", "--dest", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(fetch_wheels.WHEELS) + len(fetch_wheels.TE_WHEELS) and not any(tmp_path.iterdir())
    small, big = tmp_path / "a.whl", tmp_path / "b.whl"
    small.write_bytes(b"x" * 1000)
    with open(big, "wb") as f:
        f.truncate(65 * 2**20)                                           # a sparse 65 MiB file
    rep = fetch_wheels.size_report([small, big])
    assert rep["over_limit"] == ["b.whl"] and not rep["fits"] and rep["total_bytes"] == 1000 + 65 * 2**20
    assert fetch_wheels.size_report([small])["fits"]


def test_install_wheels_unpacks_into_a_path_entry(tmp_path, monkeypatch):
    import sys
    import zipfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "q3probe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("q3probe/__init__.py", "VALUE = 42\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert run.install_wheels(wheels, tmp_path / "site") == ["q3probe-1.0-py3-none-any.whl"]
    assert sys.path[-1] == str(tmp_path / "site")                        # installed packages keep precedence
    import q3probe

    assert q3probe.VALUE == 42
    sys.modules.pop("q3probe")


def test_dry_run_writes_json_and_table(tmp_path):
    """The whole benchmark on CPU: tiny dense + MoE through the real trainer, the loss comparison on
    real dev tokens (Qwen3 tokenizer); FP8 parts recorded as skipped with the reason."""
    tokens = fetch_wheels.write_dev_tokens(tmp_path / "devtokens.npy", max_files=4, max_tokens=20000)
    assert tokens["tokens"] > 3 * 2 * 2 * 33
    out = tmp_path / "out"
    assert run.main(["--out", str(out), "--dry-run", "--tokens", tokens["path"]]) == 0
    res = json.loads((out / "gpu_bench.json").read_text())
    assert res["dry_run"] and res["device"]["device"].startswith("CPU") and res["te"] is False
    mm = {r["dtype"]: r for r in res["matmul"]}
    assert mm["bf16"]["tflops"] > 0 and "CUDA" in mm["fp8_e4m3"]["skipped"]
    rows = {(r["model"], r["precision"]): r for r in res["models"]}
    assert set(rows) == {(m, p) for m in ("dense", "moe") for p in run.PRECISIONS}
    for m, conf in (("dense", "tiny_dense"), ("moe", "tiny_moe")):
        r = rows[(m, "bf16")]
        assert "error" not in r, r
        assert r["tokens_per_s"] > 0 and r["tflops_per_gpu"] > 0 and r["mfu"] is None
        assert r["flops_per_token"] == megatron_flops_per_token(load_model_config(conf), 32)
        assert 10 < r["first_loss"] < 13                                 # ~ln(151936) at init
        assert "Transformer Engine" in rows[(m, "fp8_delayed")]["skipped"]
    runs = res["loss"]["runs"]
    assert len(runs["bf16"]["losses"]) == 2 and runs["bf16"]["gap_to_bf16"] == 0.0
    assert "Transformer Engine" in runs["fp8_current"]["skipped"]
    md = (out / "gpu_bench.md").read_text()
    assert "## Matmul ceilings" in md and "## Trainer throughput" in md and "| moe | bf16 | local | 2x32 |" in md
