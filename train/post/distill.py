"""`q3 post distill`: strong-to-weak distillation (Qwen3 report, post-training of the small models).

Two phases, one verb (`phase=`), a frozen teacher (one of our checkpoints, a larger dense or MoE
config; an HF Qwen3 folder is imported first with `q3 train import-hf`) and a smaller student that
shares the tokenizer:

- off_policy: the teacher answers every prompt in each of `modes` (/think and /no_think), with the
  rollout engine, into `<out_dir>/teacher_data.jsonl` (chat rows with provenance; written once,
  atomically, and reused by a rerun); the student is then fine-tuned on them by the SFT path
  (`train.post.sft.run`, assistant-only loss, packing, resume);
- on_policy: every step the student samples replies to `prompts_per_step` prompts (mode at random
  per prompt; with probability 1 - `lmbda` the teacher writes the reply instead, GKD's mixture),
  the teacher scores the same tokens, and the student minimises the per-token divergence to the
  teacher on the sampled response positions (`train.post.distill_loss`: reverse KL by default,
  forward, or a generalized JSD; full vocabulary or the teacher's top-k). Prompt tokens and forced
  tokens (the thinking-budget sentence) are never in the loss.

Memory: neither model computes logits for prompt tokens. The teacher's final hidden states at the
response positions are computed once per step (no grad); the loss then applies both output layers
`chunk_size` positions at a time, each chunk checkpointed, so the 151,936-way logits of at most one
chunk per model are alive at once, in the forward and in the backward.

    q3 post distill --config distill phase=off_policy teacher=runs/post/rl load=null model=tiny_dense \\
        model_overrides={hidden_size: 32} prompts=[data/post/rl_pairs.jsonl] out_dir=runs/post/distill-off
    q3 post distill --config distill phase=on_policy teacher=runs/post/rl load=runs/post/distill-off \\
        prompts=[data/post/rl_pairs.jsonl] out_dir=runs/post/distill-on
    torchrun --nproc_per_node=2 -m train.post.distill ...        (same arguments)

Held-out evaluation (`eval_pairs`), the same for both phases so they compare: greedy accuracy
(synth's verifiers, per mode too), sampled pass@1, and the student's mean per-token reverse KL to
the teacher over the full vocabulary on its own sampled replies — before training, every
`eval_interval` steps and at the end, into result.json's `eval`.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch.utils.checkpoint import checkpoint

from q3.atomic import atomic_write_text
from q3.config import ConfigError
from q3.log import get_logger, print_table
from q3.paths import runs_dir
from train.config import CoreConfig, OptimConfig, ScheduleConfig

log = get_logger("q3.post.distill")
Mode = Literal["think", "no_think"]


class DistillConfig(CoreConfig):
    """One distillation phase. `load`: the student's start (null + `model`: from scratch);
    on_policy derives global_batch_size = prompts_per_step x samples_per_prompt and
    train_steps = rollout_steps."""

    phase: Literal["off_policy", "on_policy"] = "on_policy"
    teacher: str | None = None                      # the teacher's checkpoint directory (required)
    prompts: list[str] = Field(default_factory=list)  # RL pairs (`query`) or chat rows (`messages`) JSONL
    modes: list[Mode] = Field(default_factory=lambda: ["think", "no_think"])   # drawn per prompt
    max_tokens: int = Field(default=64, ge=1)       # reply limit (teacher and student)
    thinking_budget: int | None = None
    seq_length: int | None = None                   # student's max length (default: its checkpoint's)
    rope_base: float | None = None
    # off-policy: the teacher's replies, then SFT
    teacher_data: str | None = None                 # reuse these teacher replies instead of generating
    teacher_samples: int = Field(default=1, ge=1)   # replies per prompt and mode
    teacher_temperature: float = Field(default=0.0, ge=0)   # 0: greedy (the teacher's best answer)
    keep_truncated: bool = False                    # keep teacher replies cut at max_tokens
    valid_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    # on-policy: the student samples, the teacher's logits are the target
    rollout_steps: int = Field(default=20, ge=1)
    prompts_per_step: int = Field(default=8, ge=1)
    samples_per_prompt: int = Field(default=1, ge=1)
    temperature: float = Field(default=1.0, gt=0)   # the student samples its own distribution
    divergence: Literal["reverse", "forward", "jsd"] = "reverse"
    jsd_beta: float = Field(default=0.5, gt=0, lt=1)
    lmbda: float = Field(default=1.0, ge=0, le=1)   # share of replies the student writes (1: all)
    top_k: int = Field(default=0, ge=0)             # 0: full vocabulary; k: teacher's top-k + rest
    chunk_size: int = Field(default=256, ge=1)      # positions per output-layer chunk
    rollout_batch: int = Field(default=128, ge=1)
    # held-out evaluation (both phases)
    eval_pairs: str | None = None
    eval_interval: int = Field(default=0, ge=0)     # every N optimizer steps (0: start and end)
    eval_limit: int = Field(default=64, ge=1)
    eval_k: int = Field(default=4, ge=1)            # sampled replies per item (pass@1, KL)
    finetune: bool = True
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4, min_lr=1e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(warmup_fraction=0.0, decay="constant"))
    export_hf: str | None = None

    @model_validator(mode="after")
    def _derived(self) -> DistillConfig:
        if not self.modes:
            raise ValueError("modes must name at least one of think, no_think")
        if self.phase == "on_policy":
            object.__setattr__(self, "global_batch_size", self.prompts_per_step * self.samples_per_prompt)
            object.__setattr__(self, "train_steps", self.rollout_steps)
        return self


# ------------------------------------------------------------------------------- prompts and modes
def draw_mode(cfg: DistillConfig, key: int, what: str = "train") -> str:
    """The mode of prompt `key`: seeded, independent of batching and DP split."""
    return random.Random(f"{cfg.seed}:{what}:{key}").choice(cfg.modes)


def prompt_ids(row: dict, mode: str) -> list[int]:
    from q3.tokenizer import encode, render_chat
    from train.post.grpo import prompt_messages

    return encode(render_chat(prompt_messages(row, mode), add_generation_prompt=True))


def sampling(cfg: DistillConfig, temperature: float):
    from train.sampling import SamplingParams

    return SamplingParams(temperature=temperature, top_p=1.0, top_k=0, presence_penalty=0.0,
                          max_tokens=cfg.max_tokens, thinking_budget=cfg.thinking_budget)


def load_teacher(cfg: DistillConfig, student_vocab: int):
    """The frozen teacher (eval mode, no grad, never in an optimizer); vocabularies must agree."""
    from train import checkpoint as ckpt

    if not cfg.teacher:
        raise ConfigError("post distill needs teacher=<checkpoint dir> (an HF folder: `q3 train import-hf` it first)")
    if ckpt.latest_checkpoint(cfg.teacher) is None:
        hint = " (an HF folder: import it with `q3 train import-hf` first)" if (Path(cfg.teacher) / "config.json").exists() else ""
        raise ConfigError(f"teacher={cfg.teacher}: no complete checkpoint there{hint}")
    model, mcfg, _ = ckpt.load_model(cfg.teacher)
    if mcfg.padded_vocab_size != student_vocab:
        raise ConfigError(f"teacher {mcfg.name} has a {mcfg.padded_vocab_size}-row vocabulary, the student "
                          f"{student_vocab}: distillation needs a shared tokenizer")
    for p in model.parameters():
        p.requires_grad_(False)
    return model, mcfg


def rollout_rows(prompt: list[int], tokens: list[int], sampled: list[bool]) -> dict:
    """A training row: input = prompt + reply minus the last token, labels shifted by one; the loss
    mask marks the sampled reply tokens (prompt and forced tokens excluded)."""
    full = prompt + tokens
    mask = [0.0] * (len(full) - 1)
    for j, ok in enumerate(sampled):
        mask[len(prompt) - 1 + j] = 1.0 if ok else 0.0
    return {"tokens": full[:-1], "labels": full[1:], "loss_mask": mask}


def collate(rows: list[dict]) -> dict:
    from q3.tokenizer import EOD_ID

    s = max(len(r["tokens"]) for r in rows)

    def pad(key, value, dtype):
        return torch.tensor([r[key] + [value] * (s - len(r[key])) for r in rows], dtype=dtype)

    return {"tokens": pad("tokens", EOD_ID, torch.long), "labels": pad("labels", 0, torch.long),
            "loss_mask": pad("loss_mask", 0.0, torch.float32)}


# ------------------------------------------------------------------------------- the divergence
def _chunk(s_h, t_h, student, teacher, kind: str, beta: float, top_k: int) -> torch.Tensor:
    from train.logprobs import output_logits
    from train.post.distill_loss import token_divergence

    with torch.no_grad():
        t_logits = output_logits(teacher, t_h)
    loss, rkl = token_divergence(output_logits(student, s_h), t_logits, kind, beta, top_k)
    return torch.stack([loss, rkl], dim=-1)


def divergence_per_token(student, teacher_hidden: torch.Tensor, teacher, batch: dict, kind: str = "reverse",
                         beta: float = 0.5, top_k: int = 0, chunk_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [b, s], reverse KL [b, s]) at the loss positions of `batch` (0 elsewhere), the student
    run with grad if enabled; `teacher_hidden` [n, h_t]: the teacher's final hidden states at the same
    positions, in `loss_mask.nonzero()` order (`teacher_states`)."""
    from train.logprobs import response_hidden

    h, (bi, ti) = response_hidden(student, batch["tokens"], batch["loss_mask"], batch.get("position_ids"),
                                  batch.get("attention_mask"))
    parts = []
    for k in range(0, h.shape[0], chunk_size):
        args = (h[k:k + chunk_size], teacher_hidden[k:k + chunk_size], student, teacher, kind, beta, top_k)
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk, *args, use_reentrant=False))
        else:
            parts.append(_chunk(*args))
    stats = torch.cat(parts) if parts else h.new_zeros(0, 2, dtype=torch.float32)
    b, s = batch["tokens"].shape
    loss = torch.zeros(b, s, device=h.device).index_put((bi, ti), stats[:, 0])
    rkl = torch.zeros(b, s, device=h.device).index_put((bi, ti), stats[:, 1])
    return loss, rkl


