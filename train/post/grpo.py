"""`q3 post grpo`: reasoning RL with GRPO on query-verifier pairs, on the shared trainer core.

One iteration (a "rollout step"):
1. draw `prompts_per_step` queries from a seeded stream over the pairs; every DP rank rolls out its
   share, G samples each, with the trainer's own model (`train.rollout.RolloutEngine`: the rollout
   weights *are* the trainer's weights) and scores them (synth's verifiers, or a `rewards` task mix);
   the groups are gathered on every rank;
2. dynamic sampling: groups whose rewards are all equal carry no gradient; they are dropped and more
   queries drawn, at most `max_sample_rounds` rounds (`train.post.grpo_loss.fill_batch`);
3. group-normalised advantages; old logprobs recomputed by the trainer (the gap to the rollout
   engine's logged), entropy measured on the sampled tokens, reference logprobs if `kl_coef` > 0;
4. `updates_per_batch` optimizer steps over minibatches of the rollout batch (off-policy reuse):
   clipped policy loss with clip-higher, token mean over the global batch, optional KL / entropy
   bonus / truncated IS (`train.post.grpo_loss.policy_loss`);
5. entropy control: the bonus coefficient moves toward `entropy_band`; a collapse or blow-up stops
   the run (checkpoint kept, exit non-zero with a message).

    q3 post grpo --config grpo load=runs/post/coldstart pairs=[data/post/rl_pairs.jsonl]
    torchrun --nproc_per_node=2 -m train.post.grpo --config grpo ...

Samples are seeded by (seed, query stream position, sample index), independent of the DP split and
of batching, so 1 and 2 processes produce the same rollouts and, up to float reduction order, the
same metrics; a resumed run replays exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from q3.config import ConfigError
from q3.log import get_logger, print_table
from q3.paths import runs_dir
from train.config import CoreConfig, GuardConfig, OptimConfig, ScheduleConfig

log = get_logger("q3.post.grpo")


class GRPOConfig(CoreConfig):
    """One GRPO run. `global_batch_size` is derived: prompts_per_step x group_size / updates_per_batch."""

    pairs: list[str] = Field(default_factory=list)   # RL pairs JSONL (`q3 synth verifiable` / `q3 post select`)
    rewards: str | None = None           # a general-RL task mix YAML (`q3 post rl`); None: synth's verifiers
    mode: Literal["think", "no_think", "none"] = "think"   # flag appended to every query (as `q3 post eval`)
    rollout_steps: int = Field(default=20, ge=1)    # iterations; train_steps = rollout_steps x updates_per_batch
    prompts_per_step: int = Field(default=8, ge=1)  # groups in one rollout batch (after dynamic sampling)
    group_size: int = Field(default=8, ge=2)        # G samples per query
    updates_per_batch: int = Field(default=1, ge=1)  # optimizer steps per rollout batch (off-policy reuse)
    max_tokens: int = Field(default=64, ge=1)       # response limit
    temperature: float = Field(default=1.0, gt=0)   # rollouts sample the policy itself (T=1, no top-k/p)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    thinking_budget: int | None = None
    max_turns: int = Field(default=4, ge=1)         # assistant turns of a tool-use episode
    adv_norm: Literal["std", "mean"] = "std"        # mean: Dr. GRPO (no per-group std scaling)
    clip_low: float = Field(default=0.2, ge=0)
    clip_high: float = Field(default=0.28, ge=0)    # clip-higher (DAPO): > clip_low
    kl_coef: float = Field(default=0.0, ge=0)       # 0: no reference model is kept
    kl_estimator: Literal["k1", "k3"] = "k3"
    ref_load: str | None = None                     # reference checkpoint (default: load)
    entropy_coef: float = Field(default=0.0, ge=0)  # entropy bonus (start value when entropy_band is set)
    entropy_band: tuple[float, float] | None = None  # steer the bonus to keep entropy inside [lo, hi]
    entropy_coef_step: float = Field(default=1e-3, ge=0)
    entropy_min: float = Field(default=0.0, ge=0)   # stop when entropy stays below (collapse) ...
    entropy_max: float = Field(default=math.inf)    # ... or above (blow-up) for entropy_patience steps
    entropy_patience: int = Field(default=3, ge=1)
    tis_cap: float | None = Field(default=None, gt=0)  # truncated IS weight cap (remote engines)
    dynamic_sampling: bool = True
    max_sample_rounds: int = Field(default=3, ge=1)
    overlong: Literal["mask", "penalty", "keep"] = "mask"   # responses cut at max_tokens
    overlong_reward: float = 0.0                    # the reward of a cut response under overlong=penalty
    pass_threshold: float = 1.0                     # reward counted as a pass
    logprob_gap_threshold: float = 1e-3             # warn above (CPU fp32: ~1e-6)
    rollout_batch: int = Field(default=128, ge=1)   # rows per rollout engine batch
    eval_pairs: str | None = None                   # held-out pairs: greedy accuracy and pass@k
    eval_interval: int = Field(default=0, ge=0)     # every N iterations (0: start and end only)
    eval_limit: int = Field(default=64, ge=1)
    eval_k: int = Field(default=8, ge=1)
    seq_length: int | None = None                   # model max length (default: the checkpoint's)
    rope_base: float | None = None
    finetune: bool = True
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5, min_lr=1e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(warmup_fraction=0.0, decay="constant"))
    per_token_loss: bool = True
    # a policy-gradient loss is no cross-entropy: its size says nothing about a bad batch; only
    # non-finite losses are skipped
    guard: GuardConfig = Field(default_factory=lambda: GuardConfig(spike_factor=math.inf))
    export_hf: str | None = None

    @model_validator(mode="after")
    def _derived(self) -> GRPOConfig:
        seqs = self.prompts_per_step * self.group_size
        if seqs % self.updates_per_batch:
            raise ValueError(f"prompts_per_step x group_size = {seqs} must divide into updates_per_batch="
                             f"{self.updates_per_batch} minibatches")
        if self.entropy_band and self.entropy_band[0] > self.entropy_band[1]:
            raise ValueError(f"entropy_band {self.entropy_band}: low > high")
        object.__setattr__(self, "global_batch_size", seqs // self.updates_per_batch)
        object.__setattr__(self, "train_steps", self.rollout_steps * self.updates_per_batch)
        return self


class TrainingStopped(ConfigError):
    """The run stopped itself (entropy collapse / blow-up): a message, a kept checkpoint, exit != 0."""


# ------------------------------------------------------------------------------- data
@dataclass
class Sample:
    """One rollout of one query, scored. `masked`: excluded from the loss (over-long, overlong=mask)."""

    key: int                      # position in the query stream
    index: int                    # sample index in its group
    prompt: list[int]
    tokens: list[int]             # produced tokens (stop token included)
    logprobs: list[float]         # rollout engine's, per produced token
    sampled: list[bool]
    finish_reason: str
    reward: float = 0.0
    details: dict | None = None
    masked: bool = False
    routed: list | None = None    # MoE: the rollout's experts per fed token and layer (Rollout.routed_experts)


def prompt_messages(row: dict, mode: str) -> list[dict]:
    """The chat a query is asked as: a task row's own `messages`, else its `query` + the mode flag."""
    from train.post.evals import flag

    if row.get("messages"):
        return list(row["messages"])
    return [{"role": "user", "content": row["query"] + flag(mode)}]


