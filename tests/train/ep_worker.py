"""torchrun worker for the EP=2 export test: tiny MoE with expert parallelism over 2 ranks (gloo),
random weights, reference logits from the distributed megatron forward, a dist checkpoint.

    torchrun --nproc_per_node=2 tests/train/ep_worker.py OUT_DIR
writes OUT_DIR/ckpt (train.checkpoint layout: latest, iter_0000001/), OUT_DIR/tokens.pt, OUT_DIR/logits.pt
"""

import sys
from pathlib import Path

import torch


def main(out: Path) -> None:
    from megatron.core import parallel_state as ps

    from train import checkpoint
    from train.config import load_model_config
    from train.model import build_model, destroy_parallel, forward_logits, init_parallel

    init_parallel(ep=2, seed=7)
    rank = torch.distributed.get_rank()
    assert ps.get_expert_model_parallel_world_size() == 2
    cfg = load_model_config("tiny_moe")
    model = build_model(cfg, seq_length=64, ep=2)
    n_local = len(model.decoder.layers[0].mlp.experts.local_experts)
    assert n_local == cfg.num_experts // 2, n_local
    # Perturb every weight (norms are ones at init); the same seed on both ranks keeps the
    # replicated (non-expert) weights identical, the experts differ per rank by their init.
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.05
            if "local_experts" in name:
                noise = noise * (1 + rank)      # make each rank's experts distinct
            p.add_(noise)
    model.eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = forward_logits(model, tokens)
    # the trainer's checkpoint writer (all ranks), as `q3 train pretrain` saves under EP=2
    meta = {"model": cfg.model_dump(mode="json"), "stage": "ep2-test", "seq_length": 64,
            "rope_base": cfg.rope_base, "yarn": cfg.yarn.model_dump(), "step": 1, "consumed_samples": 0,
            "parallel": {"expert_model_parallel_size": 2}}
    checkpoint.save(out / "ckpt", 1, model, None, meta)
    if rank == 0:
        torch.save(tokens, out / "tokens.pt")
        torch.save(logits, out / "logits.pt")
    torch.distributed.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
