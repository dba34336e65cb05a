"""`q3 post rm`: a reward model -- our Qwen3 with a scalar head -- trained on preference pairs.

Read top to bottom: config -> preference rows (`train.post.rm_data`: from JSONL files or built from
`q3 synth verifiable` pairs) -> held-out split by prompt -> the shared `Trainer` with a scalar head
attached before DDP (so it is trained, optimised and checkpointed with the model) -> held-out
pairwise accuracy before and after -> result.json. `RewardModelScorer` scores replies with the
trained checkpoint.

    q3 post rm --config rm pairs=data/synth/verifiable/pairs.jsonl load=runs/post/fusion
    q3 post rm --config rm data=[prefs.jsonl] load=null model=tiny_dense

The reward r(prompt, reply) = head(final hidden state at the reply's last token, its <|im_end|>);
the model runs with its output layer bypassed (`hidden_states_only`): no 151,936-way logits. Each
microbatch holds `micro_batch_size` pairs as 2 x mb sequences (chosen rows first, then the
rejected rows of the same pairs); the loss is Bradley-Terry, -log sigmoid(r_chosen - r_rejected),
the mean over the pairs of the global batch (loss_fn returns n = pairs; the core's per-token
normalisation then divides by the global pair count).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import torch
from pydantic import Field

from q3.atomic import atomic_write_text
from q3.config import ConfigError
from q3.log import get_logger, print_table
from q3.paths import runs_dir
from train.config import CoreConfig, OptimConfig, ScheduleConfig
from train.post.rm_data import SOURCES

log = get_logger("q3.post.rm")
HEAD = "reward_head"          # attribute on the GPTModel; its weights are `reward_head.*` in checkpoints
PAD_TO = 16                   # pad sequence lengths to a multiple (few distinct causal masks)


class RMConfig(CoreConfig):
    """One reward-model run. Batch sizes count preference pairs (2 sequences each)."""

    data: list[str] = Field(default_factory=list)        # preference JSONL (messages, chosen, rejected)
    pairs: str | None = None             # or `q3 synth verifiable` pairs.jsonl: preferences built from it
    sources: list[str] = Field(default_factory=lambda: list(SOURCES))   # which to build from `pairs`
    domains: list[str] = Field(default_factory=lambda: ["math", "logic"])   # pairs with worked references
    valid_data: list[str] = Field(default_factory=list)  # held-out preference JSONL; else `held_out`
    held_out: float = Field(default=0.2, ge=0.0, lt=1.0)  # share of prompts held out (hash of the text)
    seq_length: int | None = None        # longest sequence; longer ones lose the prompt's head
    rope_base: float | None = None
    epochs: float | None = None          # set train_steps from the data: epochs x pairs / global batch
    micro_batch_size: int = 4
    global_batch_size: int = 16
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4, min_lr=1e-5))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(warmup_fraction=0.05))
    eval_interval: int = 0               # held-out accuracy every N steps (0: before and after only)
    eval_pairs: int = 0                  # held-out pairs per evaluation (0: all)
    finetune: bool = True                # start from `load`'s weights with a fresh optimizer


# ----------------------------------------------------------------------------- the head
def attach_head(model: torch.nn.Module) -> None:
    """Give the GPTModel its scalar head (Trainer's `extend_model` hook: before DDP wrapping).
    Small init: rewards start near 0 and the first steps do not swamp the body's gradients."""
    h = model.config.hidden_size
    p = next(model.parameters())
    head = torch.nn.Linear(h, 1, device=p.device, dtype=p.dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, model.config.init_method_std)
        head.bias.zero_()
    setattr(model, HEAD, head)


def rewards(model, tokens: torch.Tensor, last: torch.Tensor, position_ids=None, attention_mask=None) -> torch.Tensor:
    """Scalar rewards [b] of right-padded `tokens` [b, s] read at positions `last` [b]."""
    from train.logprobs import hidden_states_only, unwrap
    from train.shims import causal_attention_mask

    b, s = tokens.shape
    if unwrap(model).config.sequence_parallel:
        raise NotImplementedError("reward model: sequence-parallel hidden states are not gathered")
    if position_ids is None:
        position_ids = torch.arange(s, device=tokens.device).unsqueeze(0).expand(b, s)
    if attention_mask is None:
        attention_mask = causal_attention_mask(s).to(tokens.device)
    with hidden_states_only(model):
        hidden = model(tokens, position_ids, attention_mask)                # [s, b, h]
    h_last = hidden[last, torch.arange(b, device=tokens.device)]            # [b, h]
    return getattr(unwrap(model), HEAD)(h_last).squeeze(-1).float()


def collate(seqs: list[list[int]], src: list[int] | None = None) -> dict:
    """Right-padded tokens [b, s] (s a multiple of PAD_TO) and each row's last position."""
    from q3.tokenizer import EOD_ID

    s = max(len(x) for x in seqs)
    s = -(-s // PAD_TO) * PAD_TO
    tokens = torch.full((len(seqs), s), EOD_ID, dtype=torch.long)
    for i, x in enumerate(seqs):
        tokens[i, :len(x)] = torch.tensor(x, dtype=torch.long)
    out = {"tokens": tokens, "last": torch.tensor([len(x) - 1 for x in seqs], dtype=torch.long)}
    if src is not None:
        out["src"] = torch.tensor(src, dtype=torch.long)
    return out


# ----------------------------------------------------------------------------- data
class PairData:
    """Tokenised pairs (chosen ids, rejected ids, source index) + a fixed permutation per epoch."""

    def __init__(self, rows: list[dict], seq_length: int, source_names: list[str], seed: int, shuffle: bool = True):
        from train.post.rm_data import encode_reply

        self.names, self.seed, self.shuffle = source_names, seed, shuffle
        self.pairs = [(encode_reply(r["messages"], r["chosen"], seq_length),
                       encode_reply(r["messages"], r["rejected"], seq_length), source_names.index(r["source"]))
                      for r in rows]
        self.counts = {n: sum(1 for p in self.pairs if p[2] == i) for i, n in enumerate(source_names)}

    def __len__(self) -> int:
        return len(self.pairs)

    def index(self, i: int) -> int:
        epoch, k = divmod(i, len(self.pairs))
        if not self.shuffle:
            return k
        perm = list(range(len(self.pairs)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(perm)
        return perm[k]

    def batch(self, rows) -> dict:
        """A microbatch of pairs: chosen sequences first, then the rejected ones in the same order."""
        ps = [self.pairs[self.index(r)] for r in rows]
        return collate([p[0] for p in ps] + [p[1] for p in ps], [p[2] for p in ps])


def load_rows(cfg: RMConfig, out_dir: Path) -> tuple[list[dict], list[dict]]:
    """(train, held-out) preference rows from `data` files and/or `pairs`; the built ones are
    written to <out_dir>/preferences/ (train.jsonl, heldout.jsonl) for inspection and reuse."""
    from train.post.rm_data import preferences_from_pairs, read_preferences, split_held_out, write_jsonl

    rows = [r for p in cfg.data for r in read_preferences(p)]
    if cfg.pairs:
        rows += preferences_from_pairs(cfg.pairs, cfg.sources, cfg.seed, cfg.domains)
    if cfg.valid_data:
        train, held = rows, [r for p in cfg.valid_data for r in read_preferences(p)]
    else:
        train, held = split_held_out(rows, cfg.held_out)
    if not train:
        raise ConfigError("no training pairs left after the held-out split (lower held_out or add data)")
    if cfg.pairs and int(os.environ.get("RANK", "0")) == 0:
        d = out_dir / "preferences"
        d.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / "train.jsonl", train)
        write_jsonl(d / "heldout.jsonl", held)
    return train, held


# ----------------------------------------------------------------------------- loss and metrics
def bt_loss(r: torch.Tensor, batch: dict, n_sources: int):
    """Bradley-Terry over the microbatch's pairs: (loss sum, pairs, metric sums). Ties count half."""
    m = r.shape[0] // 2
    d = r[:m] - r[m:]
    loss = -torch.nn.functional.logsigmoid(d).sum()
    correct = (d > 0).double() + 0.5 * (d == 0).double()
    metrics = {"pairs": torch.tensor(float(m), dtype=torch.double), "correct": correct.sum(),
               "margin": d.detach().double().sum(), "seq_tokens": (batch["last"] + 1).double().sum()}
    src = batch.get("src")
    if src is not None:
        for i in range(n_sources):           # every key on every microbatch: ranks all-reduce the same list
            sel = src == i
            metrics[f"correct/{i}"] = correct[sel].sum()
            metrics[f"pairs/{i}"] = sel.double().sum()
    return loss, torch.tensor(m, device=r.device), metrics


def summarise(sums: dict[str, float], names: list[str]) -> dict:
    """Accuracy / margin / loss from metric sums; per-source accuracy."""
    n = max(sums.get("pairs", 0.0), 1.0)
    out = {"pairs": int(sums.get("pairs", 0)), "accuracy": sums.get("correct", 0.0) / n,
           "margin": sums.get("margin", 0.0) / n, "loss": sums.get("loss")}
    out["by_source"] = {name: {"pairs": int(sums.get(f"pairs/{i}", 0)),
                               "accuracy": sums.get(f"correct/{i}", 0.0) / max(sums.get(f"pairs/{i}", 0.0), 1.0)}
                        for i, name in enumerate(names) if sums.get(f"pairs/{i}", 0)}
    return out


# ----------------------------------------------------------------------------- training
def start_from(cfg: RMConfig):
    """(model config, seq length, RoPE base, LM checkpoint to take the body from or None).

    A checkpoint without a reward head (a pretrained / SFT LM) cannot go through the Trainer's
    strict load (the head's keys are missing there): its body is loaded by `load_body` instead."""
    from train import checkpoint as ckpt
    from train.post.sft import start_point

    mcfg, seq, rope = start_point(cfg)                 # reads `load`, `model`, `seq_length`, `rope_base`
    src = ckpt.latest_checkpoint(cfg.load) if cfg.load else None
    body_only = src if src is not None and HEAD not in ckpt.read_meta(src) else None
    return mcfg, seq, rope, body_only


def load_body(model, src: Path) -> None:
    """Load an LM checkpoint's weights into the model, all but the (fresh) reward head."""
    from megatron.core import dist_checkpointing

    sd = {k: v for k, v in model.sharded_state_dict().items() if not k.startswith(HEAD + ".")}
    state = dist_checkpointing.load({"model": sd}, str(src))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    others = [k for k in missing if not k.startswith(HEAD + ".")]
    if others or unexpected:
        raise RuntimeError(f"{src}: checkpoint does not fit the model (missing {others[:3]}, unexpected {unexpected[:3]})")


def run(cfg: RMConfig) -> dict:
    """Train; returns {'eval', 'losses', 'history', 'checkpoint', ...} (on every rank)."""
    if not cfg.data and not cfg.pairs:
        raise ConfigError("post rm needs data=[prefs.jsonl] (messages, chosen, rejected) or pairs=<synth pairs.jsonl>")
    for p in [*cfg.data, *cfg.valid_data, *([cfg.pairs] if cfg.pairs else [])]:   # before megatron's import
        if not Path(p).is_file():
            raise ConfigError(f"data file not found: {p}")
    from train import checkpoint as ckpt
    from train.core import Trainer, schedule_from_config
    from train.data import BatchPlan
    from train.logprobs import unwrap

    out_dir = Path(cfg.out_dir or runs_dir() / "post" / "rm")
    train_rows, held_rows = load_rows(cfg, out_dir)          # bad rows: a one-line error, no megatron yet
    mcfg, seq, rope, body_src = start_from(cfg)
    names = sorted({r["source"] for r in train_rows + held_rows})
    train = PairData(train_rows, seq, names, cfg.seed)
    held = PairData(held_rows, seq, names, cfg.seed, shuffle=False) if held_rows else None
    if cfg.epochs is not None:
        cfg = cfg.model_copy(update={"train_steps": max(1, math.ceil(cfg.epochs * len(train) / cfg.global_batch_size))})
    steps = cfg.train_steps
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if held is not None and len(held) < world:
        raise ConfigError(f"{len(held)} held-out pairs cannot be shared by {world} processes (raise held_out)")
    tcfg = cfg.model_copy(update={"load": None}) if body_src is not None else cfg
    trainer = Trainer(tcfg, mcfg, seq, rope, schedule_from_config(cfg), out_dir, extend_model=attach_head,
                      meta={"stage": "RM", HEAD: {"hidden_size": mcfg.hidden_size}, "train_steps": steps,
                            "sources": names})
    try:
        own = ckpt.latest_checkpoint(trainer.ckpt_root) is not None
        meta = trainer.resume()
        if not own and body_src is not None:
            load_body(unwrap(trainer.model), body_src)
            log.info("RM: body from %s, fresh reward head", body_src)
        plan = BatchPlan(cfg.micro_batch_size, cfg.global_batch_size, trainer.dp, trainer.dp_rank)
        n_micro = plan.num_microbatches

        def fwd(model, batch):
            return rewards(model, batch["tokens"], batch["last"], batch["position_ids"], batch["attention_mask"])

        def loss(r, batch):
            return bt_loss(r, batch, len(names))

        def evaluate() -> dict | None:
            """Held-out pairwise accuracy; each DP rank scores every dp-th microbatch."""
            if held is None:
                return None
            n = min(len(held), cfg.eval_pairs or len(held))
            size = max(1, min(cfg.micro_batch_size, n // trainer.dp))    # every rank gets a microbatch
            mbs = [range(i, min(i + size, n)) for i in range(0, n, size)]
            mine = (held.batch(r) for r in mbs[trainer.dp_rank::trainer.dp])
            sums = trainer.forward_only(mine, n_micro, loss_fn=loss, forward_fn=fwd)
            return summarise(sums, names)

        evals = trainer.meta["eval"] = dict((meta or {}).get("eval", {})) if own else {}     # checkpointed
        if trainer.step == 0 and "start" not in evals:
            evals["start"] = evaluate()
        if trainer.rank == 0:
            log.info("RM on %s: seq %d, %d steps, %s", mcfg.name, seq, steps, out_dir)
            print_table("RM data", ["source", "train pairs", "held-out pairs"],
                        [(n, train.counts[n], held.counts[n] if held else 0) for n in names])
        while not trainer.done:
            mbs = (train.batch(plan.indices(trainer.consumed, k)) for k in range(n_micro))
            res = trainer.train_step(mbs, n_micro, loss_fn=loss, forward_fn=fwd)
            pairs = max(res.metrics.get("pairs", 0.0), 1.0)
            # the core's tokens_per_s / mfu assume seq_length-token LM sequences; this is the real count
            extra = {"train/accuracy": res.metrics.get("correct", 0.0) / pairs,
                     "train/margin": res.metrics.get("margin", 0.0) / pairs,
                     "train/seq_tokens_per_s": res.metrics.get("seq_tokens", 0.0) / max(res.seconds, 1e-9)}
            if cfg.eval_interval and trainer.step % cfg.eval_interval == 0 and trainer.step < steps:
                ev = evaluate()
                if ev is not None:
                    extra["eval/accuracy"] = ev["accuracy"]
            trainer.log_step(res, **extra)
            trainer.maybe_save()
        finished = trainer.step >= steps
        if finished:
            evals["end"] = evaluate()
        result = {"stage": "RM", "steps": trainer.step, "train_steps": steps, "seq_length": seq, "rope_base": rope,
                  "model": mcfg.name, "train_pairs": train.counts, "held_out_pairs": held.counts if held else {},
                  "final_train_loss": trainer.losses[-1] if trainer.losses else None, "eval": evals,
                  "checkpoint": str(ckpt.latest_checkpoint(trainer.ckpt_root))}
        if finished and trainer.rank == 0:
            atomic_write_text(out_dir / "result.json", json.dumps(result, indent=1, sort_keys=True))
            _report(evals)
        return {**result, "losses": list(trainer.losses), "history": list(trainer.history)}
    finally:
        trainer.close()


def _report(evals: dict) -> None:
    start, end = evals.get("start") or {}, evals.get("end") or {}
    if not end:
        return
    rows = [(s, v["pairs"], f"{(start.get('by_source', {}).get(s) or {}).get('accuracy', float('nan')):.3f}",
             f"{v['accuracy']:.3f}") for s, v in end["by_source"].items()]
    rows.append(("all", end["pairs"], f"{start.get('accuracy', float('nan')):.3f}", f"{end['accuracy']:.3f}"))
    print_table("RM held-out pairwise accuracy", ["source", "pairs", "before", "after"], rows)


# ----------------------------------------------------------------------------- scoring
class RewardModelScorer:
    """A trained reward model for scoring: `score([(prompt messages, reply), ...]) -> [reward]`.

    `path` is a `q3 post rm` run dir or checkpoint. Replies are the assistant's raw text (think block
    included); `<|im_end|>` is appended and the reward read there, as in training. Batched, no grad,
    in eval mode; sequences over the checkpoint's seq_length lose their prompt's head.
    """

    def __init__(self, path: str | Path, batch_size: int = 16):
        from megatron.core import parallel_state as ps

        from train import checkpoint as ckpt
        from train.model import build_model, init_parallel

        src = ckpt.latest_checkpoint(path)
        if src is None:
            raise ConfigError(f"reward model: no complete checkpoint at {path}")
        meta = ckpt.read_meta(src)
        if HEAD not in meta:
            raise ConfigError(f"{src}: not a reward-model checkpoint (no {HEAD}; train one with `q3 post rm`)")
        if not ps.model_parallel_is_initialized():
            init_parallel()
        from train.config import ModelConfig

        self.mcfg = ModelConfig.model_validate(meta["model"])
        self.seq_length, self.batch_size, self.path = int(meta["seq_length"]), batch_size, src
        self.model = build_model(self.mcfg, seq_length=self.seq_length, rope_base=meta["rope_base"])
        attach_head(self.model)
        ckpt.load(src, self.model, optimizer=None, load_rng=False)
        self.model.eval()
        self.device = next(self.model.parameters()).device

    def score(self, pairs: list[tuple[list[dict], str]]) -> list[float]:
        from train.post.rm_data import encode_reply

        seqs = [encode_reply(list(msgs), reply, self.seq_length) for msgs, reply in pairs]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))     # similar lengths share a batch
        out = [0.0] * len(seqs)
        with torch.no_grad():
            for k in range(0, len(order), self.batch_size):
                idx = order[k:k + self.batch_size]
                b = collate([seqs[i] for i in idx])
                r = rewards(self.model, b["tokens"].to(self.device), b["last"].to(self.device))
                for i, v in zip(idx, r.tolist(), strict=True):
                    out[i] = float(v)
        return out


def cli(config: str | None, overrides: list[str]) -> int:
    """Reward model (scalar head, Bradley-Terry) on preference pairs: q3 post rm --config rm pairs=pairs.jsonl"""
    from train.core import run_verb

    return run_verb(run, RMConfig, "post", config, overrides)


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main
    from train.post.cli import VERBS

    sys.exit(script_main(VERBS["rm"], None, prog="q3 post rm"))
