"""`q3 post sft`: chat SFT on the trainer core — long-CoT cold start and thinking-mode fusion.

Read top to bottom: config -> chat JSONL -> per-turn samples with assistant-only loss masks
(`train.post.chat`) -> packed sequences (positions and attention reset per sample) -> the shared
`Trainer` (resume, guard, metrics, checkpoints) -> held-out chat loss -> optional HF export.

    q3 post sft --config coldstart load=runs/demo/s3 data=[data/post/coldstart.jsonl]
    q3 post sft --config fusion load=runs/post/coldstart data=[data/post/fusion.jsonl]
    torchrun --nproc_per_node=2 -m train.post.sft --config fusion ...

The loss is the token mean over every trained assistant token of the global batch (all
microbatches and DP ranks), so a long reply weighs by its tokens, not by its sample. Rerunning with
the same `out_dir` resumes from the newest checkpoint; the order of packed sequences is a fixed
permutation per epoch (seed), so a resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from q3.atomic import atomic_write_text
from q3.config import ConfigError
from q3.log import get_logger, print_table
from q3.paths import runs_dir
from train.config import CoreConfig, ModelConfig, OptimConfig, ScheduleConfig, load_model_config

log = get_logger("q3.post.sft")


class SFTConfig(CoreConfig):
    """One chat SFT run. `load` is the starting checkpoint (pretrained or an earlier post stage)."""

    data: list[str] = Field(default_factory=list)        # chat JSONL files (OpenAI `messages` rows)
    valid_data: list[str] = Field(default_factory=list)  # held-out chat JSONL; else `valid_fraction`
    valid_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    seq_length: int | None = None        # packed sequence length (default: the checkpoint's)
    rope_base: float | None = None       # default: the checkpoint's (S3: 1e6)
    train_turns: Literal["all", "last"] = "all"     # which assistant turns carry the loss
    overlong: Literal["drop", "truncate"] = "drop"  # samples longer than seq_length
    on_error: Literal["raise", "skip"] = "raise"    # malformed chat rows
    epochs: float | None = None          # set train_steps from the data: epochs x packed sequences
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4, min_lr=1e-5))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(warmup_fraction=0.05))
    eval_interval: int = 0               # held-out loss every N steps (0: before and after only)
    eval_batches: int = 4                # global batches of held-out sequences per evaluation (max)
    finetune: bool = True                # start from `load`'s weights with a fresh optimizer
    export_hf: str | None = None         # also write a Hugging Face folder of the result here


def shuffled_index(i: int, n: int, seed: int) -> int:
    """The i-th draw of an endless stream over n items: a fixed permutation per epoch (seed)."""
    epoch, k = divmod(i, n)
    perm = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(perm)
    return perm[k]


@dataclass
class PackedData:
    """Packed sequences + a fixed permutation per epoch, indexable by global sample number."""

    seqs: list
    seed: int
    shuffle: bool = True

    def __len__(self) -> int:
        return len(self.seqs)

    def index(self, i: int) -> int:
        return shuffled_index(i, len(self.seqs), self.seed) if self.shuffle else i % len(self.seqs)

    def batch(self, rows: range | list[int]) -> dict:
        from train.post.chat import collate

        return collate([self.seqs[self.index(r)] for r in rows])


def load_samples(paths: list[str], train_turns: str, on_error: str) -> tuple[list, dict]:
    """Chat JSONL files -> ChatSamples (one per trained turn) + counts."""
    from train.post.chat import read_chat_jsonl, tokenize_rows

    rows = []
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"data file not found: {p}")
        rows += read_chat_jsonl(p, on_error=on_error)
    stats: dict = {}
    samples = tokenize_rows(rows, train_turns, on_error=on_error, stats=stats)
    return samples, {"rows": stats["rows"], "samples": len(samples), "skipped": stats["skipped"],
                     "trained_tokens": sum(sum(s.loss_mask) for s in samples)}


def pack_data(samples: list, seq_length: int, seed: int, overlong: str, shuffle: bool = True) -> tuple[PackedData, dict]:
    from train.post.chat import pack

    stats: dict = {}
    seqs = pack(samples, seq_length, overlong=overlong, stats=stats)
    if not seqs:
        raise ConfigError(f"no packed sequences: all {len(samples)} samples were empty or longer than "
                          f"seq_length={seq_length} (overlong=truncate keeps their heads)")
    return PackedData(seqs, seed, shuffle), stats


def split_valid(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out `fraction` of the samples (a seeded choice) when no valid_data is given."""
    if fraction <= 0 or len(samples) < 2:
        return samples, []
    idx = list(range(len(samples)))
    random.Random(seed).shuffle(idx)
    k = max(1, int(round(len(samples) * fraction)))
    held = set(idx[:k])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def assistant_ce(model, batch: dict):
    """Per-token cross entropy at the trained (assistant) positions only, 0 elsewhere: the
    151,936-way output layer runs on the loss tokens, not on every prompt token of the pack."""
    from train.logprobs import token_logprobs

    lp, _ = token_logprobs(model, batch["tokens"], batch["loss_mask"], batch["position_ids"],
                           batch["attention_mask"], labels=batch["labels"])
    return -lp