def reward_input(row: dict, messages: list[dict], rollout):
    """What a reward sees of one rollout: the prompt chat, the decoded reply (stop token dropped)."""
    from q3.tokenizer import decode
    from train.post.rewards import RewardInput
    from train.rollout import STOP_IDS

    reply = decode([x for x in rollout.token_ids if x not in STOP_IDS])
    return RewardInput(messages=messages, reply=reply, meta=row, finish_reason=rollout.finish_reason)


def read_rows(paths: list[str]) -> list[dict]:
    """RL pairs / task rows of JSONL files (a `query` or `messages` each), with file:line errors."""
    from q3.jsonl import read_jsonl

    rows: list[dict] = []
    for p in paths:
        for where, row in read_jsonl(p, "pairs"):
            if not (row.get("query") or row.get("messages")):
                raise ConfigError(f"{where}: a row needs `query` (RL pair) or `messages` (task row)")
            rows.append(row)
    if not rows:
        raise ConfigError(f"no rows in {', '.join(paths)}")
    return rows


def sequences(samples: list[Sample], advantages: list[float]) -> list[dict]:
    """Training rows: input = prompt + response minus the last token, labels shifted by one; the loss
    mask marks sampled response tokens (forced tokens and masked samples excluded)."""
    out = []
    for s, a in zip(samples, advantages, strict=True):
        full = s.prompt + s.tokens
        p = len(s.prompt)
        mask = [0.0] * (len(full) - 1)
        lp = [0.0] * (len(full) - 1)
        for j, (ok, v) in enumerate(zip(s.sampled, s.logprobs, strict=True)):
            mask[p - 1 + j] = 0.0 if s.masked or not ok else 1.0
            lp[p - 1 + j] = v
        out.append({"tokens": full[:-1], "labels": full[1:], "loss_mask": mask, "rollout_logprobs": lp,
                    "advantage": a, "prompt_len": p, "routed": s.routed})
    return out


