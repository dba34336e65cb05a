"""HF export/import: logits parity with the megatron forward (dense, MoE, EP=2), round trips."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import child_env
from tiny_export import tiny_checkpoint_and_export

from q3.config import ConfigError
from train.config import load_model_config
from train.hf_export import (
    _merge_qkv,
    _split_qkv,
    export_hf,
    hf_config,
    import_hf,
    load_megatron,
    megatron_to_hf,
    read_hf_folder,
)
from train.model import forward_logits

ROOT = Path(__file__).resolve().parents[2]


def _load_hf(path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                       attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.fixture(scope="module", params=["tiny_dense", "tiny_moe"])
def exported(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    model, cfg, _, _, meta = tiny_checkpoint_and_export(d, request.param)
    return model, cfg, d, meta


def test_logits_parity_with_transformers(exported):
    model, cfg, d, meta = exported
    tokens = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = forward_logits(model, tokens)
        hf = _load_hf(d / "hf")
        out = hf(input_ids=tokens).logits
    assert type(hf).__name__ == ("Qwen3MoeForCausalLM" if cfg.is_moe else "Qwen3ForCausalLM")
    assert out.shape == ref.shape == (2, 24, cfg.padded_vocab_size)
    assert ref.abs().max() > 0.1                      # not a degenerate all-zero comparison
    assert (out - ref).abs().max().item() < 1e-4


def test_folder_contents(exported):
    _, cfg, d, _ = exported
    hf = d / "hf"
    for f in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "vocab.json", "merges.txt", "_Q3_SUCCESS"):
        assert (hf / f).is_file(), f
    c = json.loads((hf / "config.json").read_text())
    assert c["head_dim"] == cfg.kv_channels and c["num_key_value_heads"] == cfg.num_query_groups
    assert c["tie_word_embeddings"] == cfg.tie_word_embeddings and c["rope_theta"] == cfg.rope_base
    if cfg.is_moe:
        assert (c["num_experts"], c["num_experts_per_tok"], c["moe_intermediate_size"]) == (8, 2, 64)
        assert c["norm_topk_prob"] is True
    g = json.loads((hf / "generation_config.json").read_text())
    assert (g["temperature"], g["top_p"], g["top_k"]) == (0.6, 0.95, 20)
    assert "enable_thinking" in json.loads((hf / "tokenizer_config.json").read_text())["chat_template"]
    _, tensors = read_hf_folder(hf)
    if cfg.is_moe:   # the canonical per-expert names of the published Qwen3-MoE checkpoints
        assert {f"model.layers.1.mlp.experts.{n}.down_proj.weight" for n in range(8)} <= set(tensors)
        assert "model.layers.0.mlp.gate.weight" in tensors
    assert ("lm_head.weight" in tensors) != cfg.tie_word_embeddings


def test_export_ships_the_tokenizer_of_q3_tokenizer_dir(exported, tmp_path, monkeypatch):
    """Q3_TOKENIZER_DIR decides which tokenizer files an export ships (q3.tokenizer.tokenizer_dir is the
    one place that resolves the folder); the exported folder's own files are then what generation reads."""
    import shutil

    from q3.tokenizer import ChatTokenizer, tokenizer_dir
    from train.hf_export import write_hf_folder

    model, cfg, _, _ = exported
    if cfg.is_moe:
        pytest.skip("the tokenizer copy does not depend on the model")
    src = tmp_path / "tok"
    src.mkdir()
    shutil.copyfile(tokenizer_dir() / "tokenizer.json", src / "tokenizer.json")
    tc = json.loads((tokenizer_dir() / "tokenizer_config.json").read_text())
    tc["chat_template"] = "COPY:" + tc["chat_template"]     # marks the copy in every rendered prompt
    (src / "tokenizer_config.json").write_text(json.dumps(tc))
    monkeypatch.setenv("Q3_TOKENIZER_DIR", str(src))
    write_hf_folder(model, cfg, tmp_path / "hf")
    shipped = sorted(p.name for p in (tmp_path / "hf").iterdir() if p.name.startswith(("tokenizer", "vocab", "merges")))
    assert shipped == ["tokenizer.json", "tokenizer_config.json"]          # no vocab/merges in the copy
    assert (tmp_path / "hf" / "tokenizer_config.json").read_bytes() == (src / "tokenizer_config.json").read_bytes()
    monkeypatch.delenv("Q3_TOKENIZER_DIR")
    tok = ChatTokenizer(tmp_path / "hf")
    assert tok.dir == tmp_path / "hf" and tok.render([{"role": "user", "content": "hi"}], thinking=True).startswith("COPY:")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("Q3_TOKENIZER_DIR", str(empty))
    with pytest.raises(ConfigError, match="lacks tokenizer.json, tokenizer_config.json"):
        write_hf_folder(model, cfg, tmp_path / "hf2")


def test_import_round_trip(exported, tmp_path):
    model, cfg, d, _ = exported
    import_hf(d / "hf", tmp_path / "ckpt")
    back, cfg2, _ = load_megatron(tmp_path / "ckpt")
    assert cfg2.family == cfg.family and cfg2.num_experts == cfg.num_experts
    a, b = model.state_dict(), back.state_dict()
    tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
    assert tensors and all(torch.equal(a[k], b[k]) for k in tensors)
    # and exporting the imported checkpoint again gives the same safetensors
    export_hf(tmp_path / "ckpt", tmp_path / "hf2")
    _, t1 = read_hf_folder(d / "hf")
    _, t2 = read_hf_folder(tmp_path / "hf2")
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    # a folder written by transformers itself (save_pretrained: its own config keys) imports too
    _load_hf(d / "hf").save_pretrained(tmp_path / "resaved")
    import_hf(tmp_path / "resaved", tmp_path / "ckpt3")
    again, _, _ = load_megatron(tmp_path / "ckpt3")
    assert all(torch.equal(a[k], again.state_dict()[k]) for k in tensors)


