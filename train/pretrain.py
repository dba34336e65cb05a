"""`q3 train pretrain`: one pretraining stage (S1, S2 or S3) of a megatron-core Qwen3 model.

Read top to bottom: config -> parallel state -> model (megatron GPTModel, DDP) -> AdamW
(`get_megatron_optimizer`) -> data (manifest -> BlendedMegatronDatasetBuilder) -> resume ->
loop of { lr schedule, forward/backward over microbatches with megatron's
`get_forward_backward_func`, DP grad all-reduce + global-LBL reset in `finalize_model_grads`,
NaN/spike guard, clip + step, logs } -> checkpoints.

Runs as one process or under torchrun (gloo on CPU, NCCL on GPU):

    python -m q3.cli train pretrain --config conf/train/demo_s1.yaml manifest=path/s1.yaml
    torchrun --nproc_per_node=2 -m q3.cli train pretrain --config demo_s1 manifest=...

Stages chain through `load=`: S2 starts from S1's checkpoint with `finetune: true` (weights only,
fresh optimizer and schedule), S3 likewise from S2 with its manifest's seq length and RoPE base
(1,000,000 = ABF). Rerunning a stage with the same out_dir resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from q3.atomic import atomic_write_text
from q3.config import load_config
from q3.log import get_logger, print_table
from q3.manifest import load_manifest
from q3.paths import runs_dir
from train import checkpoint as ckpt
from train.config import ModelConfig, TrainConfig, load_model_config
from train.data import BatchPlan, build_train_dataset, build_validation_datasets, step_microbatches
from train.schedule import make_schedule

log = get_logger("q3.train")


# ----------------------------------------------------------------------------- helpers
def flops_per_token(m: ModelConfig, seq: int) -> float:
    """Training FLOPs per token: 6 x active matmul params + causal attention scores (fwd+bwd)."""
    n = m.num_params(active=True) - m.padded_vocab_size * m.hidden_size * (1 if m.tie_word_embeddings else 2)
    n += m.padded_vocab_size * m.hidden_size          # LM head matmul (the input embedding is a lookup)
    attn = 6 * m.num_layers * seq * m.num_attention_heads * m.kv_channels   # 12*L*s*d / 2 (causal)
    return 6.0 * n + attn


def default_peak_flops() -> float:
    """Per-device peak for the MFU estimate when the config gives none."""
    if torch.cuda.is_available():
        return 989e12                                  # H100 SXM dense BF16
    return (os.cpu_count() or 1) * 3.0e9 * 32 / max(1, int(os.environ.get("WORLD_SIZE", "1")))  # AVX2 FMA fp32


class RouterStats:
    """Per-step expert loads, snapshotted from megatron's global-LBL counters before their reset.

    megatron accumulates `global_tokens_per_expert` (already summed over the DP group) across the
    microbatches of a step; `finalize_model_grads` resets it. We read it just before the reset.
    """

    def __init__(self, routers: list):
        self.routers = routers
        self.last: list[torch.Tensor] = []
        self.ga_steps: list[float] = []

    def snapshot(self) -> None:
        self.last = [r.global_tokens_per_expert.detach().clone() for r in self.routers
                     if getattr(r, "global_tokens_per_expert", None) is not None]
        self.ga_steps = [float(r.ga_steps) for r in self.routers if getattr(r, "ga_steps", None) is not None]

    def counters_now(self) -> float:
        """Sum of the live global-LBL counters (0 right after a step's reset)."""
        return float(sum(r.global_tokens_per_expert.sum() for r in self.routers
                         if getattr(r, "global_tokens_per_expert", None) is not None))

    def summary(self) -> dict[str, float]:
        if not self.last:
            return {}
        loads = torch.stack(self.last)                      # [layers, experts]
        frac = loads / loads.sum(-1, keepdim=True).clamp(min=1)
        ent = -(frac * frac.clamp(min=1e-12).log()).sum(-1) / math.log(loads.shape[-1])
        return {"moe/max_over_mean_load": float((loads.max(-1).values / loads.mean(-1).clamp(min=1e-9)).mean()),
                "moe/load_entropy": float(ent.mean()),
                "moe/step_routed_tokens": float(loads[0].sum()),     # layer 0: tokens x top-k, all DP ranks
                "moe/step_microbatches": self.ga_steps[0] if self.ga_steps else 0.0}


class LossGuard:
    """Skip the update when the loss is NaN/inf or spikes over `spike_factor` x its running mean."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.mean: float | None = None
        self.n = 0
        self.skipped = 0

    def check(self, loss: float) -> str | None:
        if not self.cfg.enabled:
            return None
        if not math.isfinite(loss):
            return "non-finite loss"
        if self.mean is not None and self.n >= self.cfg.min_history and loss > self.cfg.spike_factor * self.mean:
            return f"loss spike {loss:.3f} > {self.cfg.spike_factor} x {self.mean:.3f}"
        return None

    def update(self, loss: float) -> None:
        self.mean = loss if self.mean is None else self.cfg.ema * self.mean + (1 - self.cfg.ema) * loss
        self.n += 1

    def state(self) -> dict:
        return {"mean": self.mean, "n": self.n, "skipped": self.skipped}

    def load(self, s: dict) -> None:
        self.mean, self.n, self.skipped = s.get("mean"), s.get("n", 0), s.get("skipped", 0)


# ----------------------------------------------------------------------------- the stage
def run(cfg: TrainConfig) -> dict:
    """Train one stage; returns {'losses': [...], 'checkpoint': path, ...} (on every rank)."""
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed.finalize_model_grads import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from train.model import build_model, init_parallel, moe_routers
    from train.shims import causal_attention_mask

    if cfg.manifest is None:
        raise ValueError("train pretrain needs manifest=<stage manifest yaml>")
    manifest = load_manifest(cfg.manifest)
    stage = cfg.stage or manifest.stage
    seq = cfg.seq_length or manifest.seq_length
    rope = cfg.rope_base or manifest.rope_base
    par = cfg.parallel
    init_parallel(tp=par.tensor_model_parallel_size, pp=par.pipeline_model_parallel_size,
                  ep=par.expert_model_parallel_size, seed=cfg.seed)
    if par.pipeline_model_parallel_size != 1:
        raise NotImplementedError("pipeline parallelism is not wired into this trainer yet")
    rank = torch.distributed.get_rank()
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    out_dir = Path(cfg.out_dir or runs_dir() / stage.lower())
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = out_dir / "checkpoints"

    # model ------------------------------------------------------------------------
    mcfg = load_model_config(cfg.model, cfg.model_overrides)
    mcfg = mcfg.model_copy(update={"rope_base": rope})
    model = build_model(mcfg, seq_length=seq, rope_base=rope, tp=par.tensor_model_parallel_size,
                        ep=par.expert_model_parallel_size, dp=dp)
    tcfg = model.config
    ddp = DistributedDataParallel(
        config=tcfg, ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True), module=model)

    # optimizer ------------------------------------------------------------------
    o = cfg.optim
    sched = make_schedule(manifest.schedule, cfg.schedule, o, cfg.train_steps)
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=sched.lr, min_lr=sched.min_lr, weight_decay=o.weight_decay,
                        adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2, adam_eps=o.adam_eps,
                        clip_grad=o.clip_grad, bf16=mcfg.params_dtype == "bfloat16",
                        params_dtype=tcfg.params_dtype),
        [ddp])

    # hooks megatron's schedule calls: DP grad sync, global-LBL counters read then reset ----------
    stats = RouterStats(moe_routers(model))

    def finalize(*args, **kwargs):
        stats.snapshot()
        return finalize_model_grads(*args, **kwargs)

    tcfg.finalize_model_grads_func = finalize
    tcfg.no_sync_func = ddp.no_sync
    tcfg.grad_scale_func = optimizer.scale_loss

    # data -------------------------------------------------------------------------
    plan = BatchPlan(cfg.micro_batch_size, cfg.global_batch_size, dp, dp_rank)
    n_micro = plan.num_microbatches
    eval_start = cfg.train_steps * cfg.global_batch_size        # held out: samples training never reaches
    cache = cfg.data_cache_dir or str(out_dir / "data_cache")
    dataset = build_train_dataset(manifest, seq, eval_start + (cfg.eval_batches + 1) * cfg.global_batch_size,
                                  cfg.seed, mcfg.padded_vocab_size, cache, split=cfg.split)
    val_sets = build_validation_datasets(manifest, cfg.validation, seq, cfg.validation_batches * cfg.global_batch_size,
                                         cfg.seed, mcfg.padded_vocab_size, cache, split=cfg.split) \
        if cfg.validation else {}

    # resume / start from the previous stage ---------------------------------------------
    step, consumed = 0, 0
    guard = LossGuard(cfg.guard)
    losses: list[float] = []
    resume = ckpt.latest_checkpoint(ckpt_root)
    if resume is not None:
        meta = ckpt.load(resume, ddp, optimizer)
        step, consumed, losses = meta["step"], meta["consumed_samples"], meta.get("losses", [])
        guard.load(meta.get("guard", {}))
        log.info("resumed %s at step %d (consumed %d samples)", resume, step, consumed)
    elif cfg.load:
        src = ckpt.latest_checkpoint(cfg.load)
        if src is None:
            raise FileNotFoundError(f"load={cfg.load}: no complete checkpoint there")
        if cfg.finetune:      # new stage: weights only; optimizer, schedule and data start fresh
            ckpt.load(src, ddp, None, load_rng=False)
        else:
            meta = ckpt.load(src, ddp, optimizer)
            step, consumed = meta["step"], meta["consumed_samples"]
        log.info("%s: initialised from %s (finetune=%s)", stage, src, cfg.finetune)

    # loop ------------------------------------------------------------------------
    writer = None
    if cfg.tensorboard and rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:                       # tensorboard not installed: console only
            log.warning("tensorboard not installed; console logging only")
    mask = causal_attention_mask(seq)
    position_ids = torch.arange(seq).unsqueeze(0)
    fwd_bwd = get_forward_backward_func()
    fpt = flops_per_token(mcfg, seq)
    peak = cfg.peak_flops or default_peak_flops()
    tokens_per_step = cfg.global_batch_size * seq
    dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        tokens, labels = batch["tokens"].to(dev), batch["labels"].to(dev)
        loss_mask = batch["loss_mask"].to(dev).float()
        out = model(tokens, position_ids.to(dev).expand_as(tokens), mask.to(dev), labels=labels)

        def loss_func(per_token):
            lsum = (per_token.float() * loss_mask).sum()
            n = loss_mask.sum()
            return lsum, n.to(torch.int), {"lm loss": torch.stack([lsum.detach(), n.detach()])}
        return out, loss_func

    def meta_dict() -> dict:
        return {"model": mcfg.model_dump(mode="json"), "stage": stage, "seq_length": seq, "rope_base": rope,
                "yarn": mcfg.yarn.model_dump(), "step": step, "consumed_samples": consumed,
                "manifest": str(cfg.manifest), "train": cfg.model_dump(mode="json"), "losses": losses,
                "guard": guard.state(), "dp_size": dp, "parallel": par.model_dump()}

    def loss_sums(ds, start: int, batches: int) -> torch.Tensor:
        """[sum of token losses, tokens] over `batches` global batches of `ds` from sample `start`,
        summed over DP ranks (forward only; MoE load-balancing counters reset afterwards)."""
        from megatron.core.distributed.finalize_model_grads import reset_model_temporary_tensors

        tot = torch.zeros(2)
        for b in range(batches):
            out = fwd_bwd(forward_step_func=forward_step,
                          data_iterator=step_microbatches(ds, plan, start + b * cfg.global_batch_size),
                          model=[ddp], num_microbatches=n_micro, seq_length=seq,
                          micro_batch_size=cfg.micro_batch_size, forward_only=True)
            tot += torch.stack([r["lm loss"] for r in out]).sum(0)
        reset_model_temporary_tensors(tcfg, [ddp])
        torch.distributed.all_reduce(tot, group=ps.get_data_parallel_group())
        return tot

    def evaluate() -> float:
        """Token-weighted loss on the held-out global batches of the training blend."""
        tot = loss_sums(dataset, eval_start, cfg.eval_batches)
        return float(tot[0] / tot[1].clamp(min=1))

    evals: dict[str, float] = {}
    if cfg.eval_batches and step == 0:
        evals["start"] = evaluate()
        if rank == 0:
            log.info("%s eval loss before training: %.4f", stage, evals["start"])

    history = []
    t_log = time.time()
    stop_at = min(cfg.train_steps, cfg.stop_after or cfg.train_steps)
    while step < stop_at:
        lr = sched(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        t0 = time.time()
        reduced = fwd_bwd(forward_step_func=forward_step,
                          data_iterator=step_microbatches(dataset, plan, consumed), model=[ddp],
                          num_microbatches=n_micro, seq_length=seq, micro_batch_size=cfg.micro_batch_size,
                          forward_only=False)
        tot = torch.stack([r["lm loss"] for r in reduced]).sum(0)
        torch.distributed.all_reduce(tot, group=ps.get_data_parallel_group())
        loss = float(tot[0] / tot[1].clamp(min=1))
        why = guard.check(loss)
        if why is None:
            ok, grad_norm, _ = optimizer.step()
            if ok:
                guard.update(loss)
            else:                                    # the optimizer found inf/nan grads itself
                why = "optimizer skipped the update (inf/nan grads)"
                guard.skipped += 1
        else:                                        # skip: drop this step's gradients, keep going
            grad_norm = float("nan")
            guard.skipped += 1
            log.warning("step %d: %s -> update skipped", step + 1, why)
        step += 1
        consumed += cfg.global_batch_size
        losses.append(loss)
        dt = time.time() - t0
        tps = tokens_per_step / dt
        mfu = tps * fpt / (peak * torch.distributed.get_world_size())
        rs = stats.summary()
        row = {"step": step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm or 0.0), "tokens_per_s": tps,
               "mfu": mfu, "skipped": int(why is not None), **rs}
        if stats.routers:
            row["moe/counters_after_step"] = stats.counters_now()
        history.append(row)
        if rank == 0:
            with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if rank == 0 and (step % cfg.log_interval == 0 or step == cfg.train_steps):
            extra = " ".join(f"{k.split('/')[-1]}={rs[k]:.3f}" for k in ("moe/max_over_mean_load", "moe/load_entropy") if k in rs)
            log.info("%s step %d/%d loss %.4f lr %.2e gnorm %.3f tok/s %.0f mfu %.2e %s",
                     stage, step, cfg.train_steps, loss, lr, row["grad_norm"], tps, mfu, extra)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
        if cfg.save and ((cfg.save_interval and step % cfg.save_interval == 0) or step == stop_at):
            ckpt.save(ckpt_root, step, ddp, optimizer, meta_dict())
    elapsed = time.time() - t_log
    if cfg.eval_batches:
        evals["end"] = evaluate()
        if rank == 0:
            log.info("%s eval loss after step %d: %.4f", stage, step, evals["end"])
            with open(out_dir / "eval.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **evals}) + "\n")
    val: dict[str, float] = {}
    if val_sets and step >= cfg.train_steps:
        sums = {name: loss_sums(ds, 0, cfg.validation_batches) for name, ds in val_sets.items()}
        tot = torch.stack(list(sums.values())).sum(0)
        val = {"val_loss": float(tot[0] / tot[1].clamp(min=1)),
               **{f"val_loss/{n}": float(t[0] / t[1].clamp(min=1)) for n, t in sums.items()}}
        if rank == 0:
            log.info("%s validation loss (%s): %.4f", stage, ", ".join(val_sets), val["val_loss"])
    if writer is not None:
        writer.close()
    last = ckpt.latest_checkpoint(ckpt_root)
    if rank == 0 and step >= cfg.train_steps:
        result = {"stage": stage, "steps": step, "tokens": step * tokens_per_step,
                  "lr": sched.lr, "global_batch_size": cfg.global_batch_size, "seq_length": seq,
                  "n_params": mcfg.num_params(), "n_params_active": mcfg.num_params(active=True),
                  "flops_per_token": fpt, "flops": fpt * step * tokens_per_step,
                  "final_train_loss": losses[-1] if losses else None, "eval": evals,
                  "split": cfg.split, "validation": cfg.validation,
                  "validation_samples_per_dataset": cfg.validation_batches * cfg.global_batch_size if val else 0,
                  "checkpoint": str(last), **val}
        atomic_write_text(out_dir / "result.json", json.dumps(result, indent=1, sort_keys=True))
    if rank == 0 and history:
        k = max(1, len(history) // 5)
        print_table(f"{stage}: {mcfg.name}, seq {seq}, RoPE base {rope:g}, dp {dp}, {len(history)} steps in {elapsed:.1f}s",
                    ["steps", "mean loss", "tokens/s", "MFU"],
                    [(f"{history[i]['step']}-{history[min(i + k, len(history)) - 1]['step']}",
                      sum(h["loss"] for h in history[i:i + k]) / len(history[i:i + k]),
                      sum(h["tokens_per_s"] for h in history[i:i + k]) / len(history[i:i + k]),
                      sum(h["mfu"] for h in history[i:i + k]) / len(history[i:i + k]))
                     for i in range(0, len(history), k)])
        print(f"checkpoint: {last}")
    return {"losses": losses, "history": history, "checkpoint": str(last), "skipped": guard.skipped,
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
    from train.model import destroy_parallel

    cfg = load_config(TrainConfig, "train", config, overrides)
    try:
        run(cfg)
    finally:
        destroy_parallel()
    return 0


if __name__ == "__main__":
    import sys

    from q3.cli import main

    sys.exit(main(["train", "pretrain", *sys.argv[1:]]))