def teacher_states(teacher, batch: dict) -> torch.Tensor:
    from train.logprobs import response_hidden

    with torch.no_grad():
        return response_hidden(teacher, batch["tokens"], batch["loss_mask"], batch.get("position_ids"),
                               batch.get("attention_mask"))[0]


def reverse_kl(student, teacher, rows: list[dict], micro: int = 8) -> tuple[float, float]:
    """(sum of per-token reverse KL, tokens) of `rollout_rows` under both models, no grad."""
    total = n = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), micro):
            batch = collate(rows[i:i + micro])
            _, rkl = divergence_per_token(student, teacher_states(teacher, batch), teacher, batch)
            total += float(rkl.sum())
            n += float(batch["loss_mask"].sum())
    return total, n


# ------------------------------------------------------------------------------- evaluation
def evaluate(cfg: DistillConfig, student, teacher, items: list[dict]) -> dict:
    """Held-out: greedy accuracy (all and per mode), sampled pass@1 and the student's reverse KL to
    the teacher on its own sampled replies; modes drawn per item (seeded, the same every call)."""
    from q3.tokenizer import decode
    from synth.verifiers import verify_item
    from train.rollout import STOP_IDS, RolloutEngine

    was = student.training
    student.eval()
    engine = RolloutEngine(student, max_batch=cfg.rollout_batch)
    modes = [draw_mode(cfg, i, "eval") for i in range(len(items))]
    prompts = [prompt_ids(it, m) for it, m in zip(items, modes, strict=True)]

    def passed(roll, item) -> bool:
        return verify_item(decode([t for t in roll.token_ids if t not in STOP_IDS]), item).passed

    greedy = engine.generate(prompts, sampling(cfg, 0.0), n=1, seed=cfg.seed)
    sampled = engine.generate(prompts, sampling(cfg, cfg.temperature), n=cfg.eval_k, seed=cfg.seed)
    ok = [passed(g[0], it) for g, it in zip(greedy, items, strict=True)]
    out = {"greedy_accuracy": sum(ok) / len(ok),
           "pass@1": sum(passed(r, it) for g, it in zip(sampled, items, strict=True) for r in g) / (len(items) * cfg.eval_k)}
    for m in cfg.modes:
        sel = [o for o, mm in zip(ok, modes, strict=True) if mm == m]
        if sel:
            out[f"greedy_accuracy/{m}"] = sum(sel) / len(sel)
    rows = [rollout_rows(r.prompt_ids, r.token_ids, r.sampled) for g in sampled for r in g if r.token_ids]
    kl, n = reverse_kl(student, teacher, rows)
    out["kl_to_teacher"] = kl / max(n, 1.0)
    out["mean_tokens"] = sum(len(r.token_ids) for g in sampled for r in g) / (len(items) * cfg.eval_k)
    student.train(was)
    return out


