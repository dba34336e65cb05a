"""`q3 mix tokenize`: kept documents -> Megatron indexed datasets (`.bin`/`.idx`), one per dataset.

    q3 mix tokenize --config demo                     # conf/mix/demo.yaml
    spark-submit dataproc/jobs/tokenise.py --config demo runner=spark

How it works (one pass over the corpus, whatever the number of datasets):
1. Every document gets a hash bucket `int(id[:8], 16) % buckets`. Spark repartitions by bucket and
   sorts by (bucket, id), so each bucket is a contiguous run inside one partition; the local
   runner sorts the same way. Buckets, not Spark partitions, are the shards: the output does not
   depend on how many executors ran it. The corpus is read by the engine (`q3.engine.io.read_corpus`,
   conformed to DOC_SCHEMA on both runners); `runner: auto` picks local or Spark by input size.
2. `tokenize_rows` (the one function both runners call, through the engine's `map_partitions`: a
   bucket's rows span batches, so it takes a partition's whole stream) evaluates
   every dataset's selection on a batch, encodes the union once with `encode_batch`, appends EOD
   (151643) per document, cuts long documents into chunks where a dataset asks for it (S3), and
   appends each selected document/chunk to that dataset's shard in the bucket, written with
   megatron-core's `IndexedDatasetBuilder`. A finished bucket is committed atomically
   (`<output>/.work/<job>/bucket-NNNNN/` + `_Q3_SUCCESS` with its counts).
3. The driver merges the shards of each dataset in bucket order (`IndexedDatasetBuilder.add_index`)
   into `<output>/tokens/<dataset>.{bin,idx}` and commits `<output>/tokens` (`run_committed`) with
   per-dataset token/document counts and content hashes in the marker and in tokens/stats.json.

Resume: a rerun with the same inputs and config skips committed buckets (and the whole job when
`tokens/` is committed with the same job key); the merged output is byte-identical to an
uninterrupted run.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.mix.config import MixConfig, StageConfig, load_stage
from dataproc.mix.select import TokenDataset, chunk_lengths, doc_mask, length_ok, token_datasets
from q3.atomic import atomic_dir, is_committed, read_marker
from q3.commit import JobKey, job_key
from q3.config import load_config
from q3.engine.io import dataset, read_corpus
from q3.engine.job import run_committed
from q3.engine.partitions import map_partitions
from q3.engine.runner import choose_runner
from q3.errors import InputMissing, require_path
from q3.log import get_logger, print_table, progress
from q3.tokenizer import EOD_ID, encode_batch, tokenizer_files_hash

log = get_logger(__name__)
# megatron logs every shard it opens at INFO; keep the job's own log readable
logging.getLogger("megatron.core.datasets.indexed_dataset").setLevel(logging.WARNING)

COLUMNS = ["id", "text", "source", "lang", "quality", "labels"]
STATS_SCHEMA = pa.schema([("bucket", pa.int32()), ("stats", pa.string())])
CRASH_ENV = "Q3_TOKENIZE_CRASH_AFTER_BUCKETS"     # test hook: exit hard after N committed buckets


# ---------------------------------------------------------------- per-bucket work (both runners)

class _Shard:
    """One dataset's shard inside a bucket: megatron's IndexedDatasetBuilder, fed whole batches."""

    def __init__(self, prefix: Path) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefix = prefix
        self.builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
        self.n_docs = 0
        self.n_tokens = 0

    def add(self, flat: np.ndarray, lengths: list[int]) -> None:
        # Same bytes as one add_item + end_document per document, without a torch tensor each.
        if not lengths:
            return
        b = self.builder
        b.data_file.write(flat.astype(np.int32, copy=False).tobytes(order="C"))
        start = len(b.sequence_lengths)
        b.sequence_lengths.extend(lengths)
        b.document_indices.extend(range(start + 1, start + 1 + len(lengths)))
        self.n_docs += len(lengths)
        self.n_tokens += int(sum(lengths))

    def finalize(self) -> dict[str, int]:
        self.builder.finalize(str(self.prefix) + ".idx")
        return {"n_docs": self.n_docs, "n_tokens": self.n_tokens}


def _encode_into(batch: pa.RecordBatch, datasets: list[TokenDataset], groups: dict[str, list[str]],
                 shards: dict[str, _Shard], counts: dict[str, int]) -> None:
    # an empty or null text would become a lone EOD "document": never selected
    has_text = pc.fill_null(pc.greater(pc.utf8_length(batch.column("text")), 0), False)
    has_text = has_text.to_numpy(zero_copy_only=False).astype(bool)
    masks = [doc_mask(batch, td.select, groups) & has_text for td in datasets]
    union = np.logical_or.reduce(masks) if masks else np.zeros(batch.num_rows, dtype=bool)
    counts["docs_seen"] += batch.num_rows
    counts["docs_unselected"] += int((~union).sum())
    rows = np.flatnonzero(union)
    if rows.size == 0:
        return
    texts = batch.column("text").take(pa.array(rows)).to_pylist()
    ids = encode_batch([t or "" for t in texts])
    counts["docs_tokenized"] += len(ids)
    pos = {int(r): i for i, r in enumerate(rows)}
    docs = [np.asarray(x + [EOD_ID], dtype=np.int32) for x in ids]
    for td, mask in zip(datasets, masks, strict=True):
        sel = td.select
        pieces: list[np.ndarray] = []
        for r in np.flatnonzero(mask):
            doc = docs[pos[int(r)]]
            off = 0
            for n in chunk_lengths(len(doc), sel.chunk_tokens):
                if length_ok(n, sel):
                    pieces.append(doc[off:off + n])
                off += n
        if pieces:
            shards[td.name].add(np.concatenate(pieces), [len(p) for p in pieces])


def _write_bucket(bucket: int, batches: list[pa.RecordBatch], datasets: list[TokenDataset],
                  groups: dict[str, list[str]], workdir: Path) -> dict[str, Any]:
    out = workdir / f"bucket-{bucket:05d}"
    counts = {"docs_seen": 0, "docs_unselected": 0, "docs_tokenized": 0}
    meta: dict[str, Any] = {"bucket": bucket}
    with atomic_dir(out, meta) as tmp:
        shards = {td.name: _Shard(tmp / td.name) for td in datasets}
        for b in batches:
            _encode_into(b, datasets, groups, shards, counts)
        meta["datasets"] = {name: s.finalize() for name, s in shards.items()}
        meta.update(counts)
    return meta


def tokenize_rows(batches: Iterable[pa.RecordBatch], datasets: list[TokenDataset],
                  groups: dict[str, list[str]], workdir: str | Path) -> Iterator[pa.RecordBatch]:
    """Rows sorted by (_bucket, id) -> committed bucket shards; yields one stats row per bucket.

    Buckets already committed under `workdir` (a previous, crashed run) are skipped.
    """
    workdir = Path(workdir)
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    written = 0

    def finish(bucket: int, pending: list[pa.RecordBatch]) -> pa.RecordBatch:
        nonlocal written
        done = workdir / f"bucket-{bucket:05d}"
        if is_committed(done):
            meta = read_marker(done) | {"resumed": True}
        else:
            meta = _write_bucket(bucket, pending, datasets, groups, workdir)
            written += 1
            if crash_after and written >= crash_after:
                os._exit(17)      # simulate a killed worker: no cleanup, no final commit
        return pa.RecordBatch.from_pylist([{"bucket": bucket, "stats": json.dumps(meta, sort_keys=True)}],
                                          schema=STATS_SCHEMA)

    current: int | None = None
    pending: list[pa.RecordBatch] = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        bk = batch.column("_bucket").to_numpy(zero_copy_only=False)
        # split the batch where the bucket changes (rows arrive sorted by bucket)
        cuts = np.flatnonzero(np.diff(bk)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(bk)], strict=True):
            b = int(bk[lo])
            if current is not None and b != current:
                yield finish(current, pending)
                pending = []
            current = b
            if not is_committed(workdir / f"bucket-{b:05d}"):
                pending.append(batch.slice(int(lo), int(hi - lo)))
    if current is not None:
        yield finish(current, pending)


# ---------------------------------------------------------------- runners (the engine's)

def bucket_of(ids: list[str], buckets: int) -> np.ndarray:
    """Same arithmetic as the Spark expression in `_spark_source` (first 32 bits of the id hash)."""
    return np.array([int(i[:8], 16) % buckets for i in ids], dtype=np.int32)


# sort keys: bucket, then content id, then where it came from (ties only for exact duplicates,
# whose tokens are the same whichever comes first)
SORT_COLS = ["_bucket", "id", "source", "lang"]


def _local_source(cfg: MixConfig) -> Iterable[pa.RecordBatch]:
    table = read_corpus(cfg.input, COLUMNS)
    table = table.append_column("_bucket", pa.array(bucket_of(table.column("id").to_pylist(), cfg.buckets)))
    table = table.sort_by([(c, "ascending") for c in SORT_COLS])
    return progress(table.to_batches(max_chunksize=cfg.batch_size), "tokenize", unit="batch")


def _spark_source(cfg: MixConfig) -> Any:
    from pyspark.sql import functions as F

    from q3.engine.session import get_spark

    spark = get_spark("q3-mix-tokenize")
    df = read_corpus(cfg.input, COLUMNS, spark=spark)
    df = df.withColumn("_bucket", (F.conv(F.substring("id", 1, 8), 16, 10).cast("long")
                                   % F.lit(cfg.buckets)).cast("int"))
    parts = min(cfg.buckets, cfg.spark.partitions or 2 * (os.cpu_count() or 2))
    return df.repartition(parts, "_bucket").sortWithinPartitions(*SORT_COLS)


def _tokenizer_fn(datasets: list[TokenDataset], groups: dict[str, list[str]], workdir: str,
                  one_core: bool) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The engine's stream-function factory (runs once per process): rows sorted by bucket ->
    committed bucket shards, one stats row per bucket."""
    if one_core:
        # one Spark task = one core: keep tokenizers' rayon pool from oversubscribing the executor
        # (read when the worker process first encodes); the local runner keeps every core
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    return functools.partial(tokenize_rows, datasets=datasets, groups=groups, workdir=workdir)


