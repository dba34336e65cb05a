"""Typed config of `q3 data dedup` / `q3 data decontam` (conf/dedup/default.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from q3.config import Q3Config
from q3.engine.runner import AutoRunner, Runner


class MinHashConfig(Q3Config):
    """MinHash-LSH fuzzy dedup. bands x rows come from `threshold` unless set (or a preset)."""

    enabled: bool = True
    num_perm: int = Field(256, ge=2)     # 256: estimate std ~0.025 at J=0.8 (128: ~0.035)
    seed: int = 1
    word_ngram: int = Field(5, ge=1)     # space-delimited scripts: word n-grams (FineWeb: 5)
    char_ngram: int = Field(5, ge=1)     # CJK/Thai/...: character n-grams
    hash: Literal["poly64", "sha1"] = "poly64"   # sha1 = datasketch's default hashfunc (slow, exact)
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    bands: int | None = None
    rows: int | None = None
    preset: Literal["fineweb"] | None = None    # fineweb: 14 bands x 8 rows (112 perms), 5-grams
    # datasketch's false positive/negative weights. Candidates are verified (`verify`), which removes
    # false positives, so the banding is tuned for recall: (0.1, 0.9) -> 23x11 at t=0.8, 256 perms
    # (P(candidate) = 0.985 at J=0.85); datasketch's default (0.5, 0.5) gives 17x15 (0.79 at 0.85).
    fp_weight: float = 0.1
    fn_weight: float = 0.9
    # Candidate edge check: "signature" keeps edges whose signatures agree on >= threshold of the
    # positions; "exact" (default) first drops edges below threshold - prefilter_margin that way,
    # then computes the true Jaccard of the two shingle sets; "none" keeps every LSH candidate.
    verify: Literal["none", "signature", "exact"] = "exact"
    prefilter_margin: float = Field(0.15, ge=0.0, lt=1.0)
    # ignored since the compiled kernel (bounded memory per document without windows); kept so
    # that old configs still load
    window_chars: int = Field(1 << 20, ge=1024)

    @model_validator(mode="after")
    def _preset(self) -> MinHashConfig:
        if self.preset == "fineweb" and self.bands is None:
            object.__setattr__(self, "bands", 14)
            object.__setattr__(self, "rows", 8)
            object.__setattr__(self, "num_perm", 112)
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both minhash.bands and minhash.rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class ExactConfig(Q3Config):
    enabled: bool = True


class LinesConfig(Q3Config):
    """CCNet-style line/paragraph dedup: units seen in >= min_count documents are removed."""

    enabled: bool = False
    unit: Literal["line", "paragraph"] = "line"
    min_count: int = Field(3, ge=2)      # a unit in this many distinct documents is boilerplate
    min_chars: int = 20                  # shorter units are never removed (blank lines, '}' ...)
    max_frequent: int = 5_000_000        # the frequent-unit set is broadcast; refuse beyond this


class LocalConfig(Q3Config):
    """The local runner's memory bound (runner=local; issue 17)."""

    batch_rows: int = Field(65_536, ge=64)      # input rows per streamed batch (texts held at once)
    verify_rows: int = Field(200_000, ge=2)     # texts held at once for the exact-Jaccard check
    max_memory_gib: float | None = None         # refuse bigger inputs; None: 80% of available memory


class DecontamConfig(Q3Config):
    """N-gram overlap against evaluation sets (JSONL/Parquet, one item per row)."""

    evals: list[str] = Field(default_factory=list)   # files/dirs; the benchmark name is the file stem
    text_fields: list[str] = Field(default_factory=lambda: ["text", "question", "prompt", "answer"])
    ngram: int = Field(13, ge=1)
    char_ngram: int = Field(25, ge=1)    # CJK/Thai: characters per n-gram
    min_matches: int = Field(1, ge=1)    # a document with this many matching n-grams is contaminated
    mode: Literal["reject", "remove_span"] = "reject"


class DedupConfig(Q3Config):
    input: str = "data/pipeline/kept"
    output: str = "data/dedup"
    runner: Runner = "auto"             # auto: local below auto.local_max_*, Spark above or on a cluster
    auto: AutoRunner = Field(default_factory=AutoRunner)
    cluster: str | None = None           # a conf/cluster/ profile: runner auto then uses Spark
    scope: Literal["global", "lang", "source"] = "lang"   # FineWeb-2 dedups per language
    exact: ExactConfig = Field(default_factory=ExactConfig)
    minhash: MinHashConfig = Field(default_factory=MinHashConfig)
    lines: LinesConfig = Field(default_factory=LinesConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    partitions: int | None = None        # Spark shuffle partitions; None: session default
    # Spark runner: up to this many verified edges, connected components run on the driver (scipy
    # on two int64 columns: 10^7 edges ~ 160 MB); above it, large-star/small-star rounds in Spark.
    driver_max_edges: int = Field(10_000_000, ge=0)
    batch_size: int = 512                # rows per Arrow batch in mapInArrow / the local runner
    allow_empty: bool = False            # True: an input with 0 documents is not a failure