def collate(rows: list[dict]) -> dict:
    """Right-pad rows to one length (causal attention: padding never reaches a real position)."""
    from q3.tokenizer import EOD_ID

    s = max(len(r["tokens"]) for r in rows)

    def pad(key, value, dtype):
        return torch.tensor([r[key] + [value] * (s - len(r[key])) for r in rows], dtype=dtype)

    return {"tokens": pad("tokens", EOD_ID, torch.long), "labels": pad("labels", 0, torch.long),
            "loss_mask": pad("loss_mask", 0.0, torch.float32),
            "rollout_logprobs": pad("rollout_logprobs", 0.0, torch.float32),
            "advantages": torch.tensor([r["advantage"] for r in rows], dtype=torch.float32),
            "prompt_len": [r.get("prompt_len", 0) for r in rows], "routed": [r.get("routed") for r in rows]}


# ------------------------------------------------------------------------------- the loop
class GRPO:
    """The GRPO loop of one run: rollouts, rewards, advantages, updates; metrics per optimizer step."""

    def __init__(self, cfg: GRPOConfig, trainer, rows: list[dict], scorer):
        from train.logprobs import LogprobGap
        from train.post.grpo_loss import PolicyLossConfig
        from train.rollout import RolloutEngine
        from train.sampling import SamplingParams

        self.cfg, self.trainer, self.rows, self.scorer = cfg, trainer, rows, scorer
        self.engine = RolloutEngine(trainer.model, max_batch=cfg.rollout_batch)
        self.params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                     presence_penalty=0.0, max_tokens=cfg.max_tokens,
                                     thinking_budget=cfg.thinking_budget)
        self.loss_cfg = PolicyLossConfig(clip_low=cfg.clip_low, clip_high=cfg.clip_high, kl_coef=cfg.kl_coef,
                                         kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
                                         tis_cap=cfg.tis_cap)
        self.gap = LogprobGap(cfg.logprob_gap_threshold)
        from train.model import moe_routers

        self.moe = bool(moe_routers(trainer.model))
        self.engine.record_routing = self.moe      # routing mismatch rollout vs trainer, measured every step
        self.ref = None
        if cfg.kl_coef > 0:
            self.ref = self._reference()
        meta = trainer.meta
        meta.setdefault("rl", {"cursor": 0, "iteration": 0, "entropy_coef": cfg.entropy_coef, "entropy_bad": 0})
        self.loss_cfg.entropy_coef = meta["rl"]["entropy_coef"]

    @property
    def state(self) -> dict:
        return self.trainer.meta["rl"]

    def _reference(self):
        from train import checkpoint as ckpt

        src = self.cfg.ref_load or self.cfg.load
        if not src:
            raise ConfigError("kl_coef > 0 needs a reference: set ref_load= (or load=)")
        model, _, _ = ckpt.load_model(src, rope_base=self.trainer.rope_base, seq_length=self.trainer.seq_length)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    # --------------------------------------------------------------------- rollouts
    def draw(self, n: int) -> list:
        """The next n queries of the stream, G scored samples each, gathered on every rank."""
        from q3.tokenizer import encode, render_chat
        from train.post.grpo_loss import Group
        from train.post.sft import shuffled_index
        from train.rollout import row_seed

        t, g = self.trainer, self.cfg.group_size
        start = self.state["cursor"]
        self.state["cursor"] = start + n
        mine_keys = list(range(start, start + n))[t.dp_rank::t.dp]
        rows = {k: self.rows[shuffled_index(k, len(self.rows), self.cfg.seed)] for k in mine_keys}
        plain = [k for k in mine_keys if not rows[k].get("env")]
        tools = [k for k in mine_keys if rows[k].get("env")]
        msgs = {k: prompt_messages(rows[k], self.cfg.mode) for k in mine_keys}
        t0 = time.time()
        prompts = [encode(render_chat(msgs[k], add_generation_prompt=True)) for k in plain]
        rolls = self.engine.generate(prompts, self.params, n=g, seeds=[row_seed(self.cfg.seed, k, 0) for k in plain]) \
            if plain else []
        samples, inputs = [], []
        for k, group in zip(plain, rolls, strict=True):
            for i, r in enumerate(group):
                samples.append(Sample(k, i, r.prompt_ids, r.token_ids, r.logprobs, r.sampled, r.finish_reason,
                                      routed=r.routed_experts))
                inputs.append(reward_input(rows[k], msgs[k], r))
        for k in tools:                            # tool-use tasks: multi-turn episodes, tool replies injected
            for i, ep in enumerate(self._episodes(k, rows[k])):
                r = ep.rollout
                samples.append(Sample(k, i, r.prompt_ids, r.token_ids, r.logprobs, r.sampled, r.finish_reason))
                inputs.append(ep.reward_input(rows[k]))
        self.rollout_seconds += time.time() - t0
        self._score(samples, inputs)
        gathered: list = [None] * t.dp
        torch.distributed.all_gather_object(gathered, samples, group=t.dp_group)
        by_key: dict[int, list[Sample]] = {}
        for s in sorted((s for part in gathered for s in part), key=lambda s: (s.key, s.index)):
            by_key.setdefault(s.key, []).append(s)
        return [Group(k, [s.reward for s in by_key[k]], by_key[k]) for k in range(start, start + n)]

    def _episodes(self, key: int, row: dict) -> list:
        """G tool-use episodes of one task row (`row["env"]` names its tool environments)."""
        from train.post.rewards.tools import make_env, run_episodes
        from train.rollout import row_seed

        g = self.cfg.group_size
        return run_episodes(self.engine, [prompt_messages(row, self.cfg.mode)] * g, [make_env(row["env"]) for _ in range(g)],
                            self.params, max_turns=self.cfg.max_turns, seed=row_seed(self.cfg.seed, key, 0))

    def _score(self, samples: list[Sample], inputs: list) -> None:
        """Rewards of this rank's samples; over-long ones masked or penalised as configured."""
        results = self.scorer.score(inputs) if inputs else []
        for s, res in zip(samples, results, strict=True):
            s.reward, s.details = float(res.score), res.details
            if s.finish_reason == "length":
                if self.cfg.overlong == "mask":
                    s.masked = True
                elif self.cfg.overlong == "penalty":
                    s.reward = self.cfg.overlong_reward

    # --------------------------------------------------------------------- one iteration
    def iteration(self) -> list[dict]:
        """Roll out, score, update; returns the metric rows of its optimizer steps."""
        from train.post.grpo_loss import fill_batch, group_advantages

        cfg, t = self.cfg, self.trainer
        self.rollout_seconds = 0.0
        t0 = time.time()
        filled = fill_batch(self.draw, cfg.prompts_per_step, cfg.max_sample_rounds, cfg.dynamic_sampling)
        samples = [s for g in filled.groups for s in g.payload]
        rewards = torch.tensor([g.rewards for g in filled.groups], dtype=torch.float64)
        adv = group_advantages(rewards, cfg.adv_norm).flatten().tolist()
        seqs = sequences(samples, adv)
        drawn = [s for g in filled.all_groups for s in g.payload]
        t_roll = time.time() - t0

        from train.data import BatchPlan

        plan = BatchPlan(cfg.micro_batch_size, cfg.global_batch_size, t.dp, t.dp_rank)
        minibatches = [[collate([seqs[i] for i in plan.indices(u * cfg.global_batch_size, k)])
                        for k in range(plan.num_microbatches)] for u in range(cfg.updates_per_batch)]
        probe = self._prepare([mb for mbs in minibatches for mb in mbs])
        rows = []
        for mbs in minibatches:
            res = t.train_step(mbs, plan.num_microbatches, loss_fn=self._loss, forward_fn=_forward)
            n = max(res.n_tokens, 1.0)
            m = res.metrics
            rows.append({"rl/iteration": self.state["iteration"] + 1,
                         "rl/clip_frac": (m.get("clip_low", 0) + m.get("clip_high", 0)) / n,
                         "rl/clip_frac_high": m.get("clip_high", 0) / n, "rl/ratio": m.get("ratio", 0) / n,
                         **({"rl/kl": m["kl"] / n} if "kl" in m else {}),
                         **({"rl/tis_weight": m["tis_weight"] / n} if "tis_weight" in m else {}),
                         "_res": res})
        self.state["iteration"] += 1
        passes = [s.reward >= cfg.pass_threshold for s in drawn]
        kept_r = [s.reward for s in samples]
        rollout_tokens = sum(len(s.tokens) for s in drawn)
        summary = {
            "rl/reward_mean": sum(kept_r) / max(len(kept_r), 1),
            "rl/reward_mean_drawn": sum(s.reward for s in drawn) / max(len(drawn), 1),
            "rl/pass_rate": sum(passes) / max(len(passes), 1),
            "rl/zero_std_share": filled.zero_std_share, "rl/sample_rounds": filled.rounds,
            "rl/batch_short": int(filled.short),
            "rl/response_length": rollout_tokens / max(len(drawn), 1),
            "rl/overlong_share": sum(s.finish_reason == "length" for s in drawn) / max(len(drawn), 1),
            "rl/entropy": probe["entropy"], "rl/logprob_gap_mean": probe["gap_mean"],
            "rl/logprob_gap_max": probe["gap_max"], "rl/entropy_coef": self.loss_cfg.entropy_coef,
            **({"rl/moe_routing_mismatch": probe["moe_routing_mismatch"],
                "rl/moe_routing_compared": probe["moe_routing_compared"]} if self.moe else {}),
            "rl/rollout_tokens_per_s": rollout_tokens * t.dp / max(self.rollout_seconds, 1e-9),
            "rl/rollout_seconds": t_roll,
        }
        by_task: dict[str, list[float]] = {}
        for s in drawn:
            if s.details and s.details.get("task"):
                by_task.setdefault(s.details["task"], []).append(s.reward)
        summary.update({f"rl/reward/{k}": sum(v) / len(v) for k, v in sorted(by_task.items())})
        out = []
        for r in rows:
            res = r.pop("_res")
            r["rl/update_tokens_per_s"] = res.n_tokens / max(res.seconds, 1e-9)
            out.append(t.log_step(res, **summary, **r))
        self._steer_entropy(probe["entropy"])
        return out

    def _prepare(self, mbs: list[dict]) -> dict:
        """Old logprobs (trainer's, no grad), reference logprobs, the entropy of the sampled tokens and
        the rollout/trainer logprob gap, written into the microbatches; stats reduced over DP."""
        from train.logprobs import token_logprobs

        t = self.trainer
        from train.rollout import RoutingTap

        ent_sum = gap_sum = n = 0.0
        gap_max = 0.0
        route = [0, 0]                               # (token, layer) pairs routed differently, compared
        model = t.model
        was = model.training
        model.eval()
        with torch.no_grad():
            for mb in mbs:
                b = t._on_device(mb)
                with RoutingTap(model) if self.moe else nullcontext() as tap:
                    lp, ent = token_logprobs(model, b["tokens"], b["loss_mask"], b["position_ids"],
                                             b["attention_mask"], labels=b["labels"])
                if tap is not None:
                    route[0] += routing_mismatch(tap.experts(*b["tokens"].shape[::-1]), mb["prompt_len"], mb["routed"])
                    route[1] += sum(len(r or []) for r in mb["routed"]) * len(tap.routers)
                mb["old_logprobs"] = lp.cpu()
                if self.ref is not None:
                    mb["ref_logprobs"] = token_logprobs(self.ref, b["tokens"], b["loss_mask"], b["position_ids"],
                                                        b["attention_mask"], labels=b["labels"])[0].cpu()
                m = mb["loss_mask"].bool()
                ent_sum += float(ent.cpu()[m].sum())
                gap = (lp.cpu() - mb["rollout_logprobs"]).abs()[m]
                gap_sum += float(gap.sum())
                gap_max = max(gap_max, float(gap.max()) if gap.numel() else 0.0)
                n += float(m.sum())
        model.train(was)
        sums = torch.tensor([ent_sum, gap_sum, n, *route], dtype=torch.float64)
        torch.distributed.all_reduce(sums, group=t.dp_group)
        mx = torch.tensor([gap_max], dtype=torch.float64)
        torch.distributed.all_reduce(mx, op=torch.distributed.ReduceOp.MAX, group=t.dp_group)
        cnt = max(float(sums[2]), 1.0)
        if float(mx[0]) > self.gap.threshold and t.rank == 0:
            log.warning("rollout/trainer logprob gap %.3g (mean %.3g) exceeds %.3g", float(mx[0]),
                        float(sums[1]) / cnt, self.gap.threshold)
        out = {"entropy": float(sums[0]) / cnt, "gap_mean": float(sums[1]) / cnt, "gap_max": float(mx[0])}
        if self.moe:
            out["moe_routing_mismatch"] = float(sums[3]) / max(float(sums[4]), 1.0)
            out["moe_routing_compared"] = float(sums[4])
        return out

    def _loss(self, output, batch):
        from train.post.grpo_loss import policy_loss

        lp, ent = output
        return policy_loss(lp, batch["old_logprobs"], batch["advantages"], batch["loss_mask"], self.loss_cfg,
                           entropy=ent, ref_logp=batch.get("ref_logprobs"),
                           rollout_logp=batch["rollout_logprobs"])

    def _steer_entropy(self, entropy: float) -> None:
        """Bonus coefficient toward the band; stop on a sustained collapse or blow-up."""
        cfg, st = self.cfg, self.state
        if cfg.entropy_band:
            lo, hi = cfg.entropy_band
            if entropy < lo:
                self.loss_cfg.entropy_coef += cfg.entropy_coef_step
            elif entropy > hi:
                self.loss_cfg.entropy_coef = max(0.0, self.loss_cfg.entropy_coef - cfg.entropy_coef_step)
            st["entropy_coef"] = self.loss_cfg.entropy_coef
        bad = entropy < cfg.entropy_min or entropy > cfg.entropy_max
        st["entropy_bad"] = st["entropy_bad"] + 1 if bad else 0
        if st["entropy_bad"] >= cfg.entropy_patience:
            what = "collapsed below" if entropy < cfg.entropy_min else "blew up above"
            bound = cfg.entropy_min if entropy < cfg.entropy_min else cfg.entropy_max
            raise TrainingStopped(f"entropy {what} {bound:g} for {st['entropy_bad']} iterations (now {entropy:.4f}) "
                                  f"at step {self.trainer.step}: lower the learning rate, raise entropy_coef or "
                                  f"clip_high, or set entropy_band; the last checkpoint is kept")