def bucket_stats(cfg: MixConfig, datasets: list[TokenDataset], workdir: Path, runner: str) -> list[dict]:
    """Tokenise every bucket (skipping those a crashed run committed); their stats rows."""
    factory = functools.partial(_tokenizer_fn, datasets, cfg.lang_groups, str(workdir), runner == "spark")
    source = _spark_source(cfg) if runner == "spark" else _local_source(cfg)
    out = map_partitions(factory, source, STATS_SCHEMA, runner=runner, batch_size=cfg.batch_size)
    if runner == "spark":
        return [json.loads(r["stats"]) for r in out.collect()]
    return [json.loads(r) for b in out for r in b.column("stats").to_pylist()]


def _merge(datasets: list[TokenDataset], buckets: list[dict], workdir: Path, out: Path) -> dict[str, dict]:
    """Concatenate each dataset's bucket shards in bucket order into out/<name>.{bin,idx}."""
    order = sorted(b["bucket"] for b in buckets)
    result: dict[str, dict] = {}
    # add_index calls gc.collect() per shard, which walks megatron's/torch's whole heap (~1 s each
    # on a busy 2-core VM); freezing the existing objects makes those collections cheap.
    gc.freeze()
    try:
        _merge_all(datasets, buckets, order, workdir, out, result)
    finally:
        gc.unfreeze()
    return result


