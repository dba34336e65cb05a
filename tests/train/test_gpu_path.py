"""Issue 16 defects of the GPU path, tested on CPU where the numerics allow: the model placed on its
device with the router (1), router counters kept fp32 in bf16 (2), eval accumulators on the model's
device (3), gradient-accumulation fusion not tied to the other fusions (4), no seq x seq mask for
TE (5), export of a TE/FP8-trained checkpoint without TE (6), the `gpu` extra's pins (7), FP8
recipes checked against the device (8), the scale features as config with the 30B-A3B recipe (9).
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
import torch

from q3.config import ConfigError, load_config
from train.config import CoreConfig, ModelConfig, TrainConfig, load_model_config
from train.model import (
    attention_mask,
    build_model,
    check_fp8_support,
    cuda_env,
    forward_logits,
    inference_config,
    init_parallel,
    moe_routers,
    needs_attention_mask,
    transformer_config_kwargs,
)

ROOT = Path(__file__).resolve().parents[2]


def _te(name: str = "tiny_moe", **kw) -> ModelConfig:
    return load_model_config(name, {"transformer_impl": "transformer_engine", **kw})


# ---------------------------------------------------------------- defects 1 and 2
def test_build_model_moves_every_tensor_incl_router_to_the_device():
    """(1) megatron's TopKRouter.weight is always created on the CPU; build_model must move the
    whole model (the `meta` device stands in for CUDA here: nothing may stay on the CPU)."""
    init_parallel()
    cfg = load_model_config("tiny_moe", {"params_dtype": "bfloat16"})
    model = build_model(cfg, seq_length=16, device="meta")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert len(moe_routers(model)) == cfg.num_layers
    assert {n: t.device.type for n, t in tensors.items() if t.device.type != "meta"} == {}
    assert all(r.weight.device.type == "meta" for r in moe_routers(model))


def test_bf16_router_counters_stay_fp32_and_count_exactly():
    """(2) model.to(bf16) used to cast the global-LBL counters: ga_steps froze at 256 and per-expert
    counts above 256 dropped +1 increments. 300 routed microbatches must count exactly."""
    assert float(torch.tensor(256.0, dtype=torch.bfloat16) + 1) == 256.0   # the bug, in one line
    init_parallel()
    cfg = load_model_config("tiny_moe", {"params_dtype": "bfloat16"})
    torch.manual_seed(0)
    model = build_model(cfg, seq_length=16).train()
    router = moe_routers(model)[0]
    assert router.weight.dtype == torch.bfloat16                          # the model itself is bf16
    assert router.global_tokens_per_expert.dtype == router.ga_steps.dtype == torch.float32
    tokens, steps = 4, 300
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(tokens, 1, cfg.hidden_size, generator=g).to(torch.bfloat16).requires_grad_()
        router(x)
    assert float(router.ga_steps) == steps
    counts = router.global_tokens_per_expert
    assert float(counts.sum()) == steps * tokens * cfg.moe_router_topk
    assert float(counts.max()) > 256                                      # past bf16's exact range


# ---------------------------------------------------------------- defect 3
def test_eval_accumulators_live_on_the_model_device(tmp_path, monkeypatch):
    """(3) forward_only all-reduces its sums: they must be created on the trainer's device (a CPU
    tensor crashed NCCL). On CPU: the eval path works and equals the per-token mean computed
    by hand, and every all-reduced tensor is on the trainer's device."""
    from train.core import Trainer, schedule_from_config

    cfg = CoreConfig.model_validate({"model": "tiny_dense", "micro_batch_size": 2, "global_batch_size": 2,
                                     "train_steps": 1, "tensorboard": False, "save": False, "optim": {"lr": 1e-3}})
    t = Trainer(cfg, load_model_config(cfg.model), 16, 10000.0, schedule_from_config(cfg), tmp_path)
    seen: list[torch.device] = []
    real = torch.distributed.all_reduce

    def spy(tensor, *a, **k):
        seen.append(tensor.device)
        return real(tensor, *a, **k)

    monkeypatch.setattr(torch.distributed, "all_reduce", spy)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 1000, (4, 17), generator=g)
    mbs = [{"tokens": x[i:i + 2, :-1], "labels": x[i:i + 2, 1:], "loss_mask": torch.ones(2, 16)} for i in (0, 2)]
    out = t.forward_only(mbs, 1)
    with torch.no_grad():
        pos, mask = torch.arange(16).expand(2, 16), attention_mask("local", 16, "cpu")
        ce = torch.cat([t.model(m["tokens"], pos, mask, labels=m["labels"]).flatten() for m in mbs])
    t.close()
    assert out["n_tokens"] == 64 and abs(out["loss"] - float(ce.mean())) < 1e-5
    assert seen and all(d == t.device for d in seen)


