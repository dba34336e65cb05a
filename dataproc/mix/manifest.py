"""`q3 mix build`: one stage-mixing manifest (YAML, `q3.manifest.StageManifest`) per stage.

    q3 mix build --config demo            # after `q3 mix tokenize --config demo`

For each stage in the mix config: its token datasets (`expand_stage`: S3's length buckets become
one dataset per bucket), their weights (normalised; S3 buckets get their fractions of the
samples), token and document counts from the committed `tokens/` marker, the epochs the stage's
target implies, and provenance (config hashes, the tokenisation job key, per-dataset content
hashes, the tokenizer hash). No timestamps: the same inputs give a byte-identical manifest.
Datasets that selected no tokens get weight 0 and the others in their bucket are renormalised.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dataproc.mix.config import MixConfig, StageConfig, load_stage
from dataproc.mix.select import expand_stage
from q3.atomic import atomic_write_text, is_committed, read_marker
from q3.config import config_hash, load_config
from q3.errors import InputMissing
from q3.log import get_logger, print_table
from q3.manifest import LengthBucket, ManifestDataset, StageManifest, dump_manifest

log = get_logger(__name__)


def _bucket_of(name: str, stage: StageConfig) -> int:
    """Index of the length bucket a derived dataset belongs to (0 when the stage has none)."""
    for i, b in enumerate(stage.length_buckets):
        if name.endswith(f".L{b.min_tokens}-{b.max_tokens}"):
            return i
    return 0


def build_stage_manifest(stage: StageConfig, tokens_dir: Path, mix_hash: str) -> StageManifest:
    if not is_committed(tokens_dir):
        raise InputMissing(f"{tokens_dir} is not a committed tokenisation output; run `q3 mix tokenize` first")
    marker = read_marker(tokens_dir)
    expanded = expand_stage(stage)
    missing = [td.name for td, _ in expanded if td.name not in marker["datasets"]]
    if missing:
        raise ValueError(f"stage {stage.stage}: datasets {missing} not in {tokens_dir}; rerun `q3 mix tokenize` "
                         "with a mix config that lists this stage")
    # weights: zero for empty datasets, renormalised within each length bucket
    raw = {td.name: (w if marker["datasets"][td.name]["n_tokens"] > 0 else 0.0) for td, w in expanded}
    bucket_total: dict[int, float] = {}
    bucket_target: dict[int, float] = {}
    for td, w in expanded:
        b = _bucket_of(td.name, stage)
        bucket_total[b] = bucket_total.get(b, 0.0) + raw[td.name]
        bucket_target[b] = bucket_target.get(b, 0.0) + w
    empty_buckets = [b for b, t in bucket_total.items() if t == 0]
    if empty_buckets:
        raise ValueError(f"stage {stage.stage}: no tokens selected for length bucket(s) "
                         f"{[stage.length_buckets[b].model_dump() for b in empty_buckets] or 'all'}")
    for name in sorted(n for n, w in raw.items() if w == 0):     # a silent degradation otherwise
        sel = next(td.select for td, _ in expanded if td.name == name)
        log.warning("stage %s: dataset %s selected no tokens (%s): weight 0, its bucket renormalised", stage.stage,
                    name, json.dumps(sel.model_dump(mode="json", exclude_none=True)))
    datasets = []
    for td, _ in expanded:
        b = _bucket_of(td.name, stage)
        weight = round(raw[td.name] / bucket_total[b] * bucket_target[b], 12)
        info = marker["datasets"][td.name]
        epochs = weight * stage.target_tokens / info["n_tokens"] if info["n_tokens"] else 0.0
        datasets.append(ManifestDataset(name=td.name, path_prefix=str((tokens_dir / td.name).resolve()),
                                        weight=weight, n_tokens=info["n_tokens"], n_docs=info["n_docs"],
                                        epochs=round(epochs, 6)))
    provenance: dict[str, Any] = {
        "stage_config_hash": config_hash(stage), "mix_config_hash": mix_hash,
        "tokens_job": marker["job"], "tokenizer_sha256": marker["tokenizer_sha256"],
        "dataset_sha256": {td.name: marker["datasets"][td.name]["sha256"] for td, _ in expanded},
        "selections": {td.name: td.select.model_dump(mode="json", exclude_none=True) for td, _ in expanded},
        "total_tokens": sum(d.n_tokens for d in datasets), "total_docs": sum(d.n_docs for d in datasets),
        "empty_datasets": sorted(n for n, w in raw.items() if w == 0),
    }
    return StageManifest(stage=stage.stage, seq_length=stage.seq_length, rope_base=stage.rope_base,
                         target_tokens=stage.target_tokens, tokenizer="qwen3", datasets=datasets,
                         length_buckets=[LengthBucket(**b.model_dump()) for b in stage.length_buckets],
                         schedule=stage.schedule, provenance=provenance)


def build_manifests(cfg: MixConfig, stages: dict[str, StageConfig] | None = None) -> dict[str, Path]:
    """Write <output>/manifests/<stage ref>.yaml for every stage; returns {ref: path}."""
    t0 = time.time()
    stages = stages if stages is not None else {ref: load_stage(ref) for ref in cfg.stages}
    tokens_dir = Path(cfg.output) / "tokens"
    out_dir = Path(cfg.output) / "manifests"
    mix_hash = config_hash({"input": cfg.input, "lang_groups": cfg.lang_groups, "buckets": cfg.buckets})
    paths: dict[str, Path] = {}
    rows = []
    for ref, st in stages.items():
        m = build_stage_manifest(st, tokens_dir, mix_hash)
        path = out_dir / f"{Path(ref).stem}.yaml"
        atomic_write_text(path, dump_manifest(m))
        paths[ref] = path
        rows += [[m.stage, d.name, d.weight, d.n_tokens, d.epochs] for d in m.datasets]
    print_table(f"q3 mix build: {out_dir} ({time.time() - t0:.1f}s)",
                ["stage", "dataset", "weight", "tokens", "epochs"], rows)
    return paths


def cli(config: str | None, overrides: list[str]) -> int:
    cfg = load_config(MixConfig, "mix", config, overrides)
    for ref, path in build_manifests(cfg).items():
        log.info("%s -> %s", ref, path)
    return 0