def routing_mismatch(trainer_experts: list, prompt_lens: list[int], routed: list) -> int:
    """(token, layer) pairs whose experts in the trainer's forward differ from the rollout's: the
    rollout fed produced token j at input position prompt_len + j. trainer_experts: [b][s][layer]."""
    bad = 0
    for i, (p, rollout) in enumerate(zip(prompt_lens, routed, strict=True)):
        for j, layers in enumerate(rollout or []):
            bad += sum(a != b for a, b in zip(trainer_experts[i][p + j], layers, strict=True))
    return bad


def _forward(model, batch):
    from train.logprobs import token_logprobs

    return token_logprobs(model, batch["tokens"], batch["loss_mask"], batch["position_ids"], batch["attention_mask"],
                          labels=batch["labels"])


# ------------------------------------------------------------------------------- evaluation
def evaluate(cfg: GRPOConfig, engine, items: list[dict]) -> dict:
    """Held-out greedy accuracy and sampled pass@1 / pass@k (the verifiable eval of `q3 post eval`)."""
    from train.generate import Tokenizer
    from train.post.evals import EvalConfig, Evaluator, eval_verifiable

    tok = Tokenizer()
    common = {"load": cfg.load or "-", "pairs": cfg.eval_pairs or "-", "max_tokens": cfg.max_tokens,
              "mode": cfg.mode, "seed": cfg.seed}
    greedy = eval_verifiable(Evaluator(engine, tok, EvalConfig(**common, k=1, temperature=0.0)), items)["all"]
    sampled = eval_verifiable(Evaluator(engine, tok, EvalConfig(**common, k=cfg.eval_k, temperature=cfg.temperature)),
                              items)["all"]
    return {"greedy_accuracy": greedy["pass@1"], "pass@1": sampled["pass@1"],
            f"pass@{cfg.eval_k}": sampled[f"pass@{cfg.eval_k}"], "mean_tokens": sampled["mean_tokens"]}


