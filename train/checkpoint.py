"""megatron-core distributed checkpoints: model + optimizer (+ run state) save/resume.

Layout of a run directory (what `q3 train export-hf` and the next stage read):

    <out_dir>/checkpoints/latest                 text: the newest complete iteration dir name
    <out_dir>/checkpoints/iter_0000020/          megatron dist_checkpointing (torch_dist format):
        metadata.json, common.pt, *.distcp        sharded model + optimizer state, megatron-LM key layout
        q3_meta.json                             ModelConfig, stage, seq_length, rope_base, yarn,
                                                 step, consumed_samples, lr schedule, parallel
        rng/rank_<r>.pt                          per-rank torch RNG state
        _Q3_SUCCESS                              written last: the checkpoint is complete

Sharded tensors carry global shapes, so a checkpoint saved with expert parallelism (experts split
over ranks) loads into a model built with any EP size — `load_model` builds EP=1 for export.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from train.config import ModelConfig

LATEST = "latest"
META = "q3_meta.json"
SUCCESS = "_Q3_SUCCESS"


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def iter_dir(ckpt_root: Path, step: int) -> Path:
    return Path(ckpt_root) / f"iter_{step:07d}"


def latest_checkpoint(path: str | Path) -> Path | None:
    """`path` may be a run dir, its checkpoints/ dir, or an iter_* dir. None if nothing complete."""
    p = Path(path)
    if (p / META).exists() and (p / SUCCESS).exists():
        return p
    for root in (p, p / "checkpoints"):
        marker = root / LATEST
        if marker.exists():
            cand = root / marker.read_text().strip()
            if (cand / SUCCESS).exists():
                return cand
    return None


def read_meta(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / META).read_text())


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def save(ckpt_root: str | Path, step: int, model, optimizer, meta: dict) -> Path:
    """Save model + optimizer + meta at `step` (all ranks call this)."""
    from megatron.core import dist_checkpointing

    ckpt_root = Path(ckpt_root)
    out = iter_dir(ckpt_root, step)
    if _rank() == 0:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    _barrier()
    model_sd = _unwrap(model).sharded_state_dict()
    sd = {"model": model_sd}
    if optimizer is not None:
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd)
    dist_checkpointing.save(sd, str(out))
    (out / "rng").mkdir(exist_ok=True)
    torch.save({"torch": torch.get_rng_state()}, out / "rng" / f"rank_{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        (out / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        (out / SUCCESS).write_text("")
        tmp = ckpt_root / (LATEST + ".tmp")
        tmp.write_text(out.name)
        os.replace(tmp, ckpt_root / LATEST)
    _barrier()
    return out


def load(ckpt: str | Path, model, optimizer=None, load_rng: bool = True) -> dict:
    """Load weights (and optimizer state if given) from `ckpt`; returns its meta."""
    from megatron.core import dist_checkpointing

    ckpt = Path(ckpt)
    inner = _unwrap(model)
    model_sd = inner.sharded_state_dict()
    sd = {"model": model_sd}
    if optimizer is not None:
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=True)
    state = dist_checkpointing.load(sd, str(ckpt))
    inner.load_state_dict(state["model"], strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    rng = ckpt / "rng" / f"rank_{_rank()}.pt"
    if load_rng and rng.exists():
        torch.set_rng_state(torch.load(rng, weights_only=True)["torch"])
    return read_meta(ckpt)


def load_model(ckpt: str | Path, rope_base: float | None = None, seq_length: int | None = None):
    """A GPTModel with the checkpoint's weights, built single-process (EP=TP=PP=1), eval mode.

    For export, generation and frozen reference/teacher models: returns (model, ModelConfig, meta).
    Built in the local spec (`train.model.inference_config`) whatever the checkpoint was trained
    with (TE, FP8, fusions): the keys are the same and no TE is needed to read it. Calls
    `init_parallel()` if megatron's parallel state is not set up yet.
    """
    from megatron.core import parallel_state as ps

    from train.model import build_model, inference_config, init_parallel

    path = latest_checkpoint(ckpt)
    if path is None:
        raise FileNotFoundError(f"no complete checkpoint at {ckpt}")
    meta = read_meta(path)
    if not ps.model_parallel_is_initialized():
        init_parallel()
    mcfg = inference_config(ModelConfig.model_validate(meta["model"]))
    model = build_model(mcfg, seq_length=seq_length or meta["seq_length"],
                        rope_base=rope_base or meta["rope_base"])
    load(path, model, optimizer=None, load_rng=False)
    model.eval()
    return model, mcfg, meta