def test_qkv_interleaving_and_te_names():
    cfg = load_model_config("tiny_dense")          # 4 query heads, 2 KV groups, head_dim 16
    d, h = cfg.kv_channels, cfg.hidden_size
    # per group: [q0, q1, k, v] -- tag each row block with its head identity
    rows = []
    for grp in range(2):
        rows += [torch.full((d, h), 10.0 * grp + j) for j in range(4)]
    qkv = torch.cat(rows)
    q, k, v = _split_qkv(qkv, cfg)
    assert q[::d, 0].tolist() == [0.0, 1.0, 10.0, 11.0]
    assert k[::d, 0].tolist() == [2.0, 12.0] and v[::d, 0].tolist() == [3.0, 13.0]
    assert torch.equal(_merge_qkv(q, k, v, cfg), qkv)
    # Transformer Engine spec names (norms fused into the next linear, grouped experts)
    moe = load_model_config("tiny_moe")
    w = {"decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": torch.ones(h),
         "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": torch.ones(h) * 2,
         "decoder.layers.0.mlp.experts.linear_fc1.weight3": torch.arange(2 * 64 * h, dtype=torch.float).view(128, h),
         "decoder.layers.0.mlp.experts.linear_fc2.weight3": torch.ones(h, 64),
         "decoder.layers.0.self_attention.linear_qkv._extra_state": None}
    out = megatron_to_hf(w, moe)
    assert torch.equal(out["model.layers.0.post_attention_layernorm.weight"], torch.ones(h) * 2)
    assert "model.layers.0.input_layernorm.weight" in out
    assert torch.equal(out["model.layers.0.mlp.experts.3.up_proj.weight"], w[
        "decoder.layers.0.mlp.experts.linear_fc1.weight3"][64:])
    assert "model.layers.0.mlp.experts.3.down_proj.weight" in out


def test_config_rope_yarn_loads_in_transformers():
    from transformers import AutoConfig, Qwen3MoeConfig

    c = hf_config(load_model_config("tiny_moe"), rope_base=1_000_000, yarn=True)
    assert c["rope_scaling"] == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}
    hc = Qwen3MoeConfig(**{k: v for k, v in c.items() if k not in ("architectures", "model_type")})
    rp = hc.rope_parameters
    assert rp["rope_type"] == "yarn" and rp["rope_theta"] == 1_000_000 and rp["factor"] == 4.0
    assert AutoConfig.for_model("qwen3_moe").model_type == "qwen3_moe"


def test_cli_export(exported, tmp_path, capsys):
    from q3.cli import main

    _, cfg, d, _ = exported
    rc = main(["train", "export-hf", f"load={d / 'ckpt'}", f"out_dir={tmp_path / 'hf'}",
               "rope_base=1000000", "yarn=true"])
    assert rc in (0, None)
    c = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert c["rope_theta"] == 1e6 and c["rope_scaling"]["rope_type"] == "yarn"
    assert "export-hf" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.dist
def test_export_from_expert_parallel_checkpoint(tmp_path):
    """tiny MoE trained-layout with EP=2 (torchrun, 2 ranks, gloo): every expert is exported
    and the HF logits equal the distributed megatron forward's."""
    # this process may itself be a 1-rank torch.distributed job: don't leak its rendezvous env
    env = child_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests/train/ep_worker.py"), str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    hf = _load_hf(tmp_path / "hf")
    tokens, ref = torch.load(tmp_path / "tokens.pt"), torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        out = hf(input_ids=tokens).logits
    assert (out - ref).abs().max().item() < 1e-4
    # experts 4..7 lived on rank 1: their (rank-scaled) perturbation shows they were gathered
    _, t = read_hf_folder(tmp_path / "hf")
    stds = [t[f"model.layers.0.mlp.experts.{n}.down_proj.weight"].std().item() for n in range(8)]
    assert min(stds[4:]) > 1.5 * max(stds[:4])


@pytest.mark.slow
@pytest.mark.dist
def test_export_of_trainer_run_under_ep2(tmp_path, dev_manifests, tiny):
    """A real `train.pretrain` run (tiny MoE, S3 manifest: RoPE base 1e6) under torchrun with
    expert parallelism 2: the export of its run dir matches the trainer's forward."""
    from train.checkpoint import load_model

    env = child_env(OMP_NUM_THREADS="1", Q3_PROGRESS="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "train.pretrain", f"out_dir={tmp_path / 'run'}", "tensorboard=false", *tiny,
           f"manifest={dev_manifests['S3']}", "train_steps=2", "parallel.expert_model_parallel_size=2"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = export_hf(tmp_path / "run", tmp_path / "hf")
    assert meta["rope_base"] == 1e6
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["rope_theta"] == 1e6
    model, cfg, ckmeta = load_model(tmp_path / "run")
    assert ckmeta["parallel"]["expert_model_parallel_size"] == 2
    tokens = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = forward_logits(model, tokens)
        out = _load_hf(tmp_path / "hf")(input_ids=tokens).logits
    assert (out - ref).abs().max().item() < 1e-4
