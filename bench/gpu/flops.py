"""FLOPs per token by Megatron-LM's formula, and device peaks for MFU.

Megatron-LM `num_floating_point_operations` (training/training.py, GQA + SwiGLU + MoE, no MLA):
12 x L x h^2 x [ (1 + g/n + s/(2h)) x q/h  +  f/h x k x 3/2  +  f_shared/h x 3/2  +  V/(2 L h) ]
per token, where 12 = 3 (fwd, wgrad, dgrad) x 2 (multiply-add) x 2 (GEMMs stacked in a block),
g/n = KV groups / heads, q = heads x head_dim, s/(2h): causal attention computes half the scores
(newer Megatron-LM halves it; older releases did not), k = experts routed to (top-k, active only;
1 for dense), f = the (expert) FFN width, V = the padded vocabulary (LM head). Router GEMMs and
norms are not counted, as in Megatron-LM.
"""

from __future__ import annotations

# dense peak FLOP/s per GPU (no sparsity), by precision, from NVIDIA's datasheets (SXM parts)
PEAKS = {
    "H200": {"bf16": 989.4e12, "fp8": 1978.9e12},
    "H100": {"bf16": 989.4e12, "fp8": 1978.9e12},
    "A100": {"bf16": 312.0e12, "fp8": None},
}


def megatron_flops_per_token(m, seq_length: int, causal: bool = True) -> float:
    """Training FLOPs (forward + backward) per token of a Qwen3 `ModelConfig`-like `m`."""
    h, L = m.hidden_size, m.num_layers
    q_ratio = m.num_attention_heads * m.kv_channels / h
    gqa = m.num_query_groups / m.num_attention_heads
    moe = getattr(m, "family", "dense") == "moe"
    ffn = m.moe_ffn_hidden_size if moe else m.ffn_hidden_size
    routed = m.moe_router_topk if moe else 1
    shared = (m.moe_shared_expert_intermediate_size or 0) if moe else 0
    scores = seq_length / h / (2 if causal else 1)
    return 12 * L * h * h * ((1 + gqa + scores) * q_ratio
                             + ffn / h * routed * 1.5
                             + shared / h * 1.5
                             + m.padded_vocab_size / (2 * L * h))


def peak_flops(device_name: str, precision: str = "bf16") -> float | None:
    """The datasheet peak of a known GPU (None: unknown device, MFU not reported)."""
    for key, peaks in PEAKS.items():
        if key in device_name:
            return peaks.get(precision)
    return None