def start_point(cfg: SFTConfig) -> tuple[ModelConfig, int, float]:
    """Model shape, sequence length and RoPE base: the config's, else the starting checkpoint's."""
    from train import checkpoint as ckpt

    meta: dict = {}
    if cfg.load:
        src = ckpt.latest_checkpoint(cfg.load)
        if src is None:
            raise ConfigError(f"load={cfg.load}: no complete checkpoint there")
        meta = ckpt.read_meta(src)
    if "model" in cfg.model_fields_set or "model" not in meta:
        mcfg = load_model_config(cfg.model, cfg.model_overrides)
    else:
        mcfg = load_model_config(ModelConfig.model_validate(meta["model"]), cfg.model_overrides)
    seq = cfg.seq_length or meta.get("seq_length") or 512
    rope = cfg.rope_base or meta.get("rope_base") or mcfg.rope_base
    return mcfg, int(seq), float(rope)


def run(cfg: SFTConfig, probe: Callable[[object], dict] | None = None) -> dict:
    """Train; returns {'losses', 'history', 'eval', 'checkpoint', ...} (on every rank).

    `probe(trainer) -> {metric: value}`, if given, is an extra held-out evaluation of the model being
    trained (distillation's accuracy and KL to the teacher), run with the held-out loss: before the
    first step, every `eval_interval` steps and at the end, into eval["probe"]["start" | "step_N" | "end"]."""
    if not cfg.data:
        raise ConfigError("post sft needs data=[chat.jsonl, ...] (OpenAI `messages` rows)")
    for p in [*cfg.data, *cfg.valid_data]:          # before importing megatron (seconds)
        if not Path(p).is_file():
            raise ConfigError(f"data file not found: {p}")
    from train.core import Trainer, schedule_from_config
    from train.data import BatchPlan

    out_dir = Path(cfg.out_dir or runs_dir() / "post" / "sft")
    mcfg, seq, rope = start_point(cfg)

    samples, counts = load_samples(cfg.data, cfg.train_turns, cfg.on_error)
    if cfg.valid_data:
        valid, vcounts = load_samples(cfg.valid_data, cfg.train_turns, cfg.on_error)
    else:
        samples, valid = split_valid(samples, cfg.valid_fraction, cfg.seed)
        vcounts = {"samples": len(valid)}
    train_data, pstats = pack_data(samples, seq, cfg.seed, cfg.overlong)
    valid_data = pack_data(valid, seq, cfg.seed, cfg.overlong, shuffle=False)[0] if valid else None

    if cfg.epochs is not None:
        cfg = cfg.model_copy(update={"train_steps": max(1, math.ceil(cfg.epochs * len(train_data) / cfg.global_batch_size))})
    steps = cfg.train_steps
    trainer = Trainer(cfg, mcfg, seq, rope, schedule_from_config(cfg), out_dir,
                      meta={"stage": "SFT", "data": [str(p) for p in cfg.data], "train_steps": steps})
    from train import checkpoint as ckpt

    try:
        own = ckpt.latest_checkpoint(trainer.ckpt_root) is not None     # resuming this run, not starting
        meta = trainer.resume()
        plan = BatchPlan(cfg.micro_batch_size, cfg.global_batch_size, trainer.dp, trainer.dp_rank)
        n_micro = plan.num_microbatches

        def microbatches(data: PackedData, consumed: int, batches: int = 1):
            for b in range(batches):
                for k in range(n_micro):
                    yield data.batch(plan.indices(consumed + b * cfg.global_batch_size, k))

        def held_out_loss() -> float | None:
            """Token-mean loss over the held-out sequences (each DP rank scores its share)."""
            if valid_data is None:
                return None
            batches = min(cfg.eval_batches, math.ceil(len(valid_data) / cfg.global_batch_size))
            return trainer.forward_only(microbatches(valid_data, 0, batches), n_micro, forward_fn=assistant_ce)["loss"]

        evals = trainer.meta["eval"] = dict((meta or {}).get("eval", {})) if own else {}   # checkpointed
        probes = evals.setdefault("probe", {}) if probe else {}
        if trainer.step == 0 and "start" not in evals:
            evals["start"] = held_out_loss()
        if probe and trainer.step == 0 and "start" not in probes:
            probes["start"] = probe(trainer)
        if trainer.rank == 0:
            log.info("SFT of %s: seq %d, RoPE base %g, %d steps, %s", mcfg.name, seq, rope, steps, out_dir)
            print_table("SFT data", ["what", "value"],
                        [("chat rows", counts["rows"]), ("trained turns (train)", len(samples)),
                         ("held-out turns", vcounts["samples"]), ("packed sequences", pstats["sequences"]),
                         ("trained tokens", pstats["trained_tokens"]), ("fill", pstats["fill"]),
                         ("dropped (too long)", pstats["dropped_overlong"]), ("held-out loss before", evals["start"])])
        while not trainer.done:
            res = trainer.train_step(microbatches(train_data, trainer.consumed), n_micro, forward_fn=assistant_ce)
            extra = {}
            if cfg.eval_interval and trainer.step % cfg.eval_interval == 0 and trainer.step < steps:
                extra["eval/loss"] = held_out_loss()
                if probe:
                    probes[f"step_{trainer.step}"] = probe(trainer)
                    extra.update({f"eval/{k}": v for k, v in probes[f"step_{trainer.step}"].items()
                                  if isinstance(v, int | float)})
            trainer.log_step(res, **extra)
            trainer.maybe_save()
        finished = trainer.step >= steps
        if finished:
            evals["end"] = held_out_loss()
            if probe and "end" not in probes:
                probes["end"] = probe(trainer)
        result = {"stage": "SFT", "steps": trainer.step, "train_steps": steps, "seq_length": seq,
                  "rope_base": rope, "model": mcfg.name, "data": counts, "valid": vcounts, "packing": pstats,
                  "final_train_loss": trainer.losses[-1] if trainer.losses else None, "eval": evals,
                  "checkpoint": str(ckpt.latest_checkpoint(trainer.ckpt_root))}
        if finished and trainer.rank == 0:
            write_outputs(trainer, cfg.export_hf, out_dir, result)
            log.info("SFT done: held-out loss %s -> %s; checkpoint %s", _f(evals.get("start")),
                     _f(evals.get("end")), result["checkpoint"])
        return {**result, "losses": list(trainer.losses), "history": list(trainer.history)}
    finally:
        trainer.close()


def write_outputs(trainer, export_hf: str | None, out_dir: Path, result: dict) -> None:
    """A finished post-training run's outputs (rank 0): the HF export if asked, then result.json
    (written last, atomically: its presence means the run is complete)."""
    if export_hf:
        from train.hf_export import write_hf_folder

        write_hf_folder(trainer.model, trainer.mcfg, export_hf, trainer.rope_base)
        result["export_hf"] = export_hf
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=1, sort_keys=True))


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def cli(config: str | None, overrides: list[str]) -> int:
    """Chat SFT (cold start / fusion) from a checkpoint: q3 post sft --config fusion load=CKPT data=[x.jsonl]"""
    from train.core import run_verb

    return run_verb(run, SFTConfig, "post", config, overrides)


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main
    from train.post.cli import VERBS

    sys.exit(script_main(VERBS["sft"], None, prog="q3 post sft"))
