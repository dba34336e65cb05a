"""The trainer core every algorithm runs on: model + DDP + optimizer + schedule + checkpoint +
loss guard + metrics, one optimizer step at a time (torchtitan/megatron style).

    trainer = Trainer(cfg, mcfg, seq_length, rope_base, schedule, out_dir, meta={"stage": "S1"})
    trainer.resume()                                   # own latest checkpoint, else cfg.load
    while not trainer.done:
        result = trainer.train_step(microbatches, num_microbatches)       # one global batch
        trainer.log_step(result)                       # metrics.jsonl, TensorBoard, console
        trainer.maybe_save()                           # every save_interval steps and at the end
    trainer.close()

A microbatch is a dict of tensors: `tokens` [mb,s] long, `labels` [mb,s] long (labels[t] is the
token after tokens[t]), `loss_mask` [mb,s], and optionally `position_ids` [mb,s] (default
0..s-1) and `attention_mask` bool [mb|1,1,s,s] (True = masked out; default causal). Packed
sequences pass a block-diagonal mask and positions that restart at every sample.

An algorithm plugs in through two callables (both see the batch on the device, defaults filled):
- `forward_fn(model, batch) -> output`; default: per-token CE from megatron's fused LM head,
  `model(tokens, position_ids, attention_mask, labels=labels)` -> [mb,s]. With the model's
  `triton_kernels: [linear_ce]` the default pair (both None) computes the same loss from the final
  hidden states with kernels/linear_ce.py instead (train/kernel_spec.py), never the full logits.
- `loss_fn(output, batch) -> (loss_sum, n_tokens, metrics)`; default: sum of the masked per-token
  losses and the number of loss tokens. The reported loss is sum / tokens over the whole global
  batch (all microbatches and DP ranks); the gradient is normalised the same way when
  `cfg.per_token_loss` (see `CoreConfig`). `metrics` (name -> tensor) are summed over
  microbatches and DP ranks into `StepResult.metrics`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from q3.atomic import atomic_write_text
from q3.config import ConfigError
from q3.log import get_logger, set_verbose
from train import checkpoint as ckpt
from train.config import CoreConfig, ModelConfig
from train.schedule import LRSchedule

log = get_logger("q3.train")

Batch = dict
ForwardFn = Callable[[object, Batch], torch.Tensor]
LossFn = Callable[[torch.Tensor, Batch], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]
METRICS = "metrics.jsonl"


# ----------------------------------------------------------------------------- small parts
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


def schedule_from_config(cfg: CoreConfig) -> LRSchedule:
    """An LR schedule from the run config alone (no stage manifest): `optim.lr` is required;
    defaults: min_lr = lr / 10, no warmup, cosine decay over all of `train_steps`."""
    o, s = cfg.optim, cfg.schedule
    if o.lr is None:
        raise ConfigError("optim.lr is required (there is no stage manifest to take it from)")
    return LRSchedule(lr=o.lr, min_lr=o.min_lr if o.min_lr is not None else o.lr / 10,
                      total_steps=cfg.train_steps,
                      warmup_steps=int(round((s.warmup_fraction or 0.0) * cfg.train_steps)),
                      decay=s.decay or "cosine",
                      decay_fraction=s.decay_fraction if s.decay_fraction is not None else 1.0)


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
    """Skip the update when the loss is NaN/inf or spikes over `spike_factor` x its running mean.

    The spike test needs a positive running mean (a cross-entropy); losses that can be <= 0
    (policy-gradient objectives) are only checked for being finite."""

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
        if (self.mean is not None and self.mean > 0 and self.n >= self.cfg.min_history
                and loss > self.cfg.spike_factor * self.mean):
            return f"loss spike {loss:.3f} > {self.cfg.spike_factor} x {self.mean:.3f}"
        return None

    def update(self, loss: float) -> None:
        self.mean = loss if self.mean is None else self.cfg.ema * self.mean + (1 - self.cfg.ema) * loss
        self.n += 1

    def state(self) -> dict:
        return {"mean": self.mean, "n": self.n, "skipped": self.skipped}

    def load(self, s: dict) -> None:
        self.mean, self.n, self.skipped = s.get("mean"), s.get("n", 0), s.get("skipped", 0)


@dataclass
class StepResult:
    """One optimizer step: the global per-token loss, the pre-clip grad norm (nan if skipped),
    whether the update was skipped (and why), the loss_fn metrics summed over the global batch."""

    loss: float
    grad_norm: float
    skipped: bool
    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0                 # the step this result completed (1-based)
    lr: float = 0.0
    seconds: float = 0.0
    n_tokens: float = 0.0         # loss tokens over the global batch
    reason: str | None = None     # why the update was skipped


def _default_forward(model, batch: Batch) -> torch.Tensor:
    return model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])


def _default_loss(per_token: torch.Tensor, batch: Batch):
    loss_mask = batch["loss_mask"]
    return (per_token.float() * loss_mask).sum(), loss_mask.sum(), {}


def check_linear_ce(triton_kernels: list[str] | tuple[str, ...], tensor_parallel: int) -> None:
    """Reject what `linear_ce_lm_loss` cannot do, before the model is built."""
    if "linear_ce" in triton_kernels and tensor_parallel > 1:
        raise ConfigError(f"triton_kernels linear_ce needs tensor_model_parallel_size 1 (got {tensor_parallel}): "
                          "with TP the output layer is split over the vocabulary (and the hidden states over "
                          "the sequence) and the kernel's logsumexp is not reduced across ranks; drop linear_ce")


def _linear_ce_forward(model, batch: Batch):
    from train.kernel_spec import linear_ce_lm_loss

    return linear_ce_lm_loss(model, batch)


def _linear_ce_loss(out, batch: Batch):
    return out[0], batch["loss_mask"].sum(), {}      # out[0]: the masked sum already (per-token CE: out[1])


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """Model + DDP + optimizer + schedule + checkpoints + guard + metrics of one run.

    `meta` is merged into every checkpoint's q3_meta.json (e.g. stage, manifest); it may be
    updated later through `trainer.meta`. Builds megatron's parallel state (`init_parallel`,
    which seeds torch with `cfg.seed`) before the model. `extend_model(model)`, if given, runs
    on the bare GPTModel before DDP wrapping: submodules it attaches (e.g. a reward model's scalar
    head) are trained, optimised and checkpointed with the model.
    """

    def __init__(self, cfg: CoreConfig, mcfg: ModelConfig, seq_length: int, rope_base: float,
                 schedule: LRSchedule, out_dir: Path, meta: dict | None = None,
                 extend_model: Callable[[torch.nn.Module], None] | None = None):
        if cfg.verbose:                  # before megatron's imports log their INFO lines
            set_verbose(True)
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed.finalize_model_grads import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        from train.model import build_model, init_parallel, moe_routers, needs_attention_mask

        if cfg.use_distributed_optimizer and not torch.cuda.is_available():
            raise ConfigError("use_distributed_optimizer needs CUDA: megatron's DistributedOptimizer "
                              "accepts CUDA parameters only (leave it off on CPU)")
        par = cfg.parallel
        check_linear_ce(mcfg.triton_kernels, par.tensor_model_parallel_size)
        init_parallel(tp=par.tensor_model_parallel_size, pp=par.pipeline_model_parallel_size,
                      ep=par.expert_model_parallel_size, seed=cfg.seed)
        if par.pipeline_model_parallel_size != 1:
            raise NotImplementedError("pipeline parallelism is not wired into this trainer yet")
        self.cfg, self.mcfg, self.seq_length, self.rope_base = cfg, mcfg, seq_length, rope_base
        self.schedule, self.out_dir, self.meta = schedule, Path(out_dir), dict(meta or {})
        self.name = self.meta.get("stage") or "train"
        self.rank = torch.distributed.get_rank()
        self.dp, self.dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        self.dp_group = ps.get_data_parallel_group()
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.device = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                       else torch.device("cpu"))

        # model, DDP, optimizer ----------------------------------------------------------
        self.model = build_model(mcfg, seq_length=seq_length, rope_base=rope_base,
                                 tp=par.tensor_model_parallel_size, ep=par.expert_model_parallel_size,
                                 dp=self.dp, per_token_loss=cfg.per_token_loss, device=self.device)
        if extend_model is not None:     # extra modules (a reward head) join DDP, the optimizer and checkpoints
            extend_model(self.model)
        self.tcfg = tcfg = self.model.config
        self.ddp = DistributedDataParallel(
            config=tcfg, module=self.model,
            ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True,
                                                     use_distributed_optimizer=cfg.use_distributed_optimizer))
        o = cfg.optim
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(optimizer="adam", lr=schedule.lr, min_lr=schedule.min_lr, weight_decay=o.weight_decay,
                            adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2, adam_eps=o.adam_eps,
                            clip_grad=o.clip_grad, bf16=mcfg.params_dtype == "bfloat16",
                            params_dtype=tcfg.params_dtype, use_distributed_optimizer=cfg.use_distributed_optimizer),
            [self.ddp])

        # hooks megatron's schedule calls: DP grad sync, global-LBL counters read then reset ------
        self.router_stats = stats = RouterStats(moe_routers(self.model))

        def finalize(*args, **kwargs):
            stats.snapshot()
            return finalize_model_grads(*args, **kwargs)

        tcfg.finalize_model_grads_func = finalize
        tcfg.no_sync_func = self.ddp.no_sync
        tcfg.grad_scale_func = self.optimizer.scale_loss

        # run state (checkpointed) and metrics ------------------------------------------
        self.step, self.consumed = 0, 0
        self.losses: list[float] = []
        self.history: list[dict] = []        # this process's metric rows
        self.guard = LossGuard(cfg.guard)
        self.flops_per_token = flops_per_token(mcfg, seq_length)
        self.peak_flops = cfg.peak_flops or default_peak_flops()
        self.tokens_per_step = cfg.global_batch_size * seq_length
        self._masks: dict[int, torch.Tensor] = {}
        self._explicit_mask = needs_attention_mask(mcfg.transformer_impl)   # TE: causal kernels, no mask
        self.writer = None
        if cfg.tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:                   # tensorboard not installed: console only
                log.warning("tensorboard not installed; console logging only")

    # ------------------------------------------------------------------------- run state
    @property
    def stop_at(self) -> int:
        """The step this invocation stops at: train_steps, or stop_after if earlier."""
        return min(self.cfg.train_steps, self.cfg.stop_after or self.cfg.train_steps)

    @property
    def done(self) -> bool:
        return self.step >= self.stop_at

    def checkpoint_meta(self) -> dict:
        m = self.mcfg
        return {"model": m.model_dump(mode="json"), "seq_length": self.seq_length, "rope_base": self.rope_base,
                "yarn": m.yarn.model_dump(), "step": self.step, "consumed_samples": self.consumed,
                "train": self.cfg.model_dump(mode="json"), "losses": self.losses, "guard": self.guard.state(),
                "dp_size": self.dp, "parallel": self.cfg.parallel.model_dump(), **self.meta}

    def resume(self) -> dict | None:
        """Continue from this run's latest checkpoint (model, optimizer, step, data position, losses,
        guard, RNG); else start from `cfg.load` (finetune: weights only; otherwise weights, optimizer,
        step and data position). Returns the loaded checkpoint's meta (None: fresh start).
        metrics.jsonl keeps only rows up to the resumed step, so replayed steps are not logged twice."""
        meta = None
        latest = ckpt.latest_checkpoint(self.ckpt_root)
        if latest is not None:
            meta = ckpt.load(latest, self.ddp, self.optimizer)
            self.step, self.consumed = meta["step"], meta["consumed_samples"]
            self.losses = meta.get("losses", [])
            self.guard.load(meta.get("guard", {}))
            log.info("resumed %s at step %d (consumed %d samples)", latest, self.step, self.consumed)
        elif self.cfg.load:
            src = ckpt.latest_checkpoint(self.cfg.load)
            if src is None:
                raise FileNotFoundError(f"load={self.cfg.load}: no complete checkpoint there")
            if self.cfg.finetune:      # new stage: weights only; optimizer, schedule and data start fresh
                meta = ckpt.load(src, self.ddp, None, load_rng=False)
            else:
                meta = ckpt.load(src, self.ddp, self.optimizer)
                self.step, self.consumed = meta["step"], meta["consumed_samples"]
            log.info("%s: initialised from %s (finetune=%s)", self.name, src, self.cfg.finetune)
        if self.rank == 0:
            self._truncate_metrics()
        return meta

    def _truncate_metrics(self) -> None:
        """Keep the rows up to the resumed step (tmp + rename): the replayed steps are logged again.
        A torn last line (killed mid-write) is dropped too, instead of failing the resume."""
        path = self.out_dir / METRICS
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= self.step:
                keep.append(line)
        if len(keep) != len(lines):
            log.info("%s: dropping %d metrics rows after step %d (replayed on resume)",
                     path, len(lines) - len(keep), self.step)
            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def save(self) -> Path:
        """Checkpoint the current step (all ranks call this)."""
        return ckpt.save(self.ckpt_root, self.step, self.ddp, self.optimizer, self.checkpoint_meta())

    def maybe_save(self) -> Path | None:
        """Save when `cfg.save` and the step is a multiple of save_interval or the stop step."""
        c = self.cfg
        if c.save and ((c.save_interval and self.step % c.save_interval == 0) or self.step == self.stop_at):
            return self.save()
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------------- forward/backward
    def _forward_step(self, forward_fn: ForwardFn | None, loss_fn: LossFn | None):
        """megatron's forward_step_func: run the model on the next microbatch, return its loss."""
        if forward_fn is None and loss_fn is None and "linear_ce" in self.mcfg.triton_kernels:
            forward_fn, loss_fn = _linear_ce_forward, _linear_ce_loss    # same loss, no full logits

        def forward_step(data_iterator, model):
            batch = self._on_device(next(data_iterator))
            out = (forward_fn or _default_forward)(model, batch)

            def loss_func(output):
                lsum, n, metrics = (loss_fn or _default_loss)(output, batch)
                reduced = {"lm loss": torch.stack([lsum.detach().float(), n.detach().float()])}
                reduced.update({f"m/{k}": v.detach().double().reshape(()) for k, v in metrics.items()})
                return lsum, n.detach().to(torch.int), reduced   # megatron scales grads by the count
            return out, loss_func
        return forward_step

    def _on_device(self, mb: Batch) -> Batch:
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in mb.items()}
        if "loss_mask" in batch:
            batch["loss_mask"] = batch["loss_mask"].float()
        s = batch["tokens"].shape[1]
        if batch.get("position_ids") is None:
            batch["position_ids"] = torch.arange(s, device=self.device).unsqueeze(0).expand_as(batch["tokens"])
        if batch.get("attention_mask") is None:
            if not self._explicit_mask:              # TE: causal kernels, a mask would be ignored
                batch["attention_mask"] = None
            else:
                if s not in self._masks:
                    from train.shims import causal_attention_mask
                    self._masks[s] = causal_attention_mask(s).to(self.device)
                batch["attention_mask"] = self._masks[s]
        return batch

    def _run_schedule(self, microbatches, num_microbatches: int, forward_only: bool,
                      loss_fn: LossFn | None, forward_fn: ForwardFn | None):
        """megatron's forward(-backward) over `num_microbatches`; returns (sums [loss, tokens],
        {metric: sum}) over this rank's microbatches."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        reduced = get_forward_backward_func()(
            forward_step_func=self._forward_step(forward_fn, loss_fn), data_iterator=iter(microbatches),
            model=[self.ddp], num_microbatches=num_microbatches, seq_length=self.seq_length,
            micro_batch_size=self.cfg.micro_batch_size, forward_only=forward_only)
        tot = torch.stack([r["lm loss"] for r in reduced]).sum(0)
        metrics = {k[2:]: torch.stack([r[k] for r in reduced]).sum() for k in reduced[0] if k.startswith("m/")}
        return tot, metrics

    def _all_reduce_metrics(self, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
        if not metrics:
            return {}
        flat = torch.stack(list(metrics.values()))
        torch.distributed.all_reduce(flat, group=self.dp_group)
        return {k: float(v) for k, v in zip(metrics, flat, strict=True)}

    def train_step(self, microbatches: Iterable[Batch], num_microbatches: int,
                   loss_fn: LossFn | None = None, forward_fn: ForwardFn | None = None) -> StepResult:
        """One optimizer step over this rank's `num_microbatches` microbatches of the global batch:
        LR from the schedule, forward/backward, DP grad all-reduce, guard, clip + AdamW step."""
        lr = self.schedule(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        self._sync()
        t0 = time.time()
        tot, metrics = self._run_schedule(microbatches, num_microbatches, False, loss_fn, forward_fn)
        torch.distributed.all_reduce(tot, group=self.dp_group)
        sums = self._all_reduce_metrics(metrics)
        loss = float(tot[0] / tot[1].clamp(min=1))
        why = self.guard.check(loss)
        if why is None:
            ok, grad_norm, _ = self.optimizer.step()
            if ok:
                self.guard.update(loss)
            else:                                    # the optimizer found inf/nan grads itself
                why = "optimizer skipped the update (inf/nan grads)"
                self.guard.skipped += 1
        else:                                        # skip: drop this step's gradients, keep going
            grad_norm = float("nan")
            self.guard.skipped += 1
            log.warning("step %d: %s -> update skipped", self.step + 1, why)
        self._sync()
        seconds = time.time() - t0
        self.step += 1
        self.consumed += self.cfg.global_batch_size
        self.losses.append(loss)
        return StepResult(loss=loss, grad_norm=float(grad_norm or 0.0), skipped=why is not None, metrics=sums,
                          step=self.step, lr=lr, seconds=seconds, n_tokens=float(tot[1]), reason=why)

    def _sync(self) -> None:
        """Step timing waits for the device: CUDA kernels run asynchronously, so without this a step's
        seconds (tokens/s, MFU) would measure the launch queue, not the work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def forward_only(self, microbatches: Iterable[Batch], num_microbatches: int,
                     loss_fn: LossFn | None = None, forward_fn: ForwardFn | None = None) -> dict[str, float]:
        """Score `microbatches` without gradients, `num_microbatches` (one global batch) at a time
        until they run out. Returns sums over all of them and all DP ranks: `loss_sum`, `n_tokens`,
        the loss_fn metrics, and `loss` = loss_sum / n_tokens."""
        from megatron.core.distributed.finalize_model_grads import reset_model_temporary_tensors

        it = iter(microbatches)
        tot, metrics = torch.zeros(2, device=self.device), {}   # all-reduced below: NCCL needs it on the GPU
        with torch.no_grad():                                   # megatron's schedule would keep the graph
            while chunk := list(itertools.islice(it, num_microbatches)):
                t, m = self._run_schedule(chunk, len(chunk), True, loss_fn, forward_fn)
                tot += t
                for k, v in m.items():
                    metrics[k] = metrics.get(k, 0) + v
        reset_model_temporary_tensors(self.tcfg, [self.ddp])    # MoE load-balancing counters
        torch.distributed.all_reduce(tot, group=self.dp_group)
        return {"loss": float(tot[0] / tot[1].clamp(min=1)), "loss_sum": float(tot[0]), "n_tokens": float(tot[1]),
                **self._all_reduce_metrics(metrics)}

    # ------------------------------------------------------------------------- metrics
    def log_step(self, result: StepResult, **extra_metrics: float) -> dict:
        """The step's metrics row -> <out_dir>/metrics.jsonl, TensorBoard and the console (rank 0);
        returns the row (also kept in `trainer.history`)."""
        tps = self.tokens_per_step / result.seconds if result.seconds > 0 else 0.0
        mfu = tps * self.flops_per_token / (self.peak_flops * torch.distributed.get_world_size())
        rs = self.router_stats.summary()
        row = {"step": result.step, "loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
               "tokens_per_s": tps, "mfu": mfu, "skipped": int(result.skipped), **rs}
        if self.router_stats.routers:
            row["moe/counters_after_step"] = self.router_stats.counters_now()
        row.update(result.metrics)
        row.update(extra_metrics)
        self.history.append(row)
        if self.rank != 0:
            return row
        with open(self.out_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if result.step % self.cfg.log_interval == 0 or result.step == self.cfg.train_steps:
            extra = " ".join(f"{k.split('/')[-1]}={rs[k]:.3f}" for k in ("moe/max_over_mean_load", "moe/load_entropy")
                             if k in rs)
            log.info("%s step %d/%d loss %.4f lr %.2e gnorm %.3f tok/s %.0f mfu %.2e %s", self.name, result.step,
                     self.cfg.train_steps, result.loss, result.lr, row["grad_norm"], tps, mfu, extra)
            if self.writer is not None:
                for k, v in row.items():
                    if k != "step":
                        self.writer.add_scalar(k if "/" in k else f"train/{k}", v, result.step)
        return row


def run_verb(run: Callable, cfg_type: type, kind: str, config: str | None, overrides: list[str]) -> int:
    """A training verb: load its typed config (`conf/<kind>/`), run it, and always tear megatron's
    parallel state down (a process may run several stages, e.g. `q3 demo`, the tests)."""
    import sys

    from q3.config import load_config

    cfg = load_config(cfg_type, kind, config, overrides)
    try:
        run(cfg)
    finally:
        if "megatron.core.parallel_state" in sys.modules:    # a config error never imports megatron
            from train.model import destroy_parallel

            destroy_parallel()
    return 0
