"""Typed configs of the trainer: the model shape (`ModelConfig`) and the run (`CoreConfig`,
`TrainConfig`).

`conf/model/<name>.yaml` holds a `ModelConfig`; `conf/train/<name>.yaml` holds a `TrainConfig`
whose `model` field names a model config (or inlines one). Everything the report fixes about a
Qwen3 shape lives in `ModelConfig`; the run fields every algorithm shares (batch, steps,
optimizer, checkpoints, guard, parallelism) live in `CoreConfig` (read by `train.core.Trainer`);
`TrainConfig(CoreConfig)` adds one pretraining stage's fields, and the stage manifest gives seq
length, RoPE base, datasets and schedule.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from q3.config import Q3Config, load_config


class YarnConfig(Q3Config):
    """YaRN RoPE scaling used at inference/export time (4x context); never applied in training."""

    factor: float = 4.0
    original_max_position_embeddings: int = 32768


class ModelConfig(Q3Config):
    name: str
    family: Literal["dense", "moe"] = "dense"
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int                 # GQA: number of KV heads
    kv_channels: int = 128                # head_dim (Qwen3: 128 even when hidden/heads != 128)
    ffn_hidden_size: int                  # dense SwiGLU intermediate size
    vocab_size: int = 151669              # real tokenizer size (151,643 BPE + 26 special)
    padded_vocab_size: int = 151936       # embedding rows in the published checkpoints
    tie_word_embeddings: bool = False
    norm_epsilon: float = 1e-6
    rope_base: float = 10000.0            # S1/S2 base; S3's manifest raises it to 1e6 (ABF)
    max_position_embeddings: int = 40960
    yarn: YarnConfig = Field(default_factory=YarnConfig)
    init_method_std: float = 0.02
    # MoE (family == "moe")
    num_experts: int | None = None
    moe_router_topk: int = 8
    moe_ffn_hidden_size: int | None = None
    moe_shared_expert_intermediate_size: int | None = None   # Qwen3: none
    moe_router_load_balancing_type: Literal["global_aux_loss", "aux_loss", "seq_aux_loss", "none"] = "global_aux_loss"
    moe_aux_loss_coeff: float = 1e-3
    moe_token_dispatcher_type: Literal["allgather", "alltoall"] = "allgather"
    moe_grouped_gemm: bool = False
    # implementation, chosen by config, never by device inside model code
    transformer_impl: Literal["local", "transformer_engine"] = "local"
    params_dtype: Literal["float32", "bfloat16"] = "float32"
    fp8_format: Literal["e4m3", "hybrid"] | None = None        # TE only
    fp8_recipe: Literal["tensorwise", "delayed", "mxfp8", "blockwise"] = "delayed"
    fp8_amax_history_len: int = 1024
    fp8_amax_compute_algo: Literal["max", "most_recent"] = "max"
    use_cpu_initialization: bool = True
    fusions: bool = False                  # bias/rope/softmax/layernorm fusions (GPU only)
    # ---- GPU path at scale (issue 16). All off by default: CPU behaviour is unchanged.
    # Fused wgrad accumulation into fp32 main grads. Separate from `fusions`: the non-TE LM head
    # needs APEX's fused_weight_gradient_mlp_cuda for it, which no package registry ships.
    gradient_accumulation_fusion: bool = False   # fused wgrad into fp32 main grads (TE linears; non-TE head needs APEX)
    # activation recompute: "selective" (attention core only, cheap) or "full" (whole layers;
    # with recompute_method uniform|block and recompute_num_layers)
    recompute_granularity: Literal["selective", "full"] | None = None   # activation recompute; None: off
    recompute_method: Literal["uniform", "block"] | None = None       # full recompute only: layer grouping
    recompute_num_layers: int | None = Field(None, ge=1)             # full recompute only: layers per group/block
    # fused MoE token permute/unpermute (TE kernels). None: on with transformer_engine, off otherwise
    moe_permute_fusion: bool | None = None    # TE's fused token permute; None: on exactly with transformer_engine
    # Triton kernels (kernels/, issue 16) in the local spec, for GPUs without TE; CPU: interpreter, tests only
    # linear_ce: the trainer's default LM loss by kernels/linear_ce.py, never the full [tokens x vocab] logits
    triton_kernels: list[Literal["rmsnorm", "swiglu", "qk_norm_rope", "moe_permute", "linear_ce"]] = Field(default_factory=list)  # any of rmsnorm, swiglu, qk_norm_rope, moe_permute (transformer_impl: local); linear_ce (the LM loss, either impl; TP 1)
    # emulated FP8 (issue 16, kernels/fp8_emulation.py): quantise-dequantise the inputs, weights and
    # grad-outputs of the local spec's linears (not the LM head) with a TE recipe, on any device;
    # reuses fp8_amax_history_len / fp8_amax_compute_algo for `delayed`. For numerics, not speed.
    fp8_emulation: Literal["delayed", "current", "blockwise"] | None = None   # emulated FP8 recipe (CPU numerics)
    fp8_emulation_format: Literal["e4m3", "hybrid"] | None = None   # None: TE's recipe default

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError("num_attention_heads must be a multiple of num_query_groups")
        if self.family == "moe" and (self.num_experts is None or self.moe_ffn_hidden_size is None):
            raise ValueError("family 'moe' needs num_experts and moe_ffn_hidden_size")
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError("padded_vocab_size must be >= vocab_size")
        if self.fp8_format is not None and self.transformer_impl != "transformer_engine":
            raise ValueError("fp8_format needs transformer_impl: transformer_engine")
        if self.moe_permute_fusion and self.transformer_impl != "transformer_engine":
            raise ValueError("moe_permute_fusion needs transformer_impl: transformer_engine (TE's permute kernels)")
        full = self.recompute_granularity == "full"
        if full != (self.recompute_method is not None) or full != (self.recompute_num_layers is not None):
            raise ValueError("recompute_granularity: full needs recompute_method and recompute_num_layers "
                             "(and only full takes them)")
        if set(self.triton_kernels) - {"linear_ce"} and self.transformer_impl != "local":
            raise ValueError("triton_kernels are for transformer_impl: local (Transformer Engine fuses these ops; "
                             "only linear_ce, the LM loss, works with either)")
        if "moe_permute" in self.triton_kernels and self.is_moe and self.moe_token_dispatcher_type != "allgather":
            raise ValueError("triton_kernels moe_permute is wired into the allgather token dispatcher only")
        if "swiglu" in self.triton_kernels and self.is_moe and self.moe_grouped_gemm:
            raise ValueError("triton_kernels swiglu needs moe_grouped_gemm: false (grouped-GEMM experts are TE's)")
        if self.fp8_emulation is not None and (self.transformer_impl != "local" or self.moe_grouped_gemm):
            raise ValueError("fp8_emulation needs transformer_impl: local and moe_grouped_gemm: false "
                             "(with transformer_engine use fp8_format for real FP8)")
        return self

    @property
    def permute_fusion(self) -> bool:
        """moe_permute_fusion resolved: on by default exactly when TE provides the kernels."""
        if self.moe_permute_fusion is not None:
            return self.moe_permute_fusion
        return self.transformer_impl == "transformer_engine"

    @property
    def is_moe(self) -> bool:
        return self.family == "moe"

    def num_params(self, active: bool = False) -> int:
        """Parameter count (active=True: per-token active parameters, for MFU)."""
        h, L = self.hidden_size, self.num_layers
        q = self.num_attention_heads * self.kv_channels
        kv = self.num_query_groups * self.kv_channels
        attn = h * q + 2 * h * kv + q * h + 2 * self.kv_channels + 2 * h
        if self.is_moe:
            n = self.moe_router_topk if active else self.num_experts
            mlp = n * 3 * h * self.moe_ffn_hidden_size + h * self.num_experts
        else:
            mlp = 3 * h * self.ffn_hidden_size
        emb = self.padded_vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return L * (attn + mlp) + emb + h


class ParallelConfig(Q3Config):
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    expert_model_parallel_size: int = 1


class OptimConfig(Q3Config):
    lr: float | None = None          # None: take the manifest's schedule.lr
    min_lr: float | None = None
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0


class ScheduleConfig(Q3Config):
    """Overrides of the manifest's schedule (None: use the manifest's value)."""

    decay: Literal["cosine", "wsd", "linear", "constant"] | None = None
    warmup_fraction: float | None = None
    decay_fraction: float | None = None


class GuardConfig(Q3Config):
    """Loss-spike / NaN guard: skip the update (and log) when the loss is non-finite or spikes."""

    enabled: bool = True
    spike_factor: float = 3.0        # skip if loss > spike_factor * running mean ...
    min_history: int = 10            # ... once this many steps are in the running mean
    ema: float = 0.9


class CoreConfig(Q3Config):
    """The run fields every training algorithm shares (pretraining, SFT, RL, distillation):
    what `train.core.Trainer` reads. Algorithms subclass it with their own data/eval fields."""

    model: str | ModelConfig = "tiny_moe"
    model_overrides: dict = Field(default_factory=dict)   # e.g. {moe_router_load_balancing_type: aux_loss}
    micro_batch_size: int = 2
    global_batch_size: int = 8           # sequences per optimizer step over all DP ranks
    train_steps: int = 100               # the run's length (schedule horizon)
    stop_after: int | None = None        # stop (and checkpoint) at this step; rerun to resume
    seed: int = 1234
    out_dir: str | None = None           # run directory
    load: str | None = None              # checkpoint dir to resume or to start the run from
    finetune: bool = False               # True: take weights only (new stage), reset optimizer/step
    save: bool = True                    # False: no checkpoints at all (throw-away proxy runs)
    save_interval: int = 0               # 0: save only at the end
    log_interval: int = 1
    tensorboard: bool = True
    verbose: bool = False                # True: megatron-core's INFO lines and TE/APEX warnings (also Q3_VERBOSE=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    peak_flops: float = 0.0              # per device FLOP/s for MFU (0: estimate for CPU)
    # gradient normalisation: True = sum of token losses / tokens of the whole global batch (all
    # microbatches and DP ranks; megatron's calculate_per_token_loss) -- right when microbatches
    # hold different numbers of loss tokens (SFT, RL). False = mean over microbatches of each
    # microbatch's token mean (megatron's default); the same when every microbatch has the same
    # token count, as pretraining's packed windows do.
    per_token_loss: bool = True
    # ZeRO-1 style sharding of the fp32 master weights and Adam moments over the data-parallel
    # ranks (megatron's DistributedOptimizer): 30B-A3B at EP=8 needs ~87 GiB/GPU of optimizer state without it
    use_distributed_optimizer: bool = False   # shard fp32 masters + Adam moments over DP ranks (CUDA only)


class TrainConfig(CoreConfig):
    """One pretraining stage: the shared run fields plus the manifest, eval and validation."""

    manifest: str | None = None          # stage manifest YAML (datasets, seq, RoPE base, schedule)
    stage: str | None = None             # defaults to the manifest's stage name
    seq_length: int | None = None        # defaults to the manifest's
    rope_base: float | None = None       # defaults to the manifest's
    eval_batches: int = 2                # held-out global batches scored before and after the stage
    num_workers: int = 0
    # megatron's train/valid/test split of each dataset's documents; training reads the train share
    split: str = "100,0,0"
    # fixed validation set: the valid share of these manifest datasets (needs split like "95,5,0"),
    # scored after the stage into <out_dir>/result.json as val_loss (what `q3 mix optimize` reads)
    validation: list[str] = Field(default_factory=list)
    validation_batches: int = Field(default=2, ge=1)   # global batches per validation dataset
    data_cache_dir: str | None = None
    # pretraining keeps megatron's per-microbatch normalisation (bit-compatible with earlier runs;
    # its microbatches all hold seq_length loss tokens, so the objective is the same)
    per_token_loss: bool = False


def load_model_config(ref: str | ModelConfig, overrides: dict | None = None) -> ModelConfig:
    """A model config by name (conf/model/<name>.yaml), by path, or already parsed."""
    cfg = ref if isinstance(ref, ModelConfig) else load_config(ModelConfig, "model", ref)
    if overrides:
        cfg = cfg.model_copy(update=overrides)
        cfg = ModelConfig.model_validate(cfg.model_dump())
    return cfg


# ---- configs of the verbs whose modules import torch/megatron: here so that `--help`, value checks
# and the path checks below run without those imports (q3/cli.py `verb(..., precheck=...)`)

class ExportConfig(Q3Config):
    load: str                           # megatron dist checkpoint dir (or a run dir holding one)
    out_dir: str                        # HF folder to write
    model: str | None = None            # conf/model name or YAML; default: the checkpoint's sidecar
    rope_base: float | None = None      # default: sidecar's (S3 stores 1e6), else the model's
    yarn: bool = False                  # write rope_scaling YaRN (model.yarn, 4x context). Off by
    # default, like the published Qwen3 configs: YaRN rescales the rotary frequencies, so the
    # logits then differ from the trainer's by design; turn it on for inputs beyond the trained length.
    dtype: Literal["float32", "bfloat16"] = "float32"   # safetensors dtype
    preset: str = "thinking"            # sampling preset written to generation_config.json


class ImportConfig(Q3Config):
    hf_dir: str                         # HF Qwen3 / Qwen3-MoE folder
    out_dir: str                        # megatron dist checkpoint to write
    model: str | None = None            # conf/model to check against; default: derived from config.json


class GenerateConfig(Q3Config):
    load: str                                  # HF export folder or megatron checkpoint
    model: str | None = None                   # conf/model name (megatron checkpoints without sidecar)
    prompt: str = "Give me a short introduction to large language models."
    system: str | None = None
    thinking: bool | None = None               # None: from /think, /no_think flags (default thinking)
    temperature: float | None = Field(None, ge=0)   # None: the mode's preset
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)       # 0 / -1: no top-k
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    max_tokens: int = Field(64, ge=1)
    thinking_budget: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1)
    seed: int = 0


def precheck_pretrain(config: str | None, overrides: list[str]) -> None:
    """`q3 train pretrain`: config, model, manifest and `load=` checked before megatron is imported."""
    from q3.errors import require_path
    from q3.manifest import load_manifest

    cfg = load_config(TrainConfig, "train", config, overrides)
    load_manifest(require_path(cfg.manifest, "manifest", "a stage manifest YAML (`q3 mix build` writes them)"))
    load_model_config(cfg.model, cfg.model_overrides)
    if cfg.load:
        require_path(cfg.load, "load", "a checkpoint dir (a run's out_dir) to start from")


def precheck_generate(config: str | None, overrides: list[str]) -> None:
    from q3.errors import require_path

    cfg = load_config(GenerateConfig, "generate", config, overrides)
    require_path(cfg.load, "load", "an HF folder (`q3 train export-hf`) or a megatron checkpoint dir")


def precheck_export(config: str | None, overrides: list[str]) -> None:
    from q3.errors import require_path

    require_path(load_config(ExportConfig, "export", config, overrides).load, "load", "a megatron checkpoint dir")


def precheck_import(config: str | None, overrides: list[str]) -> None:
    from q3.errors import require_path

    require_path(load_config(ImportConfig, "export", config, overrides).hf_dir, "hf_dir", "an HF Qwen3 folder")


def precheck_serve(config: str | None, overrides: list[str]) -> None:
    """`q3 serve`: its config model lives with the server (train/serve.py, torch); only `load=` is
    checked here, on the raw config -- the model validates everything else after the imports."""
    from q3.config import apply_overrides, load_yaml, resolve
    from q3.describe import SHOW
    from q3.errors import require_path

    if SHOW.get():                      # --help / --print-config: nothing runs, nothing to check
        return
    data = apply_overrides(load_yaml(resolve("serve", config)) if config else {}, overrides)
    if data.get("load"):
        require_path(str(data["load"]), "load", "an HF folder (`q3 train export-hf`) or a megatron checkpoint dir")
