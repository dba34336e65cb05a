"""Build a megatron-core `GPTModel` for a Qwen3 dense or MoE shape from a `ModelConfig`.

Qwen3 = pre-norm RMSNorm, GQA attention with QK-Norm (RMSNorm on each head's q and k), no
biases, SwiGLU MLP, RoPE; MoE layers replace every MLP with 128 routed experts (top-8, no
shared experts; softmax over the top-k logits == softmax-then-renormalise) trained with the
global-batch load-balancing loss. Implementation is picked by `ModuleSpec`:
`transformer_impl: local` (pure PyTorch, CPU) or `transformer_engine` (TE kernels, FP8 via
`fp8_format`/`fp8_recipe`). The model code never branches on the device; `build_model` places the
finished model on the device (CUDA when present) before any optimizer sees its parameters.

Checkpoints are spec-independent (identical sharded keys), so export and generation always rebuild
in the local spec (`inference_config`): a checkpoint trained with TE/FP8 loads on a machine without TE.

Megatron's parallel state must be initialised first: `init_parallel()` does it for single-process
use (export, tests) and `train.pretrain` does it under torchrun.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.nn.functional as F

from q3.config import ConfigError
from train.config import ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def init_parallel(tp: int = 1, pp: int = 1, ep: int = 1, seed: int = 1234,
                  backend: str | None = None) -> None:
    """Start torch.distributed (a 1-rank group if not under torchrun) and megatron's groups."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from train.shims import install_if_needed

    cpu = install_if_needed()
    for key, value in cuda_env(tp).items():    # before the first CUDA context of this process
        os.environ.setdefault(key, value)
    if not torch.distributed.is_initialized():
        # Outside torchrun: a 1-rank rendezvous. Remember what we set, so destroy_parallel removes
        # it again; a child process (torchrun, q3 serve) must not inherit a port already in use.
        defaults = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _free_port, "RANK": "0", "WORLD_SIZE": "1"}
        for key, value in defaults.items():
            if key not in os.environ:
                os.environ[key] = value() if callable(value) else value
                _RENDEZVOUS_SET.append(key)
        backend = backend or ("gloo" if cpu else "nccl")
        if not cpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                     expert_model_parallel_size=ep)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_parallel() -> None:
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    while _RENDEZVOUS_SET:
        os.environ.pop(_RENDEZVOUS_SET.pop(), None)


_RENDEZVOUS_SET: list[str] = []


def cuda_env(tp: int) -> dict[str, str]:
    """Environment megatron needs for tensor parallelism: with TP > 1 (sequence parallel for MoE)
    the TP collectives must be issued in order with the GEMMs they overlap, which needs a single
    hardware work queue (Megatron-LM sets CUDA_DEVICE_MAX_CONNECTIONS=1 for the same reason)."""
    return {"CUDA_DEVICE_MAX_CONNECTIONS": "1"} if tp > 1 else {}


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def transformer_config(cfg: ModelConfig, tp: int = 1, pp: int = 1, ep: int = 1, dp: int = 1,
                       per_token_loss: bool = False):
    """The megatron `TransformerConfig` that encodes a Qwen3 shape.

    `dp`: data-parallel size. megatron normalises each rank's global-batch LBL term by the
    *global* token count and DDP then averages gradients over DP ranks, so the effective
    coefficient would be coeff/dp; we scale it by dp so the objective is the same for any DP
    layout of the same global batch (tested: DP=2 losses == one process).

    `per_token_loss`: megatron's `calculate_per_token_loss` (gradients normalised by the token
    count of the whole global batch; see `CoreConfig.per_token_loss`).
    """
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(**transformer_config_kwargs(cfg, tp, pp, ep, dp, per_token_loss))


