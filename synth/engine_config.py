"""`q3 synth run`'s config, its row schema, and the hash of what determines its outputs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from dataproc.dedup.config import DecontamConfig
from q3.config import Q3Config, config_hash
from q3.engine.runner import Runner
from q3.schemas import DOC_SCHEMA
from synth.llm_calls import EndpointConfig
from synth.templates import Template, load_template

PROVENANCE_TYPE = pa.struct([
    ("template", pa.string()),
    ("template_hash", pa.string()),
    ("model", pa.string()),
    ("seed_id", pa.string()),
    ("seed_source", pa.string()),
    ("target_lang", pa.string()),
    ("item", pa.int32()),               # index within a JSON reply holding several pairs
    ("config_hash", pa.string()),
    ("request_key", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("cached", pa.bool_()),
])
SYNTH_SCHEMA = pa.schema(list(DOC_SCHEMA) + [pa.field("provenance", PROVENANCE_TYPE),
                                             pa.field("reason", pa.string()), pa.field("detail", pa.string())])


class EngineConfig(Q3Config):
    input: str = ""                   # seeds: a corpus folder / Parquet file (DOC_SCHEMA) or JSONL
    output: str = ""
    templates: list[str] = Field(default_factory=lambda: ["textbook", "qa", "instructions", "code_exercise",
                                                          "multilingual", "ocr_refine"])
    target_languages: list[str] = Field(default_factory=lambda: ["eng_Latn", "deu_Latn", "fra_Latn", "cmn_Hans"])
    n_items: int = 3
    max_docs: int | None = None
    shard_size: int = Field(8, ge=1)
    # auto: Spark only when a cluster is configured (Q3_SPARK_MASTER, spark-submit, cluster profile);
    # else local whatever the seeds' size - the run waits on the endpoint, whose load
    # endpoint.concurrency bounds, so local Spark workers would add JVM start-up and nothing else.
    runner: Runner = "auto"
    cluster: str | None = None        # a cluster profile (q3.engine.session): runner auto then picks Spark
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    dedup: bool = True                # exact: normalised-text hash over the whole output
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)   # evals: [] = not checked
    min_output_chars: int = 20
    params: dict[str, Any] = Field(default_factory=dict)   # overrides every template's sampling params
    reject_truncated: bool = True     # replies cut by max_tokens are rejected (the demo's tiny model never stops)
    allow_empty: bool = False         # True: no seed rows / no answered request is not a failure
    max_seed_chars: int | None = Field(None, ge=1)   # caps every template's max_input_chars (CPU models: short prompts)


def template_for(name: str, cfg: EngineConfig) -> Template:
    """A template as this run uses it (seed cut at `max_seed_chars`; its digest says so)."""
    t = load_template(name)
    if cfg.max_seed_chars and cfg.max_seed_chars < t.max_input_chars:
        t = t.model_copy(update={"max_input_chars": cfg.max_seed_chars})
    return t


def run_config_hash(cfg: EngineConfig) -> str:
    """What determines the outputs (not where they go, how fast, or which runner)."""
    d = cfg.model_dump(mode="json")
    for k in ("output", "runner", "cluster", "allow_empty"):
        d.pop(k, None)
    if d.get("max_seed_chars") is None:          # unset: the hash of configs written before the key
        d.pop("max_seed_chars", None)
    ep = cfg.endpoint
    d["endpoint"] = {"model": ep.resolved_model(), "default_params": ep.default_params,
                     "cache_namespace": ep.cache_namespace}
    d["template_hashes"] = {n: template_for(n, cfg).digest() for n in cfg.templates}
    return config_hash(d)
