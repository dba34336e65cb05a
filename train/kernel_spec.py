"""Our Triton kernels (kernels/) in megatron-core's local layer spec, chosen by `ModelConfig.triton_kernels`.

The local spec is the path for GPUs without Transformer Engine (TE already fuses these ops);
`use_kernels(spec, names)` swaps module classes in the spec, never parameters, so checkpoints
are interchangeable with the plain local spec (same state-dict keys):
- `rmsnorm`: every RMSNorm of the layers (input, pre-MLP; q/k norms unless `qk_norm_rope`);
- `swiglu`: the SwiGLU between fc1 and fc2 of the dense MLP and of every routed expert;
- `qk_norm_rope`: Qwen3's per-head q/k RMSNorm and the rotary embedding as one kernel;
- `moe_permute`: the MoE token permute/unpermute of the all-gather dispatcher (no atomics);
- `linear_ce`: not a spec change but the trainer's default LM loss (`linear_ce_lm_loss`): the
  loss from the final hidden states and the output weight, chunked, never the full logits.
Each module falls back to megatron's own code for what the kernel does not cover (biases,
other activations, inference KV caches, packed sequences, context parallelism). On CPU the kernels run in
Triton's interpreter: correct but slow, for tests at tiny sizes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from megatron.core.transformer.attention import SelfAttention
from megatron.core.transformer.mlp import MLP
from megatron.core.transformer.moe.experts import SequentialMLP
from megatron.core.transformer.moe.token_dispatcher import MoEAllGatherTokenDispatcher
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_layer import TransformerLayer

KERNEL_NAMES = ("rmsnorm", "swiglu", "qk_norm_rope", "moe_permute", "linear_ce")
LOSS_KERNELS = ("linear_ce",)          # the trainer's loss path, not the layer spec


class KernelRMSNorm(torch.nn.Module):
    """Triton RMSNorm with megatron's norm constructor (state dict as torch.nn.RMSNorm: `weight`)."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__()
        if config.normalization != "RMSNorm" or config.layernorm_zero_centered_gamma:
            raise ValueError("triton_kernels rmsnorm: only plain RMSNorm (Qwen3's) is implemented")
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        # while True, the owning KernelSelfAttention applies this norm fused with the rope
        self.fused_into_rope = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_into_rope:
            return x
        from kernels.rmsnorm import rmsnorm

        return rmsnorm(x, self.weight, self.eps)


class KernelMLP(MLP):
    """megatron's MLP with the Triton SwiGLU between fc1 and fc2 (Qwen3: no biases). Routed
    experts get their tokens' routing probabilities as `per_token_scale`, applied after the
    activation as megatron does."""

    def _kernel_ok(self) -> bool:
        c = self.config
        return (c.gated_linear_unit and c.activation_func is F.silu and not c.add_bias_linear
                and c.activation_func_clamp_value is None and not c.glu_linear_offset
                and not c.use_te_activation_func)

    def forward(self, hidden_states, per_token_scale=None, **kwargs):
        if not self._kernel_ok():
            return super().forward(hidden_states, per_token_scale=per_token_scale, **kwargs)
        from kernels.swiglu import swiglu

        intermediate, _ = self.linear_fc1(hidden_states)
        intermediate = swiglu(intermediate)
        if per_token_scale is not None:
            intermediate = (intermediate * per_token_scale.unsqueeze(-1)).to(intermediate.dtype)
        return self.linear_fc2(intermediate)