# ------------------------------------------------------------------------------- off-policy
def teacher_replies(cfg: DistillConfig, teacher, rows: list[dict], rank: int = 0, world: int = 1) -> tuple[list[dict], dict]:
    """This rank's share of the teacher's chat rows: every prompt in every mode, `teacher_samples`
    replies each; (rows, counts). Replies cut at max_tokens are dropped unless keep_truncated."""
    from q3.tokenizer import decode
    from train.generate import split_thinking
    from train.post.grpo import prompt_messages
    from train.rollout import STOP_IDS, RolloutEngine, row_seed

    engine = RolloutEngine(teacher, max_batch=cfg.rollout_batch)
    params = sampling(cfg, cfg.teacher_temperature)
    jobs = [(i, m) for i in range(len(rows)) for m in cfg.modes][rank::world]
    out, counts = [], {"replies": 0, "truncated": 0, "kept": 0}
    for start in range(0, len(jobs), cfg.rollout_batch):
        part = jobs[start:start + cfg.rollout_batch]
        prompts = [prompt_ids(rows[i], m) for i, m in part]
        seeds = [row_seed(cfg.seed, i, cfg.modes.index(m)) for i, m in part]
        for (i, m), group in zip(part, engine.generate(prompts, params, n=cfg.teacher_samples, seeds=seeds), strict=True):
            for k, r in enumerate(group):
                counts["replies"] += 1
                cut = r.finish_reason == "length"
                counts["truncated"] += cut
                if cut and not cfg.keep_truncated:
                    continue
                reasoning, answer = split_thinking(decode([t for t in r.token_ids if t not in STOP_IDS]))
                out.append({"messages": [*prompt_messages(rows[i], m),
                                         {"role": "assistant", "reasoning_content": reasoning or "", "content": answer}],
                            "source": "distill:teacher", "teacher": cfg.teacher, "mode": m, "prompt_index": i,
                            "sample": k, "finish_reason": r.finish_reason, "budget_forced": r.budget_forced})
                counts["kept"] += 1
    return out, counts


