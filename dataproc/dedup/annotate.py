"""The per-batch pure function both runners share: Arrow docs -> dedup metadata.

Input columns: rk (row key, int64), id, url, source, lang, text, score (quality.score).
Output (`META_SCHEMA`): the keys, the scope, the survivor sort key, the exact-content hash, the
MinHash signature and the LSH band keys (null when a document has no shingles, so empty texts never
collide). Spark runs it with `mapInArrow`; the local runner calls it on the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.dedup.config import DedupConfig
from dataproc.dedup.exact import exact_keys
from dataproc.dedup.lsh import band_keys, bands_rows
from dataproc.dedup.minhash import Signer

META_SCHEMA = pa.schema([
    ("rk", pa.int64()),
    ("id", pa.string()),
    ("url", pa.string()),
    ("source", pa.string()),
    ("lang", pa.string()),
    ("scope", pa.string()),
    ("neg_score", pa.float32()),
    ("nh", pa.int64()),
    ("n_bytes", pa.int64()),
    ("sig", pa.list_(pa.int32())),
    ("bands", pa.list_(pa.int64())),
])

META_DDL = ("rk long, id string, url string, source string, lang string, scope string, "
            "neg_score float, nh long, n_bytes long, sig array<int>, bands array<long>")


def scope_values(cfg: DedupConfig, langs: list, sources: list) -> list[str]:
    if cfg.scope == "lang":
        return [x or "" for x in langs]
    if cfg.scope == "source":
        return [x or "" for x in sources]
    return [""] * len(langs)


class Annotator:
    """Built once per worker process (permutations, band params), called on many batches."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.signer = Signer(cfg.minhash)
        self.b, self.r = bands_rows(cfg.minhash)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist()
        sources = batch.column("source").to_pylist()
        score = pc.fill_null(batch.column("score").cast(pa.float32()), -1.0)
        score = pc.if_else(pc.is_nan(score), pa.scalar(-1.0, pa.float32()), score)
        neg = pc.negate(score)
        n_bytes = pc.binary_length(pc.fill_null(batch.column("text"), "")).cast(pa.int64())
        if self.cfg.minhash.enabled:
            sigs, has = self.signer.sign(texts, langs)
            keys = band_keys(sigs, self.b, self.r)
            p = sigs.shape[1]
            sig_arr = pa.ListArray.from_arrays(np.arange(0, (n + 1) * p, p, dtype=np.int32),
                                               pa.array(sigs.view(np.int32).ravel()))
            offs = np.arange(0, (n + 1) * self.b, self.b, dtype=np.int32)
            band_arr = pa.ListArray.from_arrays(offs, pa.array(keys.ravel()),
                                                mask=pa.array(~has))
        else:
            sig_arr = pa.nulls(n, pa.list_(pa.int32()))
            band_arr = pa.nulls(n, pa.list_(pa.int64()))
        cols = [
            batch.column("rk").cast(pa.int64()),
            batch.column("id").cast(pa.string()),
            pc.fill_null(batch.column("url").cast(pa.string()), ""),
            pc.fill_null(batch.column("source").cast(pa.string()), ""),
            batch.column("lang").cast(pa.string()),
            pa.array(scope_values(self.cfg, langs, sources), pa.string()),
            neg,
            pa.array(exact_keys(texts), pa.int64()),
            n_bytes,
            sig_arr,
            band_arr,
        ]
        return pa.RecordBatch.from_arrays(cols, schema=META_SCHEMA)


def annotate_batches(cfg_json: str):
    """A mapInArrow function (closure over the config as JSON: picklable, built once)."""
    def fn(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ann = Annotator(DedupConfig.model_validate_json(cfg_json))
        for batch in it:
            if batch.num_rows:
                yield ann(batch)
    return fn