# ---------------------------------------------------------------- defect 4
def test_gradient_accumulation_fusion_is_not_tied_to_fusions():
    """(4) the non-TE LM head needs APEX for gradient_accumulation_fusion: `fusions` must not turn it on."""
    kw = transformer_config_kwargs(_te(fusions=True))
    assert kw["apply_rope_fusion"] and kw["bias_activation_fusion"] and kw["masked_softmax_fusion"]
    assert kw["gradient_accumulation_fusion"] is False
    assert transformer_config_kwargs(_te(gradient_accumulation_fusion=True))["gradient_accumulation_fusion"]


# ---------------------------------------------------------------- defect 5
def test_te_gets_no_mask_and_local_logits_are_unchanged():
    """(5) TE runs causal kernels: it is handed no [b,1,s,s] mask; the local spec still gets the
    causal mask, and forward_logits equals the model called with the explicit mask."""
    from train.shims import causal_attention_mask

    assert needs_attention_mask("local") and not needs_attention_mask("transformer_engine")
    assert attention_mask("transformer_engine", 32768, "cpu") is None
    assert torch.equal(attention_mask("local", 8, "cpu"), causal_attention_mask(8))
    init_parallel()
    torch.manual_seed(1)
    model = build_model(load_model_config("tiny_dense"), seq_length=16).eval()
    tokens = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = forward_logits(model, tokens)
        ref = model(tokens, torch.arange(12).expand(2, 12), causal_attention_mask(12))
    assert torch.equal(got, ref) and got.abs().max() > 0.1


def test_trainer_hands_te_no_mask():
    """The trainer's batch preparation (the real method, on a stand-in holding only the state it
    reads): a TE trainer passes attention_mask None, a local one the cached causal mask."""
    from types import SimpleNamespace

    from train.core import Trainer

    mb = {"tokens": torch.zeros(1, 8, dtype=torch.long), "labels": torch.zeros(1, 8, dtype=torch.long),
          "loss_mask": torch.ones(1, 8)}
    for impl in ("transformer_engine", "local"):
        state = SimpleNamespace(device=torch.device("cpu"), _masks={}, _explicit_mask=needs_attention_mask(impl))
        batch = Trainer._on_device(state, dict(mb))
        assert (batch["attention_mask"] is None) == (impl == "transformer_engine")
        assert len(state._masks) == (impl == "local") and batch["position_ids"].shape == (1, 8)