def write_teacher_data(cfg: DistillConfig, rows: list[dict], out_dir: Path, get_teacher) -> tuple[Path, dict]:
    """`<out_dir>/teacher_data.jsonl` (+ .json counts), generated on every rank's share and written
    once by rank 0; an existing complete file is reused. `get_teacher() -> (model, ModelConfig)`."""
    from train.model import init_parallel

    path = out_dir / "teacher_data.jsonl"
    stats_path = out_dir / "teacher_data.json"
    if path.exists() and stats_path.exists():
        return path, json.loads(stats_path.read_text())
    par = cfg.parallel                               # as the Trainer will: it reuses this state
    init_parallel(tp=par.tensor_model_parallel_size, pp=par.pipeline_model_parallel_size,
                  ep=par.expert_model_parallel_size, seed=cfg.seed)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    teacher, tcfg = get_teacher()
    t0 = time.time()
    mine, counts = teacher_replies(cfg, teacher, rows, rank, world)
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, (mine, counts))
    chat = sorted((r for p, _ in parts for r in p), key=lambda r: (r["prompt_index"], r["mode"], r["sample"]))
    stats = {k: sum(c[k] for _, c in parts) for k in counts}
    stats.update({"teacher": cfg.teacher, "teacher_model": tcfg.name, "prompts": len(rows), "modes": cfg.modes,
                  "seconds": time.time() - t0})
    if not chat:
        raise ConfigError(f"the teacher produced no usable reply ({stats['truncated']} of {stats['replies']} cut at "
                          f"max_tokens={cfg.max_tokens}): raise max_tokens or set keep_truncated=true")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in chat))
        atomic_write_text(stats_path, json.dumps(stats, indent=1))     # last: the data is complete
        log.info("teacher replies: %d kept of %d (%d cut at max_tokens) in %.0f s -> %s", stats["kept"],
                 stats["replies"], stats["truncated"], stats["seconds"], path)
    torch.distributed.barrier()
    return path, stats