# ------------------------------------------------------------------------------- the verb
def make_scorer(cfg: GRPOConfig):
    """The reward: a task mix from `rewards` (general RL), else synth's verifiers on every pair."""
    from train.post.rewards import TaskRewards, build_reward

    if cfg.rewards:
        return TaskRewards.load(cfg.rewards)        # conf/post/<name>.yaml or a YAML path
    return build_reward({"type": "verifier"})


def run(cfg: GRPOConfig, rows: list[dict] | None = None, stage: str = "GRPO") -> dict:
    """Train on `rows` (default: the `pairs` files); returns {'history', 'eval', 'checkpoint', ...}
    on every rank."""
    if rows is None:
        if not cfg.pairs:
            raise ConfigError("post grpo needs pairs=[rl_pairs.jsonl, ...] (`q3 synth verifiable` / `q3 post select`)")
        rows = read_rows(cfg.pairs)                  # before importing megatron (seconds)
    eval_items = read_rows([cfg.eval_pairs])[: cfg.eval_limit] if cfg.eval_pairs else []
    scorer = make_scorer(cfg)
    from train import checkpoint as ckpt
    from train.core import Trainer, schedule_from_config
    from train.post.sft import start_point, write_outputs

    out_dir = Path(cfg.out_dir or runs_dir() / "post" / "grpo")
    mcfg, seq, rope = start_point(cfg)
    trainer = Trainer(cfg, mcfg, seq, rope, schedule_from_config(cfg), out_dir,
                      meta={"stage": stage, "pairs": [str(p) for p in cfg.pairs], "train_steps": cfg.train_steps})
    try:
        own = ckpt.latest_checkpoint(trainer.ckpt_root) is not None
        meta = trainer.resume()
        if own and meta and "rl" in meta:
            trainer.meta["rl"] = dict(meta["rl"])
            trainer.meta["eval"] = dict(meta.get("eval", {}))
        loop = GRPO(cfg, trainer, rows, scorer)
        evals = trainer.meta.setdefault("eval", {})
        if eval_items and "start" not in evals:
            evals["start"] = evaluate(cfg, loop.engine, eval_items)
        if trainer.rank == 0:
            log.info("%s of %s: %d queries, %d x %d rollouts per step, %d steps, %s", stage, mcfg.name, len(rows),
                     cfg.prompts_per_step, cfg.group_size, cfg.train_steps, out_dir)
            if evals.get("start"):
                log.info("held-out before: %s", json.dumps(evals["start"]))
        while not trainer.done:
            try:
                loop.iteration()
            except TrainingStopped:
                trainer.save()
                raise
            it = loop.state["iteration"]
            if eval_items and cfg.eval_interval and it % cfg.eval_interval == 0 and not trainer.done:
                evals[f"iter_{it}"] = evaluate(cfg, loop.engine, eval_items)
                if trainer.rank == 0:
                    log.info("held-out at iteration %d: %s", it, json.dumps(evals[f"iter_{it}"]))
            if cfg.save and (trainer.done or (cfg.save_interval and it % cfg.save_interval == 0)):
                trainer.save()
        finished = trainer.step >= cfg.train_steps
        if finished and eval_items and "end" not in evals:
            evals["end"] = evaluate(cfg, loop.engine, eval_items)
        result = {"stage": stage, "steps": trainer.step, "iterations": loop.state["iteration"],
                  "model": mcfg.name, "queries": len(rows), "eval": evals,
                  "checkpoint": str(ckpt.latest_checkpoint(trainer.ckpt_root))}
        if finished and trainer.rank == 0:
            write_outputs(trainer, cfg.export_hf, out_dir, result)
            if evals.get("start") and evals.get("end"):
                print_table("GRPO held-out", ["metric", "start", "end"],
                            [(k, evals["start"][k], evals["end"].get(k)) for k in evals["start"]])
        return {**result, "history": list(trainer.history)}
    finally:
        trainer.close()


def cli(config: str | None, overrides: list[str]) -> int:
    """GRPO on query-verifier pairs: q3 post grpo --config grpo load=CKPT pairs=[rl_pairs.jsonl]"""
    from train.core import run_verb

    return run_verb(run, GRPOConfig, "post", config, overrides)


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main
    from train.post.cli import VERBS

    sys.exit(script_main(VERBS["grpo"], None, prog="q3 post grpo"))