def transformer_config_kwargs(cfg: ModelConfig, tp: int = 1, pp: int = 1, ep: int = 1, dp: int = 1,
                              per_token_loss: bool = False) -> dict:
    """The keyword arguments of `transformer_config` (inspectable without TE: TransformerConfig
    itself rejects GPU-only fusions on a machine without TE)."""
    dtype = _DTYPES[cfg.params_dtype]
    kw: dict = dict(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.num_query_groups,
        kv_channels=cfg.kv_channels,
        ffn_hidden_size=cfg.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.norm_epsilon,
        qk_layernorm=True,
        add_bias_linear=False,
        add_qkv_bias=False,
        gated_linear_unit=True,             # SwiGLU
        activation_func=F.silu,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        expert_model_parallel_size=ep,
        sequence_parallel=tp > 1 and cfg.is_moe,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        use_cpu_initialization=cfg.use_cpu_initialization,
        bias_activation_fusion=cfg.fusions,
        bias_dropout_fusion=cfg.fusions,
        masked_softmax_fusion=cfg.fusions,
        apply_rope_fusion=cfg.fusions,
        gradient_accumulation_fusion=cfg.gradient_accumulation_fusion,   # not tied to `fusions`: needs APEX/TE
        persist_layer_norm=cfg.fusions,
        transformer_impl=cfg.transformer_impl,
        calculate_per_token_loss=per_token_loss,
        recompute_granularity=cfg.recompute_granularity,
        recompute_method=cfg.recompute_method,
        recompute_num_layers=cfg.recompute_num_layers,
    )
    if cfg.fp8_format is not None:
        kw.update(fp8=cfg.fp8_format, fp8_recipe=cfg.fp8_recipe,
                  fp8_amax_history_len=cfg.fp8_amax_history_len,
                  fp8_amax_compute_algo=cfg.fp8_amax_compute_algo)
    if cfg.is_moe:
        lbl = cfg.moe_router_load_balancing_type
        kw.update(
            num_moe_experts=cfg.num_experts,
            moe_router_topk=cfg.moe_router_topk,
            moe_ffn_hidden_size=cfg.moe_ffn_hidden_size,
            moe_shared_expert_intermediate_size=cfg.moe_shared_expert_intermediate_size,
            moe_router_load_balancing_type=lbl,
            moe_aux_loss_coeff=(0.0 if lbl == "none" else
                                cfg.moe_aux_loss_coeff * (dp if lbl == "global_aux_loss" else 1)),
            moe_router_score_function="softmax",
            moe_router_pre_softmax=False,    # top-k, then softmax over the k = Qwen3's renormalised probs
            moe_token_dispatcher_type=cfg.moe_token_dispatcher_type,
            moe_grouped_gemm=cfg.moe_grouped_gemm,
            # fp32 router GEMM needs TE's general_gemm in megatron 0.16; local spec routes in param dtype
            moe_router_dtype="fp32" if cfg.transformer_impl == "transformer_engine" else None,
            moe_permute_fusion=cfg.permute_fusion,
        )
    return kw


def layer_spec(cfg: ModelConfig):
    """Local PyTorch spec or Transformer Engine spec, by config."""
    from megatron.core.models.gpt import gpt_layer_specs as specs

    num_experts = cfg.num_experts if cfg.is_moe else None
    if cfg.transformer_impl == "transformer_engine":
        # Untested here (no GPU, TE not installed): the spec megatron ships for TE kernels.
        return specs.get_gpt_layer_with_transformer_engine_spec(
            num_experts=num_experts, moe_grouped_gemm=cfg.moe_grouped_gemm, qk_layernorm=True)
    from train.kernel_spec import use_kernels

    return use_kernels(specs.get_gpt_layer_local_spec(
        num_experts=num_experts, moe_grouped_gemm=cfg.moe_grouped_gemm, qk_layernorm=True,
        normalization="RMSNorm"), cfg.triton_kernels)


def build_model(cfg: ModelConfig, seq_length: int = 4096, rope_base: float | None = None,
                tp: int = 1, pp: int = 1, ep: int = 1, dp: int = 1, per_token_loss: bool = False,
                device: torch.device | str | None = None):
    """A megatron-core GPTModel for `cfg` (call `init_parallel` first). Not wrapped in DDP.

    `device`: where the model lives (default: the current CUDA device when there is one, else
    the CPU). It is moved there here, like Megatron-LM's `.cuda()` after building: with
    `use_cpu_initialization` every weight, and megatron's `TopKRouter.weight` always, is created
    on the CPU, and the bf16 optimizer built next must take its fp32 copies of the device tensors.
    """
    from megatron.core.models.gpt import GPTModel

    from train.shims import patch_megatron_without_te

    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        check_fp8_support(cfg, torch.cuda.get_device_capability(device), torch.version.cuda)
    patch_megatron_without_te()
    tcfg = transformer_config(cfg, tp=tp, pp=pp, ep=ep, dp=dp, per_token_loss=per_token_loss)
    model = GPTModel(
        config=tcfg,
        transformer_layer_spec=layer_spec(cfg),
        vocab_size=cfg.padded_vocab_size,
        max_sequence_length=max(seq_length, 1),
        pre_process=True,
        post_process=True,
        share_embeddings_and_output_weights=cfg.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=int(rope_base if rope_base is not None else cfg.rope_base),
    )
    if cfg.params_dtype == "bfloat16":
        model = model.to(torch.bfloat16)
        keep_router_state_fp32(model)
    if cfg.fp8_emulation is not None:
        from kernels.fp8_emulation import apply_fp8_emulation

        apply_fp8_emulation(model, cfg.fp8_emulation, cfg.fp8_emulation_format,
                            cfg.fp8_amax_history_len, cfg.fp8_amax_compute_algo)
    return model.to(device)