def run_off_policy(cfg: DistillConfig, rows: list[dict], eval_items: list[dict], out_dir: Path) -> dict:
    from train.post import sft

    student_vocab = sft.start_point(cfg)[0].padded_vocab_size   # the shape SFT will build
    teacher: dict = {}

    def get_teacher():
        """Loaded once, for the replies and the held-out probes alike."""
        if not teacher:
            teacher["model"], teacher["cfg"] = load_teacher(cfg, student_vocab)
        return teacher["model"], teacher["cfg"]

    if cfg.teacher_data:
        if not Path(cfg.teacher_data).is_file():
            raise ConfigError(f"teacher_data={cfg.teacher_data}: no such file")
        data, stats = Path(cfg.teacher_data), {"reused": cfg.teacher_data}
    else:
        data, stats = write_teacher_data(cfg, rows, out_dir, get_teacher)
        if not eval_items:
            teacher.clear()                  # no probe needs it: free it before the student trains
    # every shared field carries the distill config's value, but the student's shape only when set:
    # a `model` passed on counts as explicit and would override the starting checkpoint's own shape
    shared = {k: getattr(cfg, k) for k in sft.SFTConfig.model_fields if k in DistillConfig.model_fields
              and (k not in ("model", "model_overrides") or k in cfg.model_fields_set)}
    scfg = sft.SFTConfig(**{**shared, "data": [str(data)], "out_dir": str(out_dir)})

    def probe(trainer) -> dict:
        return evaluate(cfg, trainer.model, get_teacher()[0], eval_items)

    res = sft.run(scfg, probe=probe if eval_items else None)
    res["eval"] = res["eval"].get("probe", {}) | {"loss": {k: v for k, v in res["eval"].items() if k != "probe"}}
    res.update(stage="distill/off_policy", teacher=cfg.teacher, teacher_data=str(data), teacher_stats=stats,
               rank=torch.distributed.get_rank())
    return res