def _merge_all(datasets: list[TokenDataset], buckets: list[dict], order: list[int], workdir: Path,
               out: Path, result: dict[str, dict]) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    for td in progress(datasets, "merge", unit="dataset"):
        builder = IndexedDatasetBuilder(str(out / f"{td.name}.bin"), dtype=np.int32)
        n_docs = n_tokens = 0
        for bk in order:
            prefix = workdir / f"bucket-{bk:05d}" / td.name
            builder.add_index(str(prefix))
        builder.finalize(str(out / f"{td.name}.idx"))
        for b in buckets:
            s = b["datasets"][td.name]
            n_docs += s["n_docs"]
            n_tokens += s["n_tokens"]
        h = hashlib.sha256()
        for ext in (".idx", ".bin"):
            with open(out / f"{td.name}{ext}", "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(chunk)
        result[td.name] = {"n_docs": n_docs, "n_tokens": n_tokens, "sha256": h.hexdigest()[:16]}


def tokenize_key(cfg: MixConfig, datasets: list[TokenDataset]) -> JobKey:
    """The job key (`q3.commit`): datasets, groups, buckets and tokenizer; the input's content; the code.
    Bucket shards live under `.work/<key id>`, so a changed input never reuses old buckets."""
    if not dataset(cfg.input).files:   # a folder without Parquet is the user's mistake, said before any work
        raise InputMissing(f"no Parquet files under {cfg.input}")
    spec = {"datasets": [{"name": d.name, "select": d.select.model_dump(mode="json")} for d in datasets],
            "groups": cfg.lang_groups, "buckets": cfg.buckets, "tokenizer": tokenizer_files_hash()}
    return job_key("tokenise", spec, inputs=[cfg.input])


def run_tokenize(cfg: MixConfig, stages: list[StageConfig] | None = None, force: bool = False) -> dict[str, Any]:
    """Tokenise the kept corpus into every dataset the stages need. Returns the stats (= the
    output marker's content: per-dataset counts and hashes, documents seen/selected, buckets)."""
    t0 = time.time()
    stages = stages if stages is not None else [load_stage(s) for s in cfg.stages]
    datasets = token_datasets(stages)
    jk = tokenize_key(cfg, datasets)
    out = Path(cfg.output) / "tokens"
    work = Path(cfg.output) / ".work" / jk.id

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:
        choice = choose_runner(cfg.runner, [cfg.input], cfg.auto, job="tokenise")
        work.mkdir(parents=True, exist_ok=True)
        log.info("tokenising %s into %d datasets, %d buckets", cfg.input, len(datasets), cfg.buckets)
        stats = bucket_stats(cfg, datasets, work, choice.runner)
        meta.update({"job": jk.id, "input": cfg.input, "buckets": len(stats),
                     "buckets_resumed": sum(1 for s in stats if s.get("resumed")),
                     "tokenizer_sha256": tokenizer_files_hash(), "eod": EOD_ID})
        for k in ("docs_seen", "docs_unselected", "docs_tokenized"):
            meta[k] = sum(s.get(k, 0) for s in stats)
        meta["datasets"] = _merge(datasets, stats, work, tmp)
        # the marker keeps what manifests read (datasets, job, tokenizer); stats.json the same
        # plus which runner ran and why (not in the marker's key: both give the same bytes)
        return {k: v for k, v in meta.items() if k != "job_key"} | {"runner": choice.runner,
                                                                    "runner_why": choice.why}

    stats = run_committed(out, jk, body, force=force)
    if stats.get("skipped"):
        return stats
    shutil.rmtree(work, ignore_errors=True)
    dt = time.time() - t0
    print_table(f"q3 mix tokenize: {out} ({dt:.1f}s, {stats['buckets_resumed']} buckets resumed)",
                ["dataset", "docs", "tokens"],
                [[n, s["n_docs"], s["n_tokens"]] for n, s in stats["datasets"].items()])
    return stats


def cli(config: str | None, overrides: list[str]) -> int:
    force = "force=true" in overrides
    cfg = load_config(MixConfig, "mix", config, [o for o in overrides if o != "force=true"])
    require_path(cfg.input, "input", "kept documents: the Parquet output of `q3 data run` or `q3 data dedup`")
    run_tokenize(cfg, force=force)
    return 0


if __name__ == "__main__":      # spark-submit dataproc/jobs/tokenise.py --config demo [k=v ...]
    from q3.verbs import script_main

    sys.exit(script_main(cli, __doc__))
