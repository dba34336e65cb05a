"""The synthetic generation engine: seed documents x templates -> requests -> rows with provenance.

    q3 synth run input=seeds.parquet output=data/synth/run endpoint.base_url=http://host:8000/v1

Built on the corpus engine (q3.engine, docs/engine.md):
- seeds: `read_corpus` (a corpus folder, Parquet file or JSONL), sorted by id, cut into shards;
- shards: one batch function (`synth.shards`) over the shard plan by `map_batches`, a local loop or
  Spark mapInArrow (one async request pool per task); each shard is its own keyed commit
  (`q3.engine.parts`), so a killed run redoes only the shard in flight, and the client's on-disk
  cache answers every request that had already been answered;
- final: `run_committed` skips an unchanged run (same config, seed content, code) at once, else
  `synth.finalize` dedups, decontaminates and writes <output>/final/{data,rejected}.parquet +
  stats.json, committed atomically.
Every row carries provenance: template (+hash), model, seed document id, target language, config
hash, request key, token usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from q3.commit import JobKey, job_key
from q3.config import load_config
from q3.engine.io import read_corpus
from q3.engine.job import run_committed
from q3.engine.map import map_batches
from q3.engine.runner import RunnerChoice, choose_runner, cluster_configured
from q3.errors import InputMissing, require_nonempty
from q3.log import get_logger, print_table, progress, timed
from q3.paths import data_dir
from q3.schemas import UNKNOWN_LANG
from synth.engine_config import SYNTH_SCHEMA, EngineConfig, run_config_hash, template_for
from synth.finalize import decontaminate, finalize
from synth.llm_calls import run_cli_job
from synth.shards import (
    SEED_COLS,
    STATUS_SCHEMA,
    committed_shard,
    plan_requests,
    shard_dir,
    shard_plan,
    shard_seed_ids,
    shard_work,
)

__all__ = ["SYNTH_SCHEMA", "EngineConfig", "cli", "decontaminate", "plan_requests", "read_seeds", "run",
           "run_config_hash", "shard_dir", "synth_key", "template_for"]
log = get_logger("synth.engine")
_template = template_for   # the name tests and older callers use
MAX_TASKS = 64             # Spark tasks generating at once (each with its own request pool)


def read_seeds(path: str, max_docs: int | None = None) -> pa.Table:
    """Seed documents (id, text, lang, source) read by the corpus engine, sorted by id (a stable
    shard plan). JSONL seeds are named by content id, as every corpus job names JSONL documents."""
    if not path:
        raise InputMissing("no seed input: set input=<corpus folder, Parquet file or JSONL>")
    t = read_corpus(path, columns=SEED_COLS)
    src, lang = t.column("source"), t.column("lang")
    t = t.set_column(3, "source", pc.if_else(pc.fill_null(pc.equal(src, ""), True), "seed", src))
    t = t.set_column(2, "lang", pc.fill_null(lang, UNKNOWN_LANG))
    t = t.sort_by("id")
    return t.slice(0, max_docs) if max_docs else t


def synth_key(cfg: EngineConfig) -> JobKey:
    """The job key (`q3.commit`): the run's config hash, the seed input's content, the code."""
    return job_key("synth", {"config": run_config_hash(cfg)}, inputs=[cfg.input])


def choose(cfg: EngineConfig) -> RunnerChoice:
    """runner auto: Spark on a cluster, else local (whatever the seeds' size: the run waits on the
    endpoint, bounded by endpoint.concurrency; local Spark workers would only add start-up)."""
    if cfg.runner == "auto" and not cluster_configured(cfg.cluster):
        choice = RunnerChoice("local", "no cluster configured: generation is bound by the endpoint, not cores")
        log.info("synth: runner local (%s)", choice.why)
        return choice
    return choose_runner(cfg.runner, [cfg.input], cluster=cfg.cluster, job="synth")


def run_shards(cfg: EngineConfig, plan: pa.Table, output: Path, key: JobKey, runner: str,
               spark: Any = None) -> list[dict[str, Any]]:
    """Every shard's stats, in shard order: committed ones read back, the others generated."""
    ids = shard_seed_ids(plan)
    stats: dict[int, dict[str, Any]] = {}
    for k, seed_ids in enumerate(ids):
        if (done := committed_shard(output, key, k, seed_ids)) is not None:
            stats[k] = done
    pending = plan.filter(pc.invert(pc.is_in(plan.column("shard"), pa.array(list(stats), pa.int64()))))
    if pending.num_rows:
        work = shard_work(cfg, output, key)
        if runner == "spark":
            got = _on_spark(work, pending, spark, cfg.cluster)
        else:
            batches = progress(pending.to_batches(max_chunksize=1), "synth shards", total=pending.num_rows,
                               unit="shard")
            got = [r for b in map_batches(work, batches, STATUS_SCHEMA, runner="local") for r in b.to_pylist()]
        stats.update({r["shard"]: json.loads(r["stats"]) for r in got})
    return [stats[k] for k in range(len(ids))]