# ------------------------------------------------------------------------------- on-policy
class OnPolicy:
    """One on-policy step: sample, score with the teacher, minimise the divergence."""

    def __init__(self, cfg: DistillConfig, trainer, rows: list[dict], teacher):
        from train.rollout import RolloutEngine

        self.cfg, self.trainer, self.rows, self.teacher = cfg, trainer, rows, teacher
        self.student_engine = RolloutEngine(trainer.model, max_batch=cfg.rollout_batch)
        self.teacher_engine = RolloutEngine(teacher, max_batch=cfg.rollout_batch) if cfg.lmbda < 1 else None
        trainer.meta.setdefault("distill", {"cursor": 0})

    def draw(self) -> tuple[list[dict], dict]:
        """The step's training rows (all ranks' replies, in stream order) and rollout figures."""
        from train.post.sft import shuffled_index
        from train.rollout import row_seed

        cfg, t = self.cfg, self.trainer
        start = t.meta["distill"]["cursor"]
        t.meta["distill"]["cursor"] = start + cfg.prompts_per_step
        keys = list(range(start, start + cfg.prompts_per_step))[t.dp_rank::t.dp]
        by_teacher = {k: random.Random(f"{cfg.seed}:who:{k}").random() >= cfg.lmbda for k in keys}
        mine = []
        was = t.model.training
        t.model.eval()
        for who, engine in (("student", self.student_engine), ("teacher", self.teacher_engine)):
            ks = [k for k in keys if by_teacher[k] == (who == "teacher")]
            if not ks:
                continue
            rows = [self.rows[shuffled_index(k, len(self.rows), cfg.seed)] for k in ks]
            modes = [draw_mode(cfg, k) for k in ks]
            prompts = [prompt_ids(r, m) for r, m in zip(rows, modes, strict=True)]
            groups = engine.generate(prompts, sampling(cfg, cfg.temperature), n=cfg.samples_per_prompt,
                                     seeds=[row_seed(cfg.seed, k, 0) for k in ks])
            for k, m, g in zip(ks, modes, groups, strict=True):
                for i, r in enumerate(g):
                    mine.append({**rollout_rows(r.prompt_ids, r.token_ids, r.sampled), "key": k, "index": i,
                                 "mode": m, "by": who, "n": len(r.token_ids), "cut": r.finish_reason == "length"})
        t.model.train(was)
        gathered: list = [None] * t.dp
        torch.distributed.all_gather_object(gathered, mine, group=t.dp_group)
        seqs = sorted((r for part in gathered for r in part), key=lambda r: (r["key"], r["index"]))
        n = max(len(seqs), 1)
        figures = {"distill/response_length": sum(r["n"] for r in seqs) / n,
                   "distill/overlong_share": sum(r["cut"] for r in seqs) / n,
                   "distill/student_share": sum(r["by"] == "student" for r in seqs) / n,
                   "distill/think_share": sum(r["mode"] == "think" for r in seqs) / n}
        return seqs, figures

    def step(self) -> dict:
        from train.data import BatchPlan

        cfg, t = self.cfg, self.trainer
        t0 = time.time()
        seqs, figures = self.draw()
        plan = BatchPlan(cfg.micro_batch_size, cfg.global_batch_size, t.dp, t.dp_rank)
        mbs = [collate([seqs[i] for i in plan.indices(0, k)]) for k in range(plan.num_microbatches)]
        for mb in mbs:                               # the teacher's hidden states, once, no grad
            mb["teacher_hidden"] = teacher_states(self.teacher, t._on_device(mb)).cpu()
        figures["distill/rollout_seconds"] = time.time() - t0
        res = t.train_step(mbs, plan.num_microbatches, loss_fn=_loss, forward_fn=self._forward)
        n = max(res.n_tokens, 1.0)
        return t.log_step(res, **figures, **{"distill/divergence": res.loss,
                                             "distill/reverse_kl": res.metrics.get("reverse_kl_sum", 0.0) / n})

    def _forward(self, model, batch):
        cfg = self.cfg
        return divergence_per_token(model, batch["teacher_hidden"], self.teacher, batch, cfg.divergence,
                                    cfg.jsd_beta, cfg.top_k, cfg.chunk_size)


def _loss(output, batch):
    loss, rkl = output
    m = batch["loss_mask"]
    return (loss * m).sum(), m.sum(), {"reverse_kl_sum": (rkl * m).sum()}


