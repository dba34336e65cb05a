"""The stage-mixing manifest: the contract between the corpus side and the trainer.

`q3 mix build` writes one per pretraining stage (S1, S2, S3); `q3 train pretrain` reads it and
hands the datasets and weights to megatron-core's `BlendedMegatronDatasetBuilder`. Deterministic:
the same inputs give a byte-identical YAML (`dump_manifest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from q3.config import ConfigError, Q3Config, load_yaml, validate


class ManifestDataset(Q3Config):
    name: str
    path_prefix: str              # Megatron indexed dataset prefix: <prefix>.bin / <prefix>.idx
    weight: float = Field(ge=0)   # normalised sampling weight within the stage (weights sum to 1)
    n_tokens: int = Field(ge=0)
    n_docs: int = Field(ge=0)
    epochs: float = Field(ge=0)   # passes over this dataset implied by the stage's target tokens


class LengthBucket(Q3Config):
    min_tokens: int
    max_tokens: int
    fraction: float = Field(ge=0, le=1)


class Schedule(Q3Config):
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_fraction: float = 0.01
    decay: Literal["cosine", "wsd", "linear", "constant"] = "cosine"
    decay_fraction: float = 1.0     # WSD: fraction of the stage spent decaying (S2 decays faster)
    global_batch_tokens: int | None = None


class StageManifest(Q3Config):
    stage: str                      # "S1" | "S2" | "S3" (or any name)
    seq_length: int
    rope_base: float
    target_tokens: int
    tokenizer: str = "qwen3"
    datasets: list[ManifestDataset]
    length_buckets: list[LengthBucket] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=Schedule)
    provenance: dict[str, Any] = Field(default_factory=dict)


def load_manifest(path: str | Path) -> StageManifest:
    if not Path(path).is_file():
        raise ConfigError(f"manifest not found: {path} (`q3 mix build` writes stage manifests)")
    return validate(StageManifest, load_yaml(path), str(path))


def dump_manifest(manifest: StageManifest) -> str:
    """Deterministic YAML: sorted keys, no timestamps (provenance holds hashes, not times)."""
    return yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=True, allow_unicode=True,
                          default_flow_style=False)