def _on_spark(work: Any, pending: pa.Table, spark: Any, cluster: str | None) -> list[dict[str, Any]]:
    """The pending shards as Spark tasks (one row per shard; a task runs its shards' pools, so at most
    MAX_TASKS x endpoint.concurrency requests are in flight)."""
    from q3.engine.session import get_spark

    own = spark is None
    spark = spark or get_spark("q3-synth", profile=cluster)
    try:
        # createDataFrame makes one partition per Arrow batch: cut the plan into as many batches as
        # there are task slots (no shuffle stage to spread a few rows)
        parts = min(pending.num_rows, max(1, spark.sparkContext.defaultParallelism), MAX_TASKS)
        per = -(-pending.num_rows // parts)
        df = spark.createDataFrame(pa.Table.from_batches(pending.combine_chunks().to_batches(max_chunksize=per)))
        return [r.asDict() for r in map_batches(work, df, STATUS_SCHEMA, runner="spark").collect()]
    finally:
        if own:   # a session we started is ours to stop (a caller's stays up)
            spark.stop()


def run(cfg: EngineConfig, spark: Any = None) -> dict[str, Any]:
    output = Path(cfg.output) if cfg.output else data_dir() / "synth" / "run"
    if not cfg.input or not Path(cfg.input).exists():
        raise InputMissing(f"seed input not found: {cfg.input!r} (input=<corpus folder, Parquet file or JSONL>)")
    key = synth_key(cfg)

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:   # not committed under `key`: work
        seeds = read_seeds(cfg.input, cfg.max_docs)
        require_nonempty(seeds.num_rows, "0 seed documents", f"input {cfg.input} holds no rows",
                         allow_empty=cfg.allow_empty)
        choice = choose(cfg)
        plan = shard_plan(seeds, cfg.shard_size)
        with timed(log, f"synth: {plan.num_rows} shards of {seeds.num_rows} seeds ({choice.runner})"):
            shards = run_shards(cfg, plan, output, key, choice.runner, spark)
        with timed(log, "synth: dedup, decontamination, final output"):
            stats = finalize(cfg, output, shards, tmp)
        if stats["requests"]:   # the empty-run rule (q3.errors): an endpoint that answered nothing failed
            require_nonempty(stats["requests"] - stats["failed"], f"0 of {stats['requests']} requests answered",
                             f"every request to {cfg.endpoint.resolved_base_url()} failed; check "
                             "endpoint.base_url / endpoint.model", allow_empty=cfg.allow_empty)
        return {**stats, "runner": choice.runner}

    meta = run_committed(output / "final", key, body)
    if meta.get("skipped"):
        print(f"synthetic generation -> {output}/final: up to date ({meta['kept']} kept, {meta['rejected']} "
              "rejected); nothing sent")
        return meta
    print_table(f"synthetic generation -> {output}/final ({meta['seconds']}s, runner {meta['runner']})",
                ["template", "kept", "rejected"],
                [(k, v["kept"], v["rejected"]) for k, v in sorted(meta["by_template"].items())])
    print_table("requests and tokens", ["requests", "cache hits", "failed", "retries", "malformed", "dup sends",
                                        "prompt tokens", "completion tokens", "shards skipped"],
                [(meta["requests"], meta["cache_hits"], meta["failed"], meta["retries"], meta["malformed"],
                  meta["duplicate_sends"], meta["prompt_tokens"], meta["completion_tokens"],
                  meta["shards_skipped"])])
    return meta


def cli(config: str | None, overrides: list[str]) -> int:
    """Generate synthetic data from seed documents and templates against an OpenAI-compatible endpoint.

    keys: input, output, templates, target_languages, n_items, max_docs, shard_size, runner (auto|local|spark),
    cluster, endpoint.{base_url,model,concurrency,timeout_s,max_retries,cache_dir}, dedup, decontam
    """
    cfg = load_config(EngineConfig, "synth", config or "default", overrides)
    meta = run_cli_job(lambda: run(cfg), log)
    if meta is None:
        return 1
    print(json.dumps({**{k: meta.get(k) for k in ("kept", "rejected", "requests", "cache_hits", "prompt_tokens",
                                                  "completion_tokens", "seconds")},
                      "skipped": bool(meta.get("skipped"))}))
    return 0