# router buffers that count (global-batch load balancing) or bias routing: they must stay fp32
_ROUTER_FP32_BUFFERS = ("global_tokens_per_expert", "ga_steps", "local_tokens_per_expert", "expert_bias")


def keep_router_state_fp32(model) -> None:
    """Undo `model.to(bfloat16)` on the routers' fp32 state. bf16 has 8 mantissa bits: `ga_steps`
    stops counting at 256 and per-expert token counts above 256 drop +1 increments, so the
    global-batch load-balancing loss would silently use wrong loads."""
    for router in moe_routers(model):
        for name in _ROUTER_FP32_BUFFERS:
            buf = getattr(router, name, None)
            if isinstance(buf, torch.Tensor) and buf.dtype != torch.float32:
                buf.data = buf.data.float()


def check_fp8_support(cfg: ModelConfig, capability: tuple[int, int], cuda_version: str | None) -> None:
    """Reject an FP8 recipe the device cannot run, with the reason, before TE asserts deep inside a
    forward. `capability`: (major, minor) compute capability; `cuda_version`: e.g. "12.8"."""
    if cfg.fp8_format is None:
        return
    cc = tuple(capability)
    name = f"compute capability {cc[0]}.{cc[1]}"
    if cc < (8, 9):
        raise ConfigError(f"fp8_format: FP8 needs compute capability >= 8.9 (Ada/Hopper); this GPU has {name}")
    if cfg.fp8_recipe == "mxfp8" and cc < (10, 0):
        raise ConfigError(f"fp8_recipe: mxfp8 needs compute capability >= 10.0 (Blackwell); this GPU has {name} "
                          "-- use delayed or tensorwise on Hopper")
    if cfg.fp8_recipe == "blockwise":
        cuda = tuple(int(x) for x in (cuda_version or "0.0").split(".")[:2])
        if cc < (9, 0) or cuda < (12, 9):
            raise ConfigError(f"fp8_recipe: blockwise needs Hopper (compute capability 9.x) and CUDA >= 12.9; "
                              f"this is {name} with CUDA {cuda_version}")


def inference_config(cfg: ModelConfig) -> ModelConfig:
    """The local-spec twin of `cfg` for export/generation: no TE, no FP8, no fusions, no recompute,
    no Triton kernels, no emulated FP8.
    The weights are the same tensors under the same checkpoint keys, so a checkpoint trained with
    Transformer Engine (+FP8) loads into it on any machine."""
    return cfg.model_copy(update=dict(
        transformer_impl="local", fp8_format=None, fusions=False, gradient_accumulation_fusion=False,
        moe_permute_fusion=None, moe_grouped_gemm=False, use_cpu_initialization=True,
        recompute_granularity=None, recompute_method=None, recompute_num_layers=None,
        triton_kernels=[], fp8_emulation=None))   # same keys either way; on CPU the kernels would run in Triton's interpreter


def needs_attention_mask(impl: str) -> bool:
    """Does this backend read an explicit [b,1,s,s] mask? TE's attention runs causal kernels
    (attn_mask_type=causal) and ignores it -- at 32K tokens that mask is 1 GiB copied per
    microbatch; megatron's local attention needs it."""
    return impl != "transformer_engine"


def attention_mask(impl: str, seq_length: int, device) -> torch.Tensor | None:
    """The causal mask the backend `impl` needs for `seq_length` tokens (None for TE)."""
    from train.shims import causal_attention_mask

    return causal_attention_mask(seq_length).to(device) if needs_attention_mask(impl) else None


def forward_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [batch, seq, vocab] for `tokens` [batch, seq] (causal, positions 0..seq-1)."""
    b, s = tokens.shape
    position_ids = torch.arange(s, dtype=torch.long, device=tokens.device).unsqueeze(0).expand(b, s)
    return model(tokens, position_ids, attention_mask(model.config.transformer_impl, s, tokens.device))


def moe_routers(model) -> list:
    """The TopKRouter modules of a (possibly DDP-wrapped) model, in layer order."""
    from megatron.core.transformer.moe.router import TopKRouter

    return [m for m in model.modules() if isinstance(m, TopKRouter)]