# ---------------------------------------------------------------- defect 6
@pytest.mark.parametrize("name", ["tiny_dense", "tiny_moe"])
def test_te_fp8_checkpoint_exports_without_te(tmp_path, name):
    """(6) a checkpoint whose meta says transformer_engine + FP8 + fusions (trained on GPUs) loads
    and exports here, where TE is absent, in the local spec with identical logits."""
    from tiny_export import random_model

    from train.checkpoint import load_model
    from train.hf_export import export_hf, load_megatron, save_megatron

    model, cfg = random_model(name, seed=3)
    gpu_cfg = cfg.model_copy(update=dict(transformer_impl="transformer_engine", fp8_format="hybrid",
                                         fp8_recipe="delayed", fusions=True, moe_permute_fusion=True,
                                         use_cpu_initialization=False, recompute_granularity="selective"))
    save_megatron(model, ModelConfig.model_validate(gpu_cfg.model_dump()), tmp_path / "ckpt")
    tokens = torch.randint(0, 1000, (1, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = forward_logits(model, tokens)
        for back in (load_megatron(tmp_path / "ckpt")[0], load_model(tmp_path / "ckpt")[0]):
            assert back.config.transformer_impl == "local" and back.config.fp8 is None
            assert (forward_logits(back, tokens) - ref).abs().max() < 1e-6
    meta = export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert meta["tensors"] > 0 and (tmp_path / "hf" / "model.safetensors").is_file()
    local = inference_config(gpu_cfg)
    assert (local.transformer_impl, local.fp8_format, local.fusions, local.recompute_granularity) == \
        ("local", None, False, None)


# ---------------------------------------------------------------- defect 7
def test_gpu_extra_pins_a_transformer_engine_megatron_core_accepts():
    """(7) the `gpu` extra's TE pin must satisfy megatron-core 0.16.1's own requirement (read from
    its installed metadata), with the CUDA 13 core and the torch extension."""
    from packaging.requirements import Requirement

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    reqs = {Requirement(r).name: Requirement(r) for r in extra}
    te, mc = reqs["transformer-engine"], reqs["megatron-core"]
    assert {"pytorch", "core_cu13"} <= te.extras
    pinned = [s.version for s in te.specifier if s.operator == "=="]
    assert len(pinned) == 1, "pin one TE version (it is compiled against torch on the GPU machine)"
    mc_installed = importlib.metadata.version("megatron-core")
    assert mc.specifier.contains(mc_installed)
    wants = [Requirement(r) for r in importlib.metadata.requires("megatron-core")
             if r.startswith("transformer-engine")]
    assert wants, "megatron-core's metadata names its TE range"
    assert all(w.specifier.contains(pinned[0], prereleases=True) for w in wants), (pinned, wants)


# ---------------------------------------------------------------- defect 8
def test_fp8_recipes_are_checked_against_the_device():
    hopper, blackwell, ampere = (9, 0), (10, 0), (8, 0)
    check_fp8_support(load_model_config("tiny_moe"), ampere, None)                   # no FP8: anything goes
    check_fp8_support(_te(fp8_format="hybrid", fp8_recipe="delayed"), hopper, "12.8")
    check_fp8_support(_te(fp8_format="e4m3", fp8_recipe="tensorwise"), hopper, "13.0")
    check_fp8_support(_te(fp8_format="e4m3", fp8_recipe="mxfp8"), blackwell, "12.8")
    check_fp8_support(_te(fp8_format="e4m3", fp8_recipe="blockwise"), hopper, "12.9")
    with pytest.raises(ConfigError, match=r"mxfp8 needs compute capability >= 10.0 \(Blackwell\).*9.0"):
        check_fp8_support(_te(fp8_format="e4m3", fp8_recipe="mxfp8"), hopper, "13.0")
    with pytest.raises(ConfigError, match=r"blockwise needs .*CUDA >= 12.9.*CUDA 12.8"):
        check_fp8_support(_te(fp8_format="e4m3", fp8_recipe="blockwise"), hopper, "12.8")
    with pytest.raises(ConfigError, match=r"FP8 needs compute capability >= 8.9"):
        check_fp8_support(_te(fp8_format="hybrid"), ampere, "12.8")


# ---------------------------------------------------------------- defect 9
def test_scale_features_are_config_and_the_30b_recipe_uses_them():
    kw = transformer_config_kwargs(_te(recompute_granularity="full", recompute_method="uniform",
                                       recompute_num_layers=1))
    assert (kw["recompute_granularity"], kw["recompute_method"], kw["recompute_num_layers"]) == ("full", "uniform", 1)
    assert kw["moe_permute_fusion"] is True                                # on by default with TE
    local = transformer_config_kwargs(load_model_config("tiny_moe"))
    assert local["moe_permute_fusion"] is False and local["recompute_granularity"] is None
    with pytest.raises(ValueError, match="recompute_method and recompute_num_layers"):
        load_model_config("tiny_moe", {"recompute_granularity": "full"})
    with pytest.raises(ValueError, match="moe_permute_fusion needs transformer_impl"):
        load_model_config("tiny_moe", {"moe_permute_fusion": True})
    assert cuda_env(2) == {"CUDA_DEVICE_MAX_CONNECTIONS": "1"} and cuda_env(1) == {}
    assert CoreConfig().use_distributed_optimizer is False
    run = load_config(TrainConfig, "train", "qwen3_30b_a3b_s1")
    m = load_model_config(run.model, run.model_overrides)
    assert run.use_distributed_optimizer and m.recompute_granularity == "selective" and m.permute_fusion
    assert m.fp8_format == "hybrid" and not m.gradient_accumulation_fusion
    assert run.parallel.expert_model_parallel_size == 8


def test_distributed_optimizer_is_wired_and_refused_on_cpu(tmp_path):
    """megatron's DistributedOptimizer wraps CUDA parameters only: on CPU a one-line ConfigError
    instead of its TypeError deep inside; on CUDA the flag reaches DDP and the optimizer config."""
    import inspect

    from train.core import Trainer, schedule_from_config

    cfg = CoreConfig.model_validate({"model": "tiny_dense", "use_distributed_optimizer": True, "optim": {"lr": 1e-3},
                                     "tensorboard": False})
    with pytest.raises(ConfigError, match="use_distributed_optimizer needs CUDA"):
        Trainer(cfg, load_model_config("tiny_dense"), 16, 10000.0, schedule_from_config(cfg), tmp_path)
    assert inspect.getsource(Trainer.__init__).count("use_distributed_optimizer=cfg.use_distributed_optimizer") == 2
