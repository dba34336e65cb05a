"""Which experts does each data domain use? (expert specialisation of a trained MoE checkpoint)

For every MoE layer we route held-out token windows of each domain (e.g. code vs prose) and
measure the fraction of routed tokens per expert, p(e | domain). Specialisation of a layer is
the total-variation distance between the domains' distributions (0: identical use of experts,
1: disjoint experts); we report the mean over layers, plus the load imbalance (max/mean expert
load over all domains together).

    python -m train.router_analysis <checkpoint> code=<prefix> prose=<prefix> [--seq 128 --windows 16]
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch


def token_windows(prefix: str, seq: int, n: int, skip_docs: int = 0) -> torch.Tensor:
    """n windows of `seq` tokens from the END of an indexed dataset (held out from the start)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    flat = np.concatenate([ds[i] for i in range(len(ds) - 1, max(-1, len(ds) - 1 - 64), -1)])
    need = seq * n
    if flat.size < need:
        flat = np.tile(flat, need // flat.size + 1)
    return torch.from_numpy(flat[:need].astype(np.int64)).view(n, seq)


@torch.no_grad()
def domain_routing(model, windows: dict[str, torch.Tensor], micro: int = 4) -> dict[str, np.ndarray]:
    """{domain: [layers, experts] routed-token fractions}."""
    from train.model import forward_logits, moe_routers

    routers = moe_routers(model)
    out: dict[str, np.ndarray] = {}
    for name, toks in windows.items():
        counts = [torch.zeros(r.config.num_moe_experts) for r in routers]
        def hook(module, inputs, output, k, c=counts):     # returns None: output unchanged
            c[k].add_(output[1].float().sum(0))

        hooks = [r.register_forward_hook(lambda m, i, o, k=k: hook(m, i, o, k)) for k, r in enumerate(routers)]
        for s in range(0, len(toks), micro):
            forward_logits(model, toks[s:s + micro])
        for h in hooks:
            h.remove()
        c = torch.stack(counts)
        out[name] = (c / c.sum(-1, keepdim=True)).numpy()
    for r in routers:          # analysis forwards must not leak into training's LBL counters
        if hasattr(r, "reset_global_aux_loss_tracker"):
            r.reset_global_aux_loss_tracker()
    return out


def specialisation(frac: dict[str, np.ndarray]) -> dict[str, float]:
    names = sorted(frac)
    tv = [0.5 * np.abs(frac[a] - frac[b]).sum(-1).mean() for i, a in enumerate(names) for b in names[i + 1:]]
    allf = np.mean([frac[n] for n in names], axis=0)
    return {"specialisation_tv": float(np.mean(tv)),
            "load_max_over_mean": float((allf.max(-1) / allf.mean(-1)).mean())}


def main(argv: list[str]) -> int:
    from train.checkpoint import load_model
    from train.model import destroy_parallel

    ckpt, seq, n = argv[0], 128, 16
    domains = {}
    rest = iter(argv[1:])
    for a in rest:
        if a == "--seq":
            seq = int(next(rest))
        elif a == "--windows":
            n = int(next(rest))
        else:
            k, v = a.split("=", 1)
            domains[k] = v
    model, _, _ = load_model(ckpt)
    frac = domain_routing(model, {k: token_windows(v, seq, n) for k, v in domains.items()})
    print(json.dumps(specialisation(frac)))
    destroy_parallel()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
