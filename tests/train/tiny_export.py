"""Shared by the export/generate/serve tests: a tiny Qwen3 with every weight perturbed (norms are
ones at init, which would hide a wrong norm mapping), saved as a trainer checkpoint and exported."""

from pathlib import Path

import torch


def random_model(name: str, seed: int = 0):
    from train.config import load_model_config
    from train.model import build_model, init_parallel

    init_parallel()
    cfg = load_model_config(name)
    torch.manual_seed(seed)
    model = build_model(cfg, seq_length=64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), cfg


def tiny_checkpoint_and_export(root: Path, name: str = "tiny_dense", seed: int = 0):
    """(model, cfg, ckpt_dir, hf_dir, export meta)."""
    from train.hf_export import export_hf, save_megatron

    model, cfg = random_model(name, seed)
    save_megatron(model, cfg, root / "ckpt")
    meta = export_hf(root / "ckpt", root / "hf")
    return model, cfg, root / "ckpt", root / "hf", meta
