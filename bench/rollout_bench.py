"""Rollout throughput: `train.rollout.RolloutEngine` (megatron KV cache, n samples batched) vs the
recompute-per-token loop `train.generate.generate` used before it, same tiny model, same run.

    python -m bench.rollout_bench [--models tiny_dense tiny_moe] [--prompts 4] [--n 8] [--tokens 64] [--threads 1]

Baseline: a faithful copy of the old loop (below): one completion at a time, the whole sequence
re-run through `forward_logits` (logits at every position) for every new token, sampling by
torch.multinomial over the candidates. Both sample with the thinking preset's filters at T=1
(top-k 20, top-p 0.95) from the same chat prompts; tokens/s = produced tokens / wall seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

PROMPTS = ["Why is the sky blue?", "Write a haiku about autumn.", "What is 17 * 23?", "Name three prime numbers."]


def old_sample(logits: torch.Tensor, generated: list[int], p, generator: torch.Generator) -> int:
    """train.sampling.sample before the engine: multinomial over the top-k/top-p candidates."""
    from train.sampling import candidates

    idx, lp = candidates(logits, generated, p)
    finite = torch.isfinite(lp)
    idx, lp = idx[finite], lp[finite]
    return int(idx[torch.multinomial(lp.exp(), 1, generator=generator)])


@torch.no_grad()
def old_generate(model, prompt_ids: list[int], params, generator: torch.Generator, budget_ids: list[int],
                 vocab: int) -> list[int]:
    """train.generate.generate + MegatronLM.next_logits before the engine (no KV cache)."""
    from train.model import forward_logits
    from train.rollout import STOP_IDS
    from train.sampling import ThinkingBudget

    out: list[int] = []
    budget = ThinkingBudget(params.thinking_budget, False)
    while len(out) < params.max_tokens:
        if budget.exhausted():
            for t in budget_ids:
                out.append(t)
                budget.observe(t)
            continue
        logits = forward_logits(model, torch.tensor([prompt_ids + out], dtype=torch.long))[0, -1].float()
        t = old_sample(logits[:vocab], out, params, generator)
        if t in STOP_IDS:
            break
        out.append(t)
        budget.observe(t)
    return out[: params.max_tokens]


def run(name: str, n_prompts: int, n: int, tokens: int, baseline_prompts: int) -> dict:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))
    from tiny_export import random_model

    from train.generate import Tokenizer
    from train.rollout import RolloutEngine
    from train.sampling import THINKING_BUDGET_TEXT, SamplingParams

    model, _ = random_model(name)
    tok = Tokenizer()
    prompts = [tok.encode(tok.render([{"role": "user", "content": q}], True)) for q in PROMPTS[:n_prompts]]
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=20, max_tokens=tokens)
    engine = RolloutEngine(model)
    engine.generate(prompts[:1], params.with_(max_tokens=2), n=2)         # warm-up
    t0 = time.perf_counter()
    res = engine.generate(prompts, params, n=n, seed=0)
    t_new = time.perf_counter() - t0
    new_tokens = sum(len(r.token_ids) for rs in res for r in rs)
    budget_ids = tok.encode(THINKING_BUDGET_TEXT)
    g = torch.Generator().manual_seed(0)
    old_generate(model, prompts[0], params.with_(max_tokens=2), g, budget_ids, tok.vocab_size)  # warm-up
    t0 = time.perf_counter()
    old_tokens = 0
    for p in prompts[:baseline_prompts]:
        for _ in range(n):
            old_tokens += len(old_generate(model, p, params, g, budget_ids, tok.vocab_size))
    t_old = time.perf_counter() - t0
    return {"model": name, "prompt_len": [len(p) for p in prompts], "new_tokens": new_tokens, "new_s": t_new,
            "new_tps": new_tokens / t_new, "old_tokens": old_tokens, "old_s": t_old, "old_tps": old_tokens / t_old}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny_dense", "tiny_moe"])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--baseline-prompts", type=int, default=None,
                    help="prompts the (slow) baseline runs; default all")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from train.model import init_parallel

    init_parallel()
    load0 = os.getloadavg()[0]
    rows = [run(m, a.prompts, a.n, a.tokens, a.baseline_prompts or a.prompts) for m in a.models]
    print(f"\n{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; {a.prompts} prompts x n={a.n} x "
          f"{a.tokens} new tokens (T=1, top-k 20, top-p 0.95)\n")
    print("| model | prompt tokens | engine tokens | engine s | engine tokens/s | recompute tokens | "
          "recompute s | recompute tokens/s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['prompt_len']} | {r['new_tokens']} | {r['new_s']:.2f} | {r['new_tps']:.0f} | "
              f"{r['old_tokens']} | {r['old_s']:.1f} | {r['old_tps']:.1f} | **{r['new_tps'] / r['old_tps']:.1f}x** |")


if __name__ == "__main__":
    main()