class KernelAllGatherDispatcher(MoEAllGatherTokenDispatcher):
    """megatron's all-gather token dispatcher with the Triton permute/unpermute (deterministic
    gathers instead of a scatter-add); the two methods are megatron 0.16.1's, kernel calls swapped."""

    def dispatch_postprocess(self, hidden_states, probs):
        from kernels.moe_permute import permute

        self.hidden_shape_before_permute = hidden_states.shape
        experts = slice(self.local_expert_indices[0], self.local_expert_indices[-1] + 1)
        self.local_map = self.routing_map[:, experts].contiguous()
        local_probs = probs[:, experts].contiguous()
        tokens_per_expert = self.local_map.sum(dim=0).long().cpu()
        permuted, _, self.reversed_local_input_permutation_mapping = permute(hidden_states, self.local_map)
        # the experts apply the probs (per_token_scale), in permuted order
        self.local_probs = local_probs.T.contiguous().masked_select(self.local_map.T.contiguous())
        self.routing_map = None
        return permuted, tokens_per_expert, self.local_probs

    def combine_preprocess(self, hidden_states):
        from kernels.moe_permute import unpermute

        return unpermute(hidden_states, self.reversed_local_input_permutation_mapping,
                         self.hidden_shape_before_permute)


class KernelTransformerLayer(TransformerLayer):
    """TransformerLayer that swaps kernels into the MLP it built (`triton_kernels`, from the spec):
    - swiglu: its MLPs (the dense one, or every routed expert of a SequentialMLP, which builds
      them as plain `MLP`, hard-coded) are re-classed to KernelMLP (no parameters, a forward);
    - moe_permute: the MoE layer's all-gather token dispatcher to KernelAllGatherDispatcher.
    Built as megatron's modules first, so the layer passes them their usual arguments."""

    def __init__(self, *args, triton_kernels: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        if "swiglu" in triton_kernels:
            for module in self.mlp.modules():
                if type(module) is MLP:
                    module.__class__ = KernelMLP
        dispatcher = getattr(self.mlp, "token_dispatcher", None)
        if "moe_permute" in triton_kernels and dispatcher is not None:
            if type(dispatcher) is not MoEAllGatherTokenDispatcher:
                raise ValueError("triton_kernels moe_permute: needs moe_token_dispatcher_type: allgather")
            dispatcher.__class__ = KernelAllGatherDispatcher


class KernelSelfAttention(SelfAttention):
    """SelfAttention whose q/k RMSNorm + RoPE run as one Triton kernel per tensor.

    megatron normalises q and k in `get_query_key_value_tensors` and rotates them later in
    `forward`; for a training-shaped call this class hands `forward` no rope (so megatron skips
    it), turns its KernelRMSNorm q/k norms into pass-throughs and applies both, fused, to the
    q and k that `get_query_key_value_tensors` returns. Other calls run megatron's path.
    """

    _rope_tables: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, hidden_states, attention_mask, key_value_states=None, inference_context=None,
                rotary_pos_emb=None, **kwargs):
        fusable = (isinstance(rotary_pos_emb, torch.Tensor) and key_value_states is None
                   and inference_context is None and kwargs.get("inference_params") is None
                   and kwargs.get("packed_seq_params") is None and not self.config.no_rope_freq
                   and self.config.context_parallel_size == 1 and not self.config.rotary_interleaved
                   and isinstance(self.q_layernorm, KernelRMSNorm)
                   and isinstance(self.k_layernorm, KernelRMSNorm))
        if not fusable:
            return super().forward(hidden_states, attention_mask, key_value_states, inference_context,
                                   rotary_pos_emb, **kwargs)
        freqs = rotary_pos_emb.reshape(rotary_pos_emb.shape[0], rotary_pos_emb.shape[-1]).float()
        self._rope_tables = (freqs.cos(), freqs.sin())
        self.q_layernorm.fused_into_rope = self.k_layernorm.fused_into_rope = True
        try:
            return super().forward(hidden_states, attention_mask, key_value_states, inference_context,
                                   None, **kwargs)
        finally:
            self._rope_tables = None
            self.q_layernorm.fused_into_rope = self.k_layernorm.fused_into_rope = False

    def get_query_key_value_tensors(self, *args, **kwargs):
        out = super().get_query_key_value_tensors(*args, **kwargs)
        if self._rope_tables is None:
            return out
        from kernels.qk_norm_rope import qk_norm_rope

        query, key, *rest = out
        cos, sin = self._rope_tables
        if cos.shape[-1] != query.shape[-1]:
            raise ValueError("triton_kernels qk_norm_rope: partial rotary (rotary_percent < 1) is not implemented")
        query = qk_norm_rope(query, self.q_layernorm.weight, cos, sin, self.q_layernorm.eps)
        key = qk_norm_rope(key, self.k_layernorm.weight, cos, sin, self.k_layernorm.eps)
        return (query, key, *rest)


