"""`q3 train pretrain`: one pretraining stage (S1, S2 or S3) of a megatron-core Qwen3 model.

The model, optimizer, schedule, checkpoints, guard and step metrics live in `train.core.Trainer`
(shared with post-training); this module holds what is specific to pretraining. Read top to
bottom: config + stage manifest -> Trainer -> data (manifest -> BlendedMegatronDatasetBuilder) ->
resume -> held-out eval -> loop of `train_step` over the next global batch -> held-out eval,
validation sets, result.json, summary table.

Runs as one process or under torchrun (gloo on CPU, NCCL on GPU):

    python -m q3.cli train pretrain --config conf/train/demo_s1.yaml manifest=path/s1.yaml
    torchrun --nproc_per_node=2 -m q3.cli train pretrain --config demo_s1 manifest=...

Stages chain through `load=`: S2 starts from S1's checkpoint with `finetune: true` (weights only,
fresh optimizer and schedule), S3 likewise from S2 with its manifest's seq length and RoPE base
(1,000,000 = ABF). Rerunning a stage with the same out_dir resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import time
from itertools import chain
from pathlib import Path

import torch

from q3.atomic import atomic_write_text
from q3.config import ConfigError, load_config
from q3.log import get_logger, print_table
from q3.manifest import load_manifest
from q3.paths import runs_dir
from train import checkpoint as ckpt
from train.config import TrainConfig, load_model_config
from train.core import LossGuard, Trainer, flops_per_token
from train.data import BatchPlan, build_train_dataset, build_validation_datasets, step_microbatches
from train.schedule import make_schedule

__all__ = ["LossGuard", "flops_per_token", "run", "run_stages", "cli"]   # the first two: moved to train.core

log = get_logger("q3.train")


def run(cfg: TrainConfig) -> dict:
    """Train one stage; returns {'losses': [...], 'checkpoint': path, ...} (on every rank)."""
    if cfg.manifest is None:
        raise ConfigError("train pretrain needs manifest=<stage manifest yaml>")
    manifest = load_manifest(cfg.manifest)
    stage = cfg.stage or manifest.stage
    seq = cfg.seq_length or manifest.seq_length
    rope = cfg.rope_base or manifest.rope_base
    mcfg = load_model_config(cfg.model, cfg.model_overrides).model_copy(update={"rope_base": rope})
    sched = make_schedule(manifest.schedule, cfg.schedule, cfg.optim, cfg.train_steps)
    out_dir = Path(cfg.out_dir or runs_dir() / stage.lower())
    trainer = Trainer(cfg, mcfg, seq, rope, sched, out_dir, meta={"stage": stage, "manifest": str(cfg.manifest)})

    # data: the training blend; held-out global batches past the end of training; validation sets --
    plan = BatchPlan(cfg.micro_batch_size, cfg.global_batch_size, trainer.dp, trainer.dp_rank)
    eval_start = cfg.train_steps * cfg.global_batch_size        # held out: samples training never reaches
    cache = cfg.data_cache_dir or str(out_dir / "data_cache")
    dataset = build_train_dataset(manifest, seq, eval_start + (cfg.eval_batches + 1) * cfg.global_batch_size,
                                  cfg.seed, mcfg.padded_vocab_size, cache, split=cfg.split)
    val_sets = build_validation_datasets(manifest, cfg.validation, seq, cfg.validation_batches * cfg.global_batch_size,
                                         cfg.seed, mcfg.padded_vocab_size, cache, split=cfg.split) \
        if cfg.validation else {}

    def score(ds, start: int, batches: int) -> dict[str, float]:
        """Forward-only loss sums over `batches` global batches of `ds` from sample `start`."""
        mbs = chain.from_iterable(step_microbatches(ds, plan, start + b * cfg.global_batch_size)
                                  for b in range(batches))
        return trainer.forward_only(mbs, plan.num_microbatches)

    # resume (or start from the previous stage), then the held-out loss before training -------
    own = ckpt.latest_checkpoint(trainer.ckpt_root) is not None      # resuming this run, not starting it
    resumed = trainer.resume()
    evals: dict[str, float] = {}
    if cfg.eval_batches and own:
        if resumed and "eval_start" in resumed:
            evals["start"] = resumed["eval_start"]         # scored by the invocation this one resumes
    elif cfg.eval_batches:     # a fresh start, or `load=` (another run's eval_start is not this run's)
        evals["start"] = score(dataset, eval_start, cfg.eval_batches)["loss"]
        if trainer.rank == 0:
            log.info("%s eval loss before training: %.4f", stage, evals["start"])
    if "start" in evals:
        trainer.meta["eval_start"] = evals["start"]

    # loop ------------------------------------------------------------------------------
    t_start = time.time()
    while not trainer.done:
        step_result = trainer.train_step(step_microbatches(dataset, plan, trainer.consumed), plan.num_microbatches)
        trainer.log_step(step_result)
        trainer.maybe_save()
    elapsed = time.time() - t_start
    trainer.close()
    step, rank = trainer.step, trainer.rank

    # held-out loss after the stage, fixed validation sets, result.json --------------------------
    if cfg.eval_batches:
        evals["end"] = score(dataset, eval_start, cfg.eval_batches)["loss"]
        if rank == 0:
            log.info("%s eval loss after step %d: %.4f", stage, step, evals["end"])
            with open(out_dir / "eval.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **evals}) + "\n")
    val: dict[str, float] = {}
    if val_sets and step >= cfg.train_steps:
        sums = {name: score(ds, 0, cfg.validation_batches) for name, ds in val_sets.items()}
        tot = torch.tensor([[s["loss_sum"], s["n_tokens"]] for s in sums.values()]).sum(0)
        val = {"val_loss": float(tot[0] / tot[1].clamp(min=1)), **{f"val_loss/{n}": s["loss"] for n, s in sums.items()}}
        if rank == 0:
            log.info("%s validation loss (%s): %.4f", stage, ", ".join(val_sets), val["val_loss"])
    last = ckpt.latest_checkpoint(trainer.ckpt_root)
    tokens_per_step = trainer.tokens_per_step
    fpt = trainer.flops_per_token
    if rank == 0 and step >= cfg.train_steps:
        report = {"stage": stage, "steps": step, "tokens": step * tokens_per_step,
                  "lr": sched.lr, "global_batch_size": cfg.global_batch_size, "seq_length": seq,
                  "n_params": mcfg.num_params(), "n_params_active": mcfg.num_params(active=True),
                  "flops_per_token": fpt, "flops": fpt * step * tokens_per_step,
                  "final_train_loss": trainer.losses[-1] if trainer.losses else None, "eval": evals,
                  "split": cfg.split, "validation": cfg.validation,
                  "validation_samples_per_dataset": cfg.validation_batches * cfg.global_batch_size if val else 0,
                  "checkpoint": str(last), **val}
        atomic_write_text(out_dir / "result.json", json.dumps(report, indent=1, sort_keys=True))

    # summary table: the steps of this invocation in (up to) five groups ------------------------
    history = trainer.history
    if rank == 0 and history:
        k = max(1, len(history) // 5)
        print_table(f"{stage}: {mcfg.name}, seq {seq}, RoPE base {rope:g}, dp {trainer.dp}, "
                    f"{len(history)} steps in {elapsed:.1f}s",
                    ["steps", "mean loss", "tokens/s", "MFU"],
                    [(f"{history[i]['step']}-{history[min(i + k, len(history)) - 1]['step']}",
                      sum(h["loss"] for h in history[i:i + k]) / len(history[i:i + k]),
                      sum(h["tokens_per_s"] for h in history[i:i + k]) / len(history[i:i + k]),
                      sum(h["mfu"] for h in history[i:i + k]) / len(history[i:i + k]))
                     for i in range(0, len(history), k)])
        print(f"checkpoint: {last}")
    return {"losses": trainer.losses, "history": history, "checkpoint": str(last), "skipped": trainer.guard.skipped,
            "eval": evals, **val}


def run_stages(manifests: list[str | Path], out_root: str | Path = "runs/demo",
               configs: tuple[str, ...] = ("demo_s1", "demo_s2", "demo_s3"),
               overrides: list[str] | None = None) -> dict[str, str]:
    """S1 -> S2 -> S3 in this process: each stage starts from the previous stage's checkpoint.

    What `make demo` calls (`if __name__ == "__main__"` guard needed: dist_checkpointing spawns).
    Returns {stage config: checkpoint dir}; the last one is what `q3 train export-hf` reads.
    """
    from train.model import destroy_parallel

    out_root, done, prev = Path(out_root), {}, None
    for conf, manifest in zip(configs, manifests, strict=True):
        ov = [f"manifest={manifest}", f"out_dir={out_root / conf}", *(overrides or [])]
        if prev is not None:
            ov += [f"load={prev}", "finetune=true"]
        try:
            res = run(load_config(TrainConfig, "train", conf, ov))
        finally:
            destroy_parallel()
        done[conf] = prev = res["checkpoint"]
    return done


def cli(config: str | None, overrides: list[str]) -> int:
    """Pretrain a stage from its manifest (runs under torchrun too)."""
    from train.core import run_verb

    return run_verb(run, TrainConfig, "train", config, overrides)


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main
    from train.cli import VERBS

    sys.exit(script_main(VERBS["pretrain"], None, prog="q3 train pretrain"))
