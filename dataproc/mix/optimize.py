"""`q3 mix optimize`: RegMix-style mixture optimisation over label-defined dataset groups.

    q3 mix optimize --config demo_s1                     # conf/mix_optimize/demo_s1.yaml
    q3 mix optimize input=data/mix/manifests/demo_s1.yaml validation=[web_zho] proxy=ngram

1. Sample K random mixtures (Dirichlet around the manifest's weights) over the manifest's
   datasets (each dataset is a group defined by label/lang predicates in conf/stages/).
2. Train one tiny proxy per mixture and measure its loss on a fixed validation set (held-out
   documents, every `holdout_every`-th, of the `validation` datasets), one run dir per mixture;
   finished runs are skipped on rerun (resume).
3. Fit a regression of validation loss on the weights (ridge over [w, w^2]; RegMix uses a GBM or
   linear model), predict the loss of `n_candidates` sampled mixtures and average the `top_k`
   best (RegMix's robust choice).
4. Write the manifest with the predicted best weights (epochs recomputed) and the fit in
   `provenance.mixture_optimisation`.

Proxies (`proxy=`):
- `trainer`: the real trainer (`q3 train pretrain`) through its entry point, as a subprocess
  (dataproc never imports train/): `proxy_command` is formatted with {python} {manifest}
  {out_dir} {steps} {train_config} {split} {validation} and must leave a JSON file `result_file`
  (formatted the same way) holding `result_key`. The proxy manifest it gets is the base manifest
  with the sampled weights. The trainer splits every dataset's documents with `proxy_split`
  (megatron's train/valid/test split), trains on the train share and scores the valid share of
  the `validation` datasets — a fixed set, the same tokens for every mixture, never trained on.
  `proxy_overrides` are extra trainer settings (model size, seq length, batch).
- `ngram`: an exact Witten-Bell-smoothed bigram LM over Qwen3 token ids, trained on
  `proxy_tokens` tokens drawn from the mixture; a cheap real model for CPU runs and tests.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dataproc.mix.trainer_runs import run_trainer
from q3.atomic import atomic_write_text
from q3.config import Q3Config, load_config
from q3.contracts import ContractError, ProxyRunResult, StageResult, parse_contract, read_contract
from q3.errors import require_path
from q3.log import get_logger, print_table, progress
from q3.manifest import StageManifest, dump_manifest, load_manifest
from q3.tokenizer import VOCAB_SIZE

log = get_logger(__name__)
logging.getLogger("megatron.core.datasets.indexed_dataset").setLevel(logging.WARNING)


class OptimizeConfig(Q3Config):
    aliases = {"manifest": "input"}
    input: str                            # base stage manifest (from `q3 mix build`)
    output: str | None = None             # default: <manifest stem>.optimized.yaml next to it
    work_dir: str | None = None           # proxy runs; default: <manifest dir>/optimize-<stem>/
    groups: list[str] | None = None       # datasets to mix; None: every dataset in the manifest
    validation: list[str]                 # datasets whose held-out documents form the validation set
    holdout_every: int = Field(default=10, ge=2)
    n_runs: int = Field(default=16, ge=3)     # K proxy models
    alpha: float = Field(default=1.0, gt=0)   # Dirichlet concentration (x weights x n_groups)
    seed: int = 0
    n_candidates: int = Field(default=100_000, ge=100)
    top_k: int = Field(default=100, ge=1)
    ridge: float = Field(default=1e-3, ge=0)
    proxy: Literal["ngram", "trainer"] = "ngram"
    proxy_tokens: int = Field(default=200_000, ge=1000)    # ngram: training tokens per proxy
    proxy_steps: int = 20                                   # trainer: steps per proxy
    proxy_split: str = "90,10,0"                            # trainer: train/valid/test document split
    proxy_overrides: list[str] = Field(default_factory=list)  # trainer: extra key=value settings
    train_config: str = "demo_s1"
    proxy_command: list[str] = Field(default_factory=lambda: [
        "{python}", "-m", "q3.cli", "train", "pretrain", "--config", "{train_config}",
        "manifest={manifest}", "out_dir={out_dir}", "train_steps={steps}", "split={split}",
        "validation={validation}", "eval_batches=0", "save=false", "tensorboard=false"])
    result_file: str = "{out_dir}/result.json"
    result_key: str = "val_loss"


# ---------------------------------------------------------------- data and the ngram proxy

def _docs(prefix: str) -> list[np.ndarray]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    return [np.asarray(ds[i], dtype=np.int64) for i in range(len(ds))]


class Corpus:
    """Per-group train documents and the validation tokens (held-out documents)."""

    def __init__(self, manifest: StageManifest, groups: list[str], validation: list[str], every: int):
        by_name = {d.name: d for d in manifest.datasets}
        for g in groups + validation:
            if g not in by_name:
                raise ValueError(f"dataset {g!r} not in manifest; has {sorted(by_name)}")
        self.train: dict[str, list[np.ndarray]] = {}
        val: list[np.ndarray] = []
        for name in sorted(set(groups) | set(validation)):
            docs = _docs(by_name[name].path_prefix)
            if name in groups:
                self.train[name] = [d for i, d in enumerate(docs) if i % every != 0] or docs
            if name in validation:
                val += [d for i, d in enumerate(docs) if i % every == 0]
        if not val:
            raise ValueError("validation set is empty")
        self.val = val

    def sample(self, weights: dict[str, float], n_tokens: int, seed: int) -> list[np.ndarray]:
        """Documents drawn from each group in proportion to its weight (cycling if short)."""
        rng = np.random.default_rng(seed)
        out: list[np.ndarray] = []
        for g in sorted(weights):
            budget = int(round(weights[g] * n_tokens))
            docs = self.train[g]
            order = rng.permutation(len(docs))
            k = 0
            while budget > 0 and docs:
                d = docs[order[k % len(docs)]][:budget]
                out.append(d)
                budget -= len(d)
                k += 1
        return out


def bigram_val_loss(train_docs: list[np.ndarray], val_docs: list[np.ndarray], vocab: int = VOCAB_SIZE) -> float:
    """Cross-entropy (nats/token) of a Witten-Bell interpolated bigram LM on the validation docs."""
    prev = np.concatenate([d[:-1] for d in train_docs if len(d) > 1])
    nxt = np.concatenate([d[1:] for d in train_docs if len(d) > 1])
    uni = np.bincount(np.concatenate(train_docs), minlength=vocab).astype(np.float64)
    p_uni = (uni + 0.5) / (uni.sum() + 0.5 * vocab)                      # add-1/2 unigram floor
    pair, pair_count = np.unique(prev * vocab + nxt, return_counts=True)
    ctx = np.bincount(prev, minlength=vocab).astype(np.float64)          # c(prev)
    types = np.bincount(pair // vocab, minlength=vocab).astype(np.float64)  # distinct followers T(prev)
    vp = np.concatenate([d[:-1] for d in val_docs if len(d) > 1])
    vn = np.concatenate([d[1:] for d in val_docs if len(d) > 1])
    code = vp * vocab + vn
    pos = np.clip(np.searchsorted(pair, code), 0, len(pair) - 1)
    c_pair = np.where(pair[pos] == code, pair_count[pos], 0).astype(np.float64)
    c_ctx, t_ctx = ctx[vp], types[vp]
    lam = np.divide(c_ctx, c_ctx + t_ctx, out=np.zeros_like(c_ctx), where=(c_ctx + t_ctx) > 0)
    p_bi = np.divide(c_pair, c_ctx, out=np.zeros_like(c_ctx), where=c_ctx > 0)
    p = lam * p_bi + (1 - lam) * p_uni[vn]
    return float(-np.log(p).mean())


# ---------------------------------------------------------------- the regression

def features(w: np.ndarray) -> np.ndarray:
    w = np.atleast_2d(w)
    return np.hstack([np.ones((w.shape[0], 1)), w, w ** 2])


def fit(weights: np.ndarray, losses: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Ridge regression of loss on [1, w, w^2]; returns coefficients and in-sample R^2."""
    X = features(weights)
    reg = ridge * np.eye(X.shape[1])
    reg[0, 0] = 0.0                                    # do not shrink the intercept
    coef = np.linalg.solve(X.T @ X + reg, X.T @ losses)
    pred = X @ coef
    ss = float(((losses - losses.mean()) ** 2).sum())
    r2 = 1.0 - float(((losses - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return coef, r2


def predict_best(coef: np.ndarray, n_groups: int, n_candidates: int, top_k: int,
                 prior: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Mean of the top_k candidate mixtures by predicted loss (RegMix), and its predicted loss."""
    cands = np.vstack([rng.dirichlet(np.full(n_groups, 1.0), size=n_candidates // 2),
                       rng.dirichlet(alpha * n_groups * prior + 1e-3, size=n_candidates - n_candidates // 2)])
    pred = features(cands) @ coef
    best = cands[np.argsort(pred, kind="stable")[:top_k]].mean(axis=0)
    best = best / best.sum()
    return best, float((features(best) @ coef)[0])


def with_weights(base: StageManifest, weights: dict[str, float]) -> StageManifest:
    """The base manifest with new weights (datasets not named get 0), epochs recomputed."""
    ds = []
    for d in base.datasets:
        w = round(float(weights.get(d.name, 0.0)), 12)
        ep = w * base.target_tokens / d.n_tokens if d.n_tokens else 0.0
        ds.append(d.model_copy(update={"weight": w, "epochs": round(ep, 6)}))
    return base.model_copy(update={"datasets": ds})


# ---------------------------------------------------------------- proxy runs

def _run_proxy(cfg: OptimizeConfig, base: StageManifest, corpus: Corpus | None, mix: dict[str, float],
               run_dir: Path, seed: int) -> float:
    result = run_dir / "result.json"
    if result.is_file():                               # resume: finished runs are kept
        return read_contract(ProxyRunResult, result).val_loss
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / "manifest.yaml"
    atomic_write_text(manifest_path, dump_manifest(with_weights(base, mix)))
    if cfg.proxy == "ngram":
        assert corpus is not None
        loss = bigram_val_loss(corpus.sample(mix, cfg.proxy_tokens, seed), corpus.val)
    else:
        fmt = {"python": sys.executable, "manifest": str(manifest_path), "out_dir": str(run_dir / "train"),
               "steps": cfg.proxy_steps, "train_config": cfg.train_config, "split": cfg.proxy_split,
               "validation": "[" + ",".join(cfg.validation) + "]"}
        cmd = [a.format(**fmt) for a in cfg.proxy_command] + list(cfg.proxy_overrides)
        result_file = Path(cfg.result_file.format(**fmt))
        res = run_trainer(cmd, result_file, run_dir / "proxy.log", cfg.result_key)
        loss = _proxy_loss(cfg, res, result_file)
    atomic_write_text(result, json.dumps({"val_loss": loss, "weights": mix}, sort_keys=True))
    return loss


def _proxy_loss(cfg: OptimizeConfig, res: dict, result_file: Path) -> float:
    """The proxy's loss. Our trainer's result.json is read as a `StageResult` (a missing or bad field
    is one line naming the file); a custom `proxy_command` only promises `result_key`."""
    if cfg.proxy_command == OptimizeConfig.model_fields["proxy_command"].get_default(call_default_factory=True):
        return parse_contract(StageResult, res, result_file).metric(cfg.result_key, result_file)
    try:
        return float(res[cfg.result_key])
    except (TypeError, ValueError):
        raise ContractError(f"{result_file}: {cfg.result_key!r} is not a number: {res[cfg.result_key]!r}") from None


def optimize(cfg: OptimizeConfig) -> tuple[Path, dict]:
    """Run the proxies, fit, write the optimised manifest. Returns (path, report)."""
    t0 = time.time()
    base = load_manifest(require_path(cfg.input, "input", "a stage manifest YAML (`q3 mix build` writes them)"))
    if base.length_buckets:
        raise ValueError("mixture optimisation over length-bucketed stages (S3) is not supported: "
                         "their weights encode the length split")
    groups = cfg.groups or [d.name for d in base.datasets]
    prior = np.array([max(next(d.weight for d in base.datasets if d.name == g), 1e-6) for g in groups])
    prior = prior / prior.sum()
    stem = Path(cfg.input).stem
    work = Path(cfg.work_dir) if cfg.work_dir else Path(cfg.input).parent / f"optimize-{stem}"
    corpus = Corpus(base, groups, cfg.validation, cfg.holdout_every) if cfg.proxy == "ngram" else None
    rng = np.random.default_rng(cfg.seed)
    mixes = rng.dirichlet(cfg.alpha * len(groups) * prior, size=cfg.n_runs)
    losses = []
    for k in progress(range(cfg.n_runs), "proxy runs", unit="run"):
        mix = {g: float(w) for g, w in zip(groups, mixes[k], strict=True)}
        losses.append(_run_proxy(cfg, base, corpus, mix, work / f"run-{k:03d}", cfg.seed * 1000 + k))
    y = np.array(losses)
    coef, r2 = fit(mixes, y, cfg.ridge)
    best, pred_loss = predict_best(coef, len(groups), cfg.n_candidates, cfg.top_k, prior, cfg.alpha, rng)
    new_w = {g: float(w) for g, w in zip(groups, best, strict=True)}
    report = {"proxy": cfg.proxy, "n_runs": cfg.n_runs, "seed": cfg.seed, "groups": groups,
              "validation": cfg.validation, "fit_r2": round(r2, 6),
              "predicted_val_loss": round(pred_loss, 6), "best_run_val_loss": round(float(y.min()), 6),
              "base_weights": {g: round(float(p), 6) for g, p in zip(groups, prior, strict=True)},
              "weights": {g: round(w, 6) for g, w in new_w.items()}}
    out_manifest = with_weights(base, new_w)
    prov = dict(out_manifest.provenance) | {"mixture_optimisation": report}
    out_manifest = out_manifest.model_copy(update={"provenance": prov})
    out = Path(cfg.output) if cfg.output else Path(cfg.input).with_name(f"{stem}.optimized.yaml")
    atomic_write_text(out, dump_manifest(out_manifest))
    print_table(f"q3 mix optimize: {out} (K={cfg.n_runs} {cfg.proxy} proxies, fit R^2 {r2:.3f}, "
                f"{time.time() - t0:.1f}s)", ["dataset", "base weight", "optimised weight"],
                [[g, report["base_weights"][g], report["weights"][g]] for g in groups])
    return out, report


def cli(config: str | None, overrides: list[str]) -> int:
    cfg = load_config(OptimizeConfig, "mix_optimize", config, overrides)
    optimize(cfg)
    return 0