def run_on_policy(cfg: DistillConfig, rows: list[dict], eval_items: list[dict], out_dir: Path) -> dict:
    from train import checkpoint as ckpt
    from train.core import Trainer, schedule_from_config
    from train.post.sft import start_point, write_outputs

    if cfg.load is None and "model" not in cfg.model_fields_set:
        raise ConfigError("on-policy distillation starts from a student: set load=<checkpoint> (the off-policy "
                          "phase's out_dir) or model=<config> for one from scratch")
    mcfg, seq, rope = start_point(cfg)
    trainer = Trainer(cfg, mcfg, seq, rope, schedule_from_config(cfg), out_dir,
                      meta={"stage": "distill/on_policy", "teacher": cfg.teacher, "train_steps": cfg.train_steps})
    try:
        own = ckpt.latest_checkpoint(trainer.ckpt_root) is not None
        meta = trainer.resume()
        if own and meta:
            trainer.meta["distill"] = dict(meta.get("distill", {"cursor": 0}))
            trainer.meta["eval"] = dict(meta.get("eval", {}))
        teacher, tcfg = load_teacher(cfg, mcfg.padded_vocab_size)
        loop = OnPolicy(cfg, trainer, rows, teacher)
        evals = trainer.meta.setdefault("eval", {})
        if eval_items and "start" not in evals:
            evals["start"] = evaluate(cfg, trainer.model, teacher, eval_items)
        if trainer.rank == 0:
            log.info("on-policy distillation %s -> %s (%s, top_k %d): %d prompts, %d x %d replies per step, %d steps, %s",
                     tcfg.name, mcfg.name, cfg.divergence, cfg.top_k, len(rows), cfg.prompts_per_step,
                     cfg.samples_per_prompt, cfg.train_steps, out_dir)
        while not trainer.done:
            loop.step()
            if eval_items and cfg.eval_interval and trainer.step % cfg.eval_interval == 0 and not trainer.done:
                evals[f"step_{trainer.step}"] = evaluate(cfg, trainer.model, teacher, eval_items)
                if trainer.rank == 0:
                    log.info("held-out at step %d: %s", trainer.step, json.dumps(evals[f"step_{trainer.step}"]))
            trainer.maybe_save()
        finished = trainer.step >= cfg.train_steps
        if finished and eval_items and "end" not in evals:
            evals["end"] = evaluate(cfg, trainer.model, teacher, eval_items)
        result = {"stage": "distill/on_policy", "steps": trainer.step, "model": mcfg.name, "teacher": cfg.teacher,
                  "teacher_model": tcfg.name, "divergence": cfg.divergence, "top_k": cfg.top_k,
                  "prompts": len(rows), "eval": evals, "checkpoint": str(ckpt.latest_checkpoint(trainer.ckpt_root))}
        if finished and trainer.rank == 0:
            write_outputs(trainer, cfg.export_hf, out_dir, result)
        return {**result, "history": list(trainer.history), "rank": trainer.rank}
    finally:
        trainer.close()


# ------------------------------------------------------------------------------- the verb
def run(cfg: DistillConfig) -> dict:
    """Run one phase; returns {'eval', 'checkpoint', 'history', ...} on every rank."""
    from train.post.grpo import read_rows

    if not cfg.prompts and not cfg.teacher_data:
        raise ConfigError("post distill needs prompts=[pairs.jsonl, ...] (RL pairs or chat rows)")
    if not cfg.teacher:
        raise ConfigError("post distill needs teacher=<checkpoint dir> (an HF folder: `q3 train import-hf` it first)")
    rows = read_rows(cfg.prompts) if cfg.prompts else []         # before importing megatron (seconds)
    eval_items = read_rows([cfg.eval_pairs])[: cfg.eval_limit] if cfg.eval_pairs else []
    out_dir = Path(cfg.out_dir or runs_dir() / "post" / f"distill-{cfg.phase.replace('_policy', '')}")
    if cfg.phase == "off_policy":
        res = run_off_policy(cfg, rows, eval_items, out_dir)
        if res["rank"] == 0 and (out_dir / "result.json").exists():     # SFT's result, with the distill eval
            keep = {k: v for k, v in res.items() if k not in ("history", "losses", "rank")}
            atomic_write_text(out_dir / "result.json", json.dumps(keep, indent=1, sort_keys=True))
    else:
        res = run_on_policy(cfg, rows, eval_items, out_dir)
    ev = res.get("eval", {})
    if ev.get("start") and ev.get("end") and res["rank"] == 0:
        print_table(f"distillation ({cfg.phase}) held-out", ["metric", "start", "end"],
                    [(k, ev["start"][k], ev["end"].get(k)) for k in ev["start"]])
    return res


def cli(config: str | None, overrides: list[str]) -> int:
    """Strong-to-weak distillation: q3 post distill --config distill phase=on_policy teacher=CKPT load=STUDENT"""
    from train.core import run_verb

    return run_verb(run, DistillConfig, "post", config, overrides)


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main
    from train.post.cli import VERBS

    sys.exit(script_main(VERBS["distill"], None, prog="q3 post distill"))
