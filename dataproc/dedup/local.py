"""The local runner: the same dedup on an in-memory Arrow table (numpy + scipy connected components).

Same per-batch function as Spark (`Annotator`), same edge rule, same survivor order; the test
suite checks both runners give identical clusters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.dedup.annotate import Annotator
from dataproc.dedup.components import bucket_edges_np, exact_edge_filter, local_components, verify_edges_np
from dataproc.dedup.config import DedupConfig
from dataproc.dedup.lsh import min_matches
from q3.log import get_logger, timed

log = get_logger("dedup")

ORDER = ["neg_score", "id", "url", "source", "rk"]    # survivor order: best score, smallest id


def doc_inputs(docs: pa.Table) -> pa.Table:
    """The columns the annotator reads, with rk = row index."""
    score = (pc.struct_field(docs.column("quality"), "score") if "quality" in docs.schema.names
             else pa.nulls(docs.num_rows, pa.float32()))
    def col(name: str):
        return docs.column(name) if name in docs.schema.names else pa.nulls(docs.num_rows, pa.string())
    return pa.table({"rk": pa.array(np.arange(docs.num_rows, dtype=np.int64)), "id": col("id"),
                     "url": col("url"), "source": col("source"), "lang": col("lang"),
                     "text": col("text"), "score": score})


def annotate_table(docs: pa.Table, cfg: DedupConfig) -> pa.Table:
    ann = Annotator(cfg)
    inp = doc_inputs(docs)
    return pa.Table.from_batches([ann(b) for b in inp.to_batches(max_chunksize=cfg.batch_size)
                                  if b.num_rows], schema=None) if inp.num_rows else _empty_meta()


def _empty_meta() -> pa.Table:
    from dataproc.dedup.annotate import META_SCHEMA
    return META_SCHEMA.empty_table()


def dedup_table(docs: pa.Table, cfg: DedupConfig) -> pd.DataFrame:
    """DOC_SCHEMA table -> one result row per document (see `dedup_meta`), in row order."""
    with timed(log, "dedup: hashes, MinHash signatures and band keys"):
        meta = annotate_table(docs, cfg)
    return dedup_meta(meta, cfg, docs.column("text").to_pylist())


def dedup_meta(meta: pa.Table, cfg: DedupConfig, texts: list | None = None) -> pd.DataFrame:
    """meta -> DataFrame(rk, id, lang, n_bytes, dup_cluster, dup_cluster_size, reason).
    `texts[rk]` are needed for minhash.verify=exact."""
    df = meta.select(["rk", "id", "url", "source", "lang", "scope", "neg_score", "nh", "n_bytes"]).to_pandas()
    df["neg_score"] = df["neg_score"].astype(np.float32)
    if cfg.exact.enabled:
        first = (df.sort_values(["scope", "nh", *ORDER], kind="mergesort")
                   .groupby(["scope", "nh"], sort=False)["rk"].transform("first"))
        df["rep"] = first.reindex(df.index)
    else:
        df["rep"] = df["rk"]
    reps = df["rep"].to_numpy() == df["rk"].to_numpy()
    comp = dict(zip(df["rk"], df["rep"], strict=True))
    if cfg.minhash.enabled and len(df):
        bands = meta.column("bands")
        has = pc.is_valid(bands).to_numpy(zero_copy_only=False) & reps
        idx = np.flatnonzero(has)
        if len(idx):
            b = len(bands[int(idx[0])])
            keys = np.asarray(pc.list_flatten(bands.take(pa.array(idx))).to_numpy()).reshape(-1, b)
            sc_codes = pd.factorize(df["scope"].to_numpy()[idx])[0]
            rks = df["rk"].to_numpy()[idx]
            with timed(log, "dedup: candidate pairs (LSH buckets)"):
                edges = bucket_edges_np(rks, sc_codes, keys)
            mh = cfg.minhash
            if mh.verify != "none" and len(edges):
                log.info("dedup: %d candidate edges", len(edges))
                p = mh.num_perm
                sigs = np.asarray(pc.list_flatten(meta.column("sig").take(pa.array(idx))).to_numpy()).reshape(-1, p)
                margin = mh.prefilter_margin if mh.verify == "exact" else 0.0
                edges = verify_edges_np(edges, {int(r): i for i, r in enumerate(rks)}, sigs,
                                        min_matches(mh.threshold - margin, p))
            if mh.verify == "exact" and len(edges):
                if texts is None:
                    raise ValueError("minhash.verify=exact needs the documents' texts")
                lang = df["lang"].tolist()
                batch = pa.RecordBatch.from_pydict({
                    "u": edges[:, 0], "v": edges[:, 1],
                    "tu": [texts[u] for u in edges[:, 0]], "lu": [lang[u] for u in edges[:, 0]],
                    "tv": [texts[v] for v in edges[:, 1]], "lv": [lang[v] for v in edges[:, 1]]})
                with timed(log, f"dedup: exact Jaccard of {len(edges)} edges"):
                    kept = exact_edge_filter(batch, mh)
                edges = np.stack([kept.column("u").to_numpy(), kept.column("v").to_numpy()], axis=1).astype(np.int64)
            with timed(log, "dedup: connected components"):
                root = local_components(rks, edges)
            comp_rep = {r: root.get(r, r) for r in df["rk"][reps]}
            comp = {rk: comp_rep[rep] for rk, rep in zip(df["rk"], df["rep"], strict=True)}
    df["comp"] = df["rk"].map(comp)
    log.info("dedup: survivors ...")
    surv = (df.sort_values(["comp", *ORDER], kind="mergesort").groupby("comp", sort=False)
              .agg(surv_rk=("rk", "first"), dup_cluster=("id", "first"), dup_cluster_size=("rk", "size")))
    df = df.join(surv, on="comp")
    df["reason"] = np.where(df["rk"] == df["surv_rk"], None,
                            np.where(df["rk"] != df["rep"], "exact_duplicate", "near_duplicate"))
    return df[["rk", "id", "lang", "n_bytes", "dup_cluster", "dup_cluster_size", "reason"]].sort_values("rk")
