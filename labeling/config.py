"""Typed config of `q3 label judge|train|run` (conf/labeling/<name>.yaml; one file drives all three)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from q3.config import Q3Config
from q3.engine.runner import AutoRunner, Runner
from q3.llm import EndpointConfig
from q3.paths import data_dir


class JudgeConfig(Q3Config):
    sample_size: int = 600                 # documents to judge (stratified)
    seed: int = 0                          # changes which documents each stratum contributes
    length_buckets: list[int] = Field(default_factory=lambda: [1500, 6000])   # char boundaries
    max_doc_chars: int = 3000              # the judge sees at most this many characters
    max_tokens: int = 200
    temperature: float = 0.0


class TrainConfig(Q3Config):
    classifier: Literal["fasttext", "linear", "per_dimension"] = "per_dimension"  # per_dimension: YAML's
    holdout_frac: float = 0.25             # judged documents held out for agreement figures
    min_examples: int = 10                 # fewer valid judgements -> the output is skipped, with a note
    max_chars: int = 4000                  # classifier input: this many leading characters
    threads: int = 2


class RunConfig(Q3Config):
    partitions: int | None = None
    batch_size: int = 512


class LabelConfig(Q3Config):
    aliases = {"workdir": "output", "run.runner": "runner"}
    input: str | None = None               # kept docs: Parquet dir/file (DOC_SCHEMA) or sample JSONL
    output: str | None = None              # work dir (judgements/, models/, labeled/); default: $Q3_DATA/labeling
    runner: Runner = "auto"                # `q3 label run`: auto (local below auto.local_max_*), spark, local
    auto: AutoRunner = Field(default_factory=AutoRunner)   # how `runner: auto` chooses (input bytes, rows)
    allow_empty: bool = False              # True: 0 valid judgements / 0 classifiers is not a failure
    dimensions_dir: str | None = None      # default: conf/labeling/dimensions
    dimensions: list[str] | None = None    # None: all
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def input_path(self) -> Path:
        return Path(self.input) if self.input else data_dir() / "sample" / "docs.jsonl"

    def work(self) -> Path:
        return Path(self.output) if self.output else data_dir() / "labeling"

    def cache_dir(self) -> str:
        return self.endpoint.cache_dir or str(self.work() / "llm_cache")
