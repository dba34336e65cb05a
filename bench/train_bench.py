"""CPU training throughput: our megatron-core trainer vs Hugging Face transformers, same tiny
Qwen3-MoE config, same batch (micro 4 x seq 128, one optimizer step per batch), in one run.

    python -m bench.train_bench [--steps 12] [--record]

Ours: `train.pretrain` (megatron GPTModel local spec + DDP + get_forward_backward_func +
get_megatron_optimizer AdamW, clip 1.0) in a subprocess (the CPU shims are process-global).
Baseline: `Qwen3MoeForCausalLM` + torch AdamW + clip 1.0 on the same token windows.
Reported: median tokens/s over the steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEQ, MBS = 128, 4


def ours(manifest: Path, steps: int, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "train.pretrain", "model=tiny_moe", f"manifest={manifest}", f"seq_length={SEQ}",
           f"micro_batch_size={MBS}", f"global_batch_size={MBS}", f"train_steps={steps}", f"out_dir={out}",
           "tensorboard=false", "log_interval=100", "guard.enabled=false"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in rows[2:])


def hf(manifest: Path, steps: int) -> float:
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from q3.manifest import load_manifest
    from train.config import load_model_config
    from train.data import build_train_dataset

    torch.manual_seed(1234)
    m = load_model_config("tiny_moe")
    cfg = Qwen3MoeConfig(
        vocab_size=m.padded_vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
        moe_intermediate_size=m.moe_ffn_hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_query_groups, head_dim=m.kv_channels,
        num_experts=m.num_experts, num_experts_per_tok=m.moe_router_topk, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=m.tie_word_embeddings,
        rms_norm_eps=m.norm_epsilon, rope_theta=m.rope_base, max_position_embeddings=m.max_position_embeddings,
        output_router_logits=True, router_aux_loss_coef=m.moe_aux_loss_coeff, attention_bias=False)
    model = Qwen3MoeForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    ds = build_train_dataset(load_manifest(manifest), SEQ, steps * MBS + MBS, 1234, m.padded_vocab_size, None)
    tps = []
    for step in range(steps):
        batch = [ds[i] for i in range(step * MBS, (step + 1) * MBS)]
        tokens = torch.stack([b["tokens"] for b in batch])
        labels = torch.stack([b["labels"] for b in batch])
        t0 = time.time()
        out = model(input_ids=tokens)
        logits = out.logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))
        if out.aux_loss is not None:
            loss = loss + cfg.router_aux_loss_coef * out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tps.append(MBS * SEQ / (time.time() - t0))
    return statistics.median(tps[2:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = ap.parse_args()
    import tempfile

    from train.devdata import build_dev_data

    data = ROOT / "data" / "bench_devdata"
    manifest = build_dev_data(data, max_files=40)["S1"]
    with tempfile.TemporaryDirectory() as tmp:
        t_ours = ours(manifest, args.steps, Path(tmp) / "run")
    t_hf = hf(manifest, args.steps)
    ratio = t_ours / t_hf
    line = (f"| tiny_moe (2 layers, h64, 8 experts top-2, vocab 151,936) | {MBS}x{SEQ} | {t_ours:,.0f} | "
            f"{t_hf:,.0f} | {ratio:.2f}x |")
    print("| model | batch | ours tokens/s | HF transformers tokens/s | ours / HF |")
    print("|---|---|---|---|---|")
    print(line)
    if args.record:
        res = ROOT / "bench" / "RESULTS.md"
        text = res.read_text() if res.exists() else "# Benchmark results\n"
        if "## Trainer (train_bench)" not in text:
            text += ("\n## Trainer (train_bench)\n\nCPU training tokens/s, our megatron-core trainer vs HF "
                     "`Qwen3MoeForCausalLM`, same tiny config and batch, median after 2 warm-up steps.\n"
                     "Command: `python -m bench.train_bench --record`\n\n"
                     "| date | machine | model | batch | ours tokens/s | HF tokens/s | ours / HF |\n"
                     "|---|---|---|---|---|---|---|\n")
        text += (f"| {time.strftime('%Y-%m-%d %H:%M')} | {platform.machine()} {os.cpu_count()}-core CPU VM, "
                 f"torch {__import__('torch').__version__} | " + line.lstrip("| ") + "\n")
        res.write_text(text)


if __name__ == "__main__":
    main()
