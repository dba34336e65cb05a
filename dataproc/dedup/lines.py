"""CCNet-style line / paragraph dedup across the corpus (boilerplate that survives doc dedup).

Each line (or blank-line separated paragraph) is normalised as CCNet does (lower case, digits ->
0, punctuation and accents dropped, whitespace folded) and hashed (64-bit). A unit found in at
least `min_count` distinct documents is boilerplate and removed from every document; units shorter
than `min_chars` (after normalisation) are never removed. A document left empty is rejected with
reason `line_dedup_empty`.

Two passes, both pure functions over Arrow batches: `unit_hashes` (count pass) and
`LineRemover` (rewrite pass). The frequent set is broadcast (it is boilerplate: small; the job
refuses more than `max_frequent` units rather than blowing executor memory).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.dedup.config import LinesConfig

STAGE = "dedup_lines"
_DIGIT = re.compile(r"\d")
_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_PARA = re.compile(r"\n\s*\n")


def normalise_unit(s: str) -> str:
    s = unicodedata.normalize("NFD", s.lower())
    s = "".join(c for c in s if unicodedata.category(c) != "Mn")
    s = _PUNCT.sub("", _DIGIT.sub("0", s))
    return " ".join(s.split())


def split_units(text: str, unit: str) -> list[str]:
    return _PARA.split(text) if unit == "paragraph" else text.split("\n")


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


def doc_unit_hashes(text: str, cfg: LinesConfig) -> set[int]:
    out = set()
    for u in split_units(text or "", cfg.unit):
        n = normalise_unit(u)
        if len(n) >= cfg.min_chars:
            out.add(_h(n))
    return out


def unit_hashes(batch: pa.RecordBatch, cfg: LinesConfig) -> pa.RecordBatch:
    """One row per (document, distinct unit hash) of the live rows."""
    live = (pc.is_null(batch.column("reason")).to_pylist() if "reason" in batch.schema.names
            else [True] * batch.num_rows)
    hs: list[int] = []
    for t, ok in zip(batch.column("text").to_pylist(), live, strict=True):
        if ok:
            hs.extend(doc_unit_hashes(t, cfg))
    return pa.RecordBatch.from_arrays([pa.array(hs, pa.int64())], names=["h"])


class LineRemover:
    """Rewrite pass: drop frequent units from live rows; reject rows left empty."""

    name = STAGE

    def __init__(self, frequent: np.ndarray, cfg: LinesConfig):
        self.frequent = np.sort(np.asarray(frequent, np.int64))
        self.cfg = cfg

    def _is_frequent(self, h: int) -> bool:
        i = np.searchsorted(self.frequent, h)
        return bool(i < len(self.frequent) and self.frequent[i] == h)

    def clean(self, text: str) -> tuple[str, int]:
        sep = "\n\n" if self.cfg.unit == "paragraph" else "\n"
        kept, removed = [], 0
        for u in split_units(text, self.cfg.unit):
            n = normalise_unit(u)
            if len(n) >= self.cfg.min_chars and self._is_frequent(_h(n)):
                removed += len(u)
                continue
            kept.append(u)
        return sep.join(kept), removed

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        reasons = batch.column("reason").to_pylist()
        stages = batch.column("stage").to_pylist()
        details = batch.column("detail").to_pylist()
        for i, t in enumerate(texts):
            if reasons[i] is not None or t is None or len(self.frequent) == 0:
                continue
            new, removed = self.clean(t)
            if removed:
                texts[i] = new
                if not new.strip():
                    reasons[i], stages[i], details[i] = "line_dedup_empty", STAGE, f"{removed} chars of repeated {self.cfg.unit}s"
        cols = {"text": pa.array(texts, pa.string()), "reason": pa.array(reasons, pa.string()),
                "stage": pa.array(stages, pa.string()), "detail": pa.array(details, pa.string())}
        out = batch
        for name, arr in cols.items():
            out = out.set_column(out.schema.get_field_index(name), name, arr)
        if "n_chars" in out.schema.names:
            nc = pa.array([len(t) if t is not None else None for t in texts], pa.int64())
            out = out.set_column(out.schema.get_field_index("n_chars"), "n_chars", nc.cast(out.schema.field("n_chars").type))
        return out


def _frequent_from_counts(counts: dict[int, int], cfg: LinesConfig) -> np.ndarray:
    """The frequent units; like the Spark runner, refuse more than `max_frequent` of them."""
    frequent = np.array(sorted(h for h, c in counts.items() if c >= cfg.min_count), np.int64)
    if len(frequent) > cfg.max_frequent:
        raise too_many_frequent(cfg)
    return frequent


def count_units(batches: Iterable[pa.RecordBatch], cfg: LinesConfig) -> dict[int, int]:
    """Count pass of the local runner: unit hash -> number of live documents holding it."""
    counts: dict[int, int] = {}
    for b in batches:
        for h in unit_hashes(b, cfg).column("h").to_pylist():
            counts[h] = counts.get(h, 0) + 1
    return counts


def too_many_frequent(cfg: LinesConfig) -> RuntimeError:
    """One message for both runners (Spark stops counting at max_frequent + 1, so no exact count)."""
    return RuntimeError(f"more than {cfg.max_frequent} frequent {cfg.unit}s (lines.max_frequent); "
                        "raise min_count or max_frequent")


def frequent_units(batches: Iterable[pa.RecordBatch], cfg: LinesConfig) -> np.ndarray:
    return _frequent_from_counts(count_units(batches, cfg), cfg)


def line_dedup_table(full: pa.Table, cfg: LinesConfig) -> tuple[pa.Table, dict]:
    """Local runner over a table with the stage columns (reason null = live)."""
    frequent = frequent_units(full.to_batches(max_chunksize=1024), cfg)
    before = pc.sum(pc.utf8_length(pc.fill_null(full.column("text"), ""))).as_py() or 0
    rem = LineRemover(frequent, cfg)
    out = pa.Table.from_batches([rem(b) for b in full.to_batches(max_chunksize=1024)], schema=full.schema)
    after = pc.sum(pc.utf8_length(pc.fill_null(out.column("text"), ""))).as_py() or 0
    emptied = int(pc.sum(pc.equal(out.column("reason"), "line_dedup_empty")).as_py() or 0)
    return out, {"frequent_units": int(len(frequent)), "chars_removed": int(before - after),
                 "docs_emptied": emptied}


def line_dedup_spark(full, cfg: LinesConfig, workdir: str):
    """Spark: count pass (mapInArrow + groupBy), broadcast the frequent set, rewrite pass."""
    from pyspark.sql import functions as F

    spark = full.sparkSession
    cfg_json = cfg.model_dump_json()

    def count_fn(it):
        c = LinesConfig.model_validate_json(cfg_json)
        for b in it:
            yield unit_hashes(b, c)

    freq = (full.select("text", "reason").mapInArrow(count_fn, "h long")
                .groupBy("h").count().where(F.col("count") >= cfg.min_count).select("h"))
    # one job: collect at most max_frequent + 1 hashes (count and collect were two passes)
    hs = freq.limit(cfg.max_frequent + 1).toArrow().column("h").to_numpy()
    n = len(hs)
    if n > cfg.max_frequent:
        raise too_many_frequent(cfg)
    frequent = np.sort(hs.astype(np.int64))
    bc = spark.sparkContext.broadcast(frequent)
    schema = full.schema

    def rewrite_fn(it):
        rem = LineRemover(bc.value, LinesConfig.model_validate_json(cfg_json))
        for b in it:
            yield rem(b)

    before = full.agg(F.sum(F.length(F.coalesce("text", F.lit(""))))).collect()[0][0] or 0
    out = full.mapInArrow(rewrite_fn, schema)
    out.write.mode("overwrite").parquet(f"{workdir}/rewritten")
    out = spark.read.schema(schema).parquet(f"{workdir}/rewritten")
    row = out.agg(F.sum(F.length(F.coalesce("text", F.lit("")))).alias("after"),
                  F.sum(F.when(F.col("reason") == "line_dedup_empty", 1).otherwise(0)).alias("emptied")).collect()[0]
    after, emptied = row["after"] or 0, row["emptied"] or 0
    return out, {"frequent_units": int(n), "chars_removed": int(before - after), "docs_emptied": int(emptied)}
