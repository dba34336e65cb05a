"""Typed configs of the mixing side: stage definitions (conf/stages/*.yaml) and the mix job
(conf/mix/*.yaml: where the kept corpus is, which stages to tokenise and build)."""

from __future__ import annotations

from pydantic import Field, model_validator

from q3.config import Q3Config, load_config
from q3.engine.runner import AutoRunner, Runner
from q3.manifest import LengthBucket, Schedule


class Selection(Q3Config):
    """Predicates over a document's columns; all given ones must hold (AND). None = no constraint.

    Language patterns are fnmatch globs over `lang` (`deu_Latn`, `*_Latn`, `code_*`) or `@group`
    names from the mix config's `lang_groups`. A predicate on `labels`/`quality` is false for a
    document whose struct (or field) is null: unlabelled documents never pass a label filter.
    """

    langs: list[str] | None = None
    exclude_langs: list[str] = Field(default_factory=list)
    sources: list[str] | None = None                 # fnmatch globs over `source`
    exclude_sources: list[str] = Field(default_factory=list)
    domains: list[str] | None = None                 # labels.domain in this list
    min_quality: float | None = None                 # quality.score >=
    min_quality_label: float | None = None           # labels.quality_score >=
    min_edu: float | None = None                     # labels.edu_score >=
    min_reasoning: float | None = None               # labels.reasoning_score >=
    has_code: bool | None = None                     # labels.has_code ==
    has_math: bool | None = None                     # labels.has_math ==
    safety: list[str] | None = None                  # labels.safety in this list
    min_chars: int | None = None
    max_chars: int | None = None
    # Length bucket in tokens (EOD included), applied after tokenisation to each document, or to
    # each chunk when `chunk_tokens` splits long documents (S3 builds long samples this way).
    min_tokens: int | None = None
    max_tokens: int | None = None
    chunk_tokens: int | None = Field(default=None, ge=2)


class StageDataset(Q3Config):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    select: Selection = Field(default_factory=Selection)
    weight: float = Field(default=1.0, ge=0)


class StageConfig(Q3Config):
    """One pretraining stage (S1/S2/S3): what it reads, how much, and how it trains."""

    stage: str
    seq_length: int = Field(gt=0)
    rope_base: float = Field(gt=0)
    target_tokens: int = Field(gt=0)
    datasets: list[StageDataset]
    # Length buckets (S3): every dataset is split into one derived dataset per bucket, documents
    # longer than the top bucket are chunked at its max, and bucket b gets `fraction_b` of the
    # samples. Empty: no bucketing.
    length_buckets: list[LengthBucket] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=Schedule)

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate dataset names in stage {self.stage}: {names}")
        if self.length_buckets and abs(sum(b.fraction for b in self.length_buckets) - 1) > 1e-6:
            raise ValueError("length_buckets fractions must sum to 1")
        if not any(d.weight > 0 for d in self.datasets):
            raise ValueError(f"stage {self.stage}: every dataset has weight 0")
        return self


class SparkOpts(Q3Config):
    partitions: int | None = None       # Spark partitions for tokenisation; None: 2 x cores


class MixConfig(Q3Config):
    """conf/mix/<name>.yaml: the kept corpus, the stages, where token data and manifests go."""

    input: str = "data/pipeline/kept"   # Parquet in DOC_SCHEMA (hive-partitioned by lang is fine)
    output: str = "data/mix"            # tokens/ and manifests/ go below this
    stages: list[str] = Field(default_factory=lambda: ["s1", "s2", "s3"])   # conf/stages/<name>
    lang_groups: dict[str, list[str]] = Field(default_factory=dict)
    runner: Runner = "auto"             # auto: local below auto.local_max_* (input bytes, rows), else Spark
    auto: AutoRunner = Field(default_factory=AutoRunner)   # how `runner: auto` chooses
    buckets: int = Field(default=16, ge=1)   # hash buckets of documents = shards and resume units
    batch_size: int = Field(default=256, ge=1)
    spark: SparkOpts = Field(default_factory=SparkOpts)


def load_stage(ref: str) -> StageConfig:
    return load_config(StageConfig, "stages", ref)