def use_kernels(spec: ModuleSpec, names: list[str] | tuple[str, ...]) -> ModuleSpec:
    """A copy of the local TransformerLayer `spec` with the named Triton kernels swapped in."""
    unknown = set(names) - set(KERNEL_NAMES)
    if unknown:
        raise ValueError(f"unknown triton_kernels {sorted(unknown)}; known: {', '.join(KERNEL_NAMES)}")
    names = tuple(n for n in names if n not in LOSS_KERNELS)
    if not names:
        return spec
    spec = copy.deepcopy(spec)
    layer = spec.submodules
    attn = layer.self_attention
    if "rmsnorm" in names:
        layer.input_layernorm = layer.pre_mlp_layernorm = KernelRMSNorm
        attn.submodules.q_layernorm = attn.submodules.k_layernorm = KernelRMSNorm
    if "qk_norm_rope" in names:
        attn.module = KernelSelfAttention
        attn.submodules.q_layernorm = attn.submodules.k_layernorm = KernelRMSNorm
    if "swiglu" in names:
        experts = getattr(layer.mlp.submodules, "experts", None)
        if experts is not None and experts.module is not SequentialMLP:
            raise ValueError("triton_kernels swiglu: MoE experts need moe_grouped_gemm: false "
                             "(SequentialMLP); grouped-GEMM experts are TE's")
    if "swiglu" in names or "moe_permute" in names:
        spec.module = KernelTransformerLayer
        spec.params = {**spec.params, "triton_kernels": tuple(names)}
    return spec


# ----------------------------------------------------------------------------- linear_ce: the LM loss
def lm_output_weight(model) -> torch.Tensor:
    """The output layer's weight [V, H] the LM head multiplies by: the tied input embedding or
    `output_layer.weight` (whichever the model uses), the parameter itself so gradients reach it."""
    from train.logprobs import unwrap

    m = unwrap(model)
    if m.share_embeddings_and_output_weights:
        return m.shared_embedding_or_output_weight()
    return m.output_layer.weight


def linear_ce_lm_loss(model, batch: dict, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's default LM loss with `triton_kernels: [linear_ce]`: (sum over tokens of
    loss_mask x CE, differentiable; per-token CE [mb, s], detached). The model runs with its
    output layer bypassed (final hidden states, final norm applied) and kernels/linear_ce.py forms
    at most `chunk_size` tokens' logits at a time, so the [tokens x vocab] logits never exist."""
    from kernels.linear_ce import linear_cross_entropy
    from train.logprobs import hidden_states_only, unwrap

    if unwrap(model).config.sequence_parallel:
        raise NotImplementedError("linear_ce: sequence-parallel hidden states are not gathered")
    with hidden_states_only(model):
        hidden = model(batch["tokens"], batch["position_ids"], batch["attention_mask"])   # [s, mb, h]
    s, mb, h = hidden.shape
    # megatron's layout is [s, mb]: flatten the hidden states as they are (no copy of [s*mb, h])
    # and transpose the small [mb, s] labels and mask to match
    loss_sum, per_token = linear_cross_entropy(
        hidden.reshape(s * mb, h), lm_output_weight(model), batch["labels"].t().reshape(-1),
        reduction="sum", chunk_size=chunk_size, token_weights=batch["loss_mask"].t().reshape(-1),
        return_token_losses=True)
    return loss_sum, per_token.view(s, mb).t()
