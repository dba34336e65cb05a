"""The local runner with bounded memory (issue 17): texts are streamed, never held all at once.

Row key rk = the row's position in the scan of the input (the same order on every pass; pass 2
checks the ids). Passes:
1. scan in `local.batch_rows` batches -> `Annotator` -> the small per-row columns (keys, scope,
   survivor sort key, content hash: kept in memory as Arrow) + signatures and band keys spilled to
   one Parquet file, one column per band / signature position (no texts);
2. exact groups and survivors (Arrow sorts); LSH edges one band column at a time; the signature
   check one group of signature columns at a time; exact Jaccard in chunks of edges whose
   endpoints hold at most `local.verify_rows` texts, fetched by one scan of text + lang per chunk;
   connected components on int arrays;
3. a second scan writes kept (by lang) / rejected with the results joined by rk.
Memory grows with the number of documents (~ a few hundred bytes each), not with their text.
Same edges, components and survivor order as `local.dedup_meta` and the Spark runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dataproc.dedup.annotate import Annotator
from dataproc.dedup.components import bucket_edges_np, component_roots
from dataproc.dedup.config import DedupConfig
from dataproc.dedup.lsh import min_matches
from dataproc.dedup.minhash import jaccard_pairs
from q3.engine.io import scan_corpus
from q3.log import get_logger, timed

log = get_logger("dedup")

ROW_COLS = ["rk", "id", "url", "source", "lang", "scope", "neg_score", "nh", "n_bytes"]
ORDER = [("neg_score", "ascending"), ("id", "ascending"), ("url", "ascending"),
         ("source", "ascending"), ("rk", "ascending")]     # survivor order: best score, smallest id
REASONS = np.array([None, "exact_duplicate", "near_duplicate"], dtype=object)
BYTES_PER_DOC = 400          # per-document arrays (ints, sort indices, results) besides its strings: an estimate


def scan(data: ds.Dataset, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The input in row order, conformed to `schema` (the engine's bounded streaming read)."""
    return scan_corpus(data, batch_rows, schema=schema)


def check_fits(data: ds.Dataset, cfg: DedupConfig) -> int:
    """Row count; a one-line error suggesting runner=spark when the per-document state would not fit."""
    import psutil

    from q3.config import ConfigError

    n = data.count_rows()
    per_doc, text = BYTES_PER_DOC, 2048
    cols = [c for c in ("id", "url", "source", "lang", "text") if c in data.schema.names]
    if n and cols:                       # string bytes per row, from the first rows
        t = data.head(min(n, 2_000), columns=cols)
        avg = {c: (pc.sum(pc.binary_length(pc.fill_null(t.column(c).cast(pa.string()), ""))).as_py() or 0)
               // max(1, t.num_rows) for c in cols}
        per_doc += 2 * sum(v for c, v in avg.items() if c != "text")     # held twice (rows + result ids)
        text = avg.get("text", text)
    limit = cfg.local.max_memory_gib
    if limit is None:
        limit = 0.8 * psutil.virtual_memory().available / 2**30
    # texts in flight: a few input batches, and one exact-Jaccard chunk as Python str + shingle hashes
    # (~10 KB per 1.9 KB text on the dedup_scale corpus, bench/RESULTS.md "Issue 17")
    need = (n * per_doc + (4 * min(n, cfg.local.batch_rows) + 6 * min(n, cfg.local.verify_rows)) * text) / 2**30
    if need > limit:
        raise ConfigError(f"dedup runner=local: {n:,} documents need ~{need:.1f} GiB of memory, over the "
                          f"local limit of {limit:.2f} GiB (local.max_memory_gib); use runner=spark")
    return n


# --- pass 1: annotate, spill signatures and band keys ----------------------------------------

IN_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source", pa.string()),
                       ("lang", pa.string()), ("text", pa.string()),
                       ("quality", pa.struct([("score", pa.float32())]))])


def _inputs(b: pa.RecordBatch, rk0: int) -> pa.RecordBatch:
    score = pc.struct_field(b.column("quality"), "score")
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(rk0, rk0 + b.num_rows, dtype=np.int64)), b.column("id"), b.column("url"),
         b.column("source"), b.column("lang"), b.column("text"), score],
        names=["rk", "id", "url", "source", "lang", "text", "score"])


def _quality_type(data: ds.Dataset) -> pa.Schema:
    """IN_SCHEMA, but with the input's own quality struct when it has one (score read from it)."""
    if "quality" in data.schema.names:
        return IN_SCHEMA.set(IN_SCHEMA.get_field_index("quality"), data.schema.field("quality"))
    return IN_SCHEMA


def _spill_batch(metas: list[pa.RecordBatch], b: int, p: int) -> pa.Table:
    m = pa.Table.from_batches(metas).combine_chunks()
    n = m.num_rows
    bands = m.column("bands").chunk(0) if m.column("bands").num_chunks else pa.nulls(0, pa.list_(pa.int64()))
    has = pc.is_valid(bands).to_numpy(zero_copy_only=False)
    keys = np.zeros((n, b), np.int64)
    if has.any():
        keys[has] = np.asarray(pc.list_flatten(bands).to_numpy()).reshape(-1, b)
    sigs = np.asarray(pc.list_flatten(m.column("sig")).to_numpy()).reshape(n, p)
    cols = {"has": pa.array(has)}
    cols.update({f"b{j}": pa.array(keys[:, j]) for j in range(b)})
    cols.update({f"s{j}": pa.array(sigs[:, j]) for j in range(p)})
    return pa.table(cols)


def annotate_spill(data: ds.Dataset, cfg: DedupConfig, spill: Path) -> pa.Table:
    """Pass 1: the ROW_COLS table (in rk order); signatures and band keys go to `spill`."""
    ann = Annotator(cfg)
    parts: list[pa.RecordBatch] = []
    pending: list[pa.RecordBatch] = []
    writer = None
    rk0 = 0

    def flush() -> None:
        nonlocal writer, pending
        if not pending:
            return
        t = _spill_batch(pending, ann.b, cfg.minhash.num_perm)
        if writer is None:
            writer = pq.ParquetWriter(str(spill), t.schema, compression="none", use_dictionary=False)
        writer.write_table(t)
        pending = []

    for batch in scan(data, _quality_type(data), cfg.local.batch_rows):
        inp = _inputs(batch, rk0)
        rk0 += batch.num_rows
        for sub in pa.Table.from_batches([inp]).to_batches(max_chunksize=cfg.batch_size):
            m = ann(sub)
            parts.append(m.select(ROW_COLS))
            if cfg.minhash.enabled:
                pending.append(m.select(["sig", "bands"]))
        if sum(x.num_rows for x in pending) >= cfg.local.batch_rows:
            flush()
        log.info("dedup: %d documents annotated", rk0)
    flush()
    if writer is not None:
        writer.close()
    if not parts:
        from dataproc.dedup.annotate import META_SCHEMA
        return META_SCHEMA.empty_table().select(ROW_COLS)
    return pa.Table.from_batches(parts).combine_chunks()


# --- pass 2: groups, edges, components, survivors --------------------------------------------


def _first_of_groups(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """Index (into the sorted order) of the first row of each row's group of equal keys."""
    n = len(sorted_keys[0])
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = np.zeros(n - 1, dtype=bool)
        for k in sorted_keys:
            new[1:] |= k[1:] != k[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def exact_reps(rows: pa.Table, cfg: DedupConfig) -> np.ndarray:
    """rk -> rk of the best row with the same (scope, content hash)."""
    n = rows.num_rows
    if not cfg.exact.enabled or n == 0:
        return np.arange(n, dtype=np.int64)
    scope = pc.dictionary_encode(rows.column("scope")).combine_chunks().indices.to_numpy(zero_copy_only=False)
    t = rows.select(["neg_score", "id", "url", "source", "rk", "nh"]).append_column("sc", pa.array(scope))
    order = pc.sort_indices(t, sort_keys=[("sc", "ascending"), ("nh", "ascending"), *ORDER]).to_numpy()
    nh = rows.column("nh").to_numpy()
    first = _first_of_groups([scope[order], nh[order]])
    rep = np.empty(n, np.int64)
    rep[order] = order[first]                         # rk == position
    return rep


def _verify_signatures(edges: np.ndarray, pf: pq.ParquetFile, p: int, need: int) -> np.ndarray:
    matches = np.zeros(len(edges), np.int32)
    for j0 in range(0, p, 16):                       # 16 signature columns (4 B x docs each) at a time
        t = pf.read(columns=[f"s{j}" for j in range(j0, min(p, j0 + 16))])
        for c in t.columns:
            s = c.to_numpy()
            matches += s[edges[:, 0]] == s[edges[:, 1]]
    return edges[matches >= need]


def _texts_of(data: ds.Dataset, nodes: np.ndarray, batch_rows: int) -> tuple[list, list]:
    """Texts and langs of the sorted row keys `nodes`, by one scan of the text + lang columns."""
    texts, langs = [], []
    r0 = 0
    schema = pa.schema([("text", pa.string()), ("lang", pa.string())])
    for b in scan(data, schema, batch_rows):
        lo, hi = np.searchsorted(nodes, [r0, r0 + b.num_rows])
        if hi > lo:
            idx = pa.array(nodes[lo:hi] - r0)
            texts.extend(b.column("text").take(idx).to_pylist())
            langs.extend(b.column("lang").take(idx).to_pylist())
        r0 += b.num_rows
        if hi == len(nodes):
            break
    if len(texts) != len(nodes):
        raise RuntimeError("dedup: the input changed while it was read (row keys unstable)")
    return texts, langs


def _verify_exact(edges: np.ndarray, data: ds.Dataset, cfg: DedupConfig) -> np.ndarray:
    """Edges whose true Jaccard >= threshold (as `components.exact_edge_filter`), in chunks of edges
    whose endpoints hold at most local.verify_rows texts: one text scan per chunk."""
    mh, limit = cfg.minhash, cfg.local.verify_rows
    e = edges[np.lexsort((edges[:, 0], edges[:, 1]))]            # by bucket root: shared endpoints
    new_root = np.ones(len(e), dtype=bool)
    new_root[1:] = e[1:, 1] != e[:-1, 1]
    chunk = (np.cumsum(1 + new_root) - 1) // max(1, limit - 1)  # <= limit endpoints per chunk
    kept = []
    bounds = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1], True])
    for k, (a, z) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        part = e[a:z]
        nodes = np.unique(part)
        with timed(log, f"dedup: exact Jaccard, chunk {k + 1}/{len(bounds) - 1} ({len(part)} edges)"):
            texts, langs = _texts_of(data, nodes, cfg.local.batch_rows)
            j = jaccard_pairs(texts, langs, np.searchsorted(nodes, part[:, 0]),
                              np.searchsorted(nodes, part[:, 1]), mh)
            del texts, langs
        kept.append(part[j >= mh.threshold - 1e-12])
    return np.concatenate(kept) if kept else edges[:0]


def lsh_edges(rows: pa.Table, rep: np.ndarray, spill: Path, data: ds.Dataset, cfg: DedupConfig) -> np.ndarray:
    """Verified candidate edges (u, v) among exact survivors, one band column at a time."""
    n = rows.num_rows
    pf = pq.ParquetFile(str(spill))
    has = pf.read(columns=["has"]).column(0).to_numpy() & (rep == np.arange(n))
    idx = np.flatnonzero(has)
    if len(idx) == 0:
        return np.empty((0, 2), np.int64)
    sc = pc.dictionary_encode(rows.column("scope")).combine_chunks().indices.to_numpy(zero_copy_only=False)[idx]
    b = sum(1 for name in pf.schema_arrow.names if name.startswith("b"))
    codes = np.empty(0, np.int64)                    # edge u * n + v, unique over the bands
    with timed(log, "dedup: candidate pairs (LSH buckets, one band at a time)"):
        for j in range(b):
            keys = pf.read(columns=[f"b{j}"]).column(0).to_numpy()[idx]
            e = bucket_edges_np(idx, sc, keys[:, None])
            codes = np.union1d(codes, e[:, 0] * n + e[:, 1])
    edges = np.stack([codes // n, codes % n], axis=1)
    mh = cfg.minhash
    if mh.verify == "none" or not len(edges):
        return edges
    log.info("dedup: %d candidate edges", len(edges))
    margin = mh.prefilter_margin if mh.verify == "exact" else 0.0
    with timed(log, "dedup: signature check"):
        edges = _verify_signatures(edges, pf, mh.num_perm, min_matches(mh.threshold - margin, mh.num_perm))
    if mh.verify == "exact" and len(edges):
        log.info("dedup: %d edges to check by exact Jaccard", len(edges))
        edges = _verify_exact(edges, data, cfg)
    return edges


class Results:
    """Per-row results in rk order: survivor id, cluster size, reason code (0 kept, 1 exact, 2 near)."""

    def __init__(self, dup_cluster: pa.Array, size: np.ndarray, reason: np.ndarray):
        self.dup_cluster, self.size, self.reason = dup_cluster, size, reason


def survivors(rows: pa.Table, rep: np.ndarray, comp: np.ndarray) -> Results:
    n = rows.num_rows
    t = rows.select(["neg_score", "id", "url", "source", "rk"]).append_column("comp", pa.array(comp))
    order = pc.sort_indices(t, sort_keys=[("comp", "ascending"), *ORDER]).to_numpy()
    first = _first_of_groups([comp[order]])
    surv = np.empty(n, np.int64)
    surv[order] = order[first]
    size = np.bincount(comp, minlength=n)[comp].astype(np.int64)
    rk = np.arange(n)
    reason = np.where(rk == surv, 0, np.where(rk != rep, 1, 2)).astype(np.int8)
    return Results(rows.column("id").combine_chunks().take(pa.array(surv)), size, reason)


def dedup_streamed(data: ds.Dataset, cfg: DedupConfig, work: Path) -> tuple[pa.Table, Results]:
    """Passes 1 and 2: (ROW_COLS table, per-row results)."""
    work.mkdir(parents=True, exist_ok=True)
    spill = work / "sig_bands.parquet"
    with timed(log, "dedup: hashes, MinHash signatures and band keys (streamed)"):
        rows = annotate_spill(data, cfg, spill)
    n = rows.num_rows
    rep = exact_reps(rows, cfg)
    comp = rep
    if cfg.minhash.enabled and n:
        edges = lsh_edges(rows, rep, spill, data, cfg)
        with timed(log, "dedup: connected components"):
            root = component_roots(n, edges)
        comp = root[rep]
    spill.unlink(missing_ok=True)
    with timed(log, "dedup: survivors"):
        return rows, survivors(rows, rep, comp)


def stats_frame(rows: pa.Table, res: Results):
    """The DataFrame `stats.compute_stats` reads (dup_cluster as codes: same groups, less memory)."""
    import pandas as pd

    dc = pc.dictionary_encode(res.dup_cluster).indices
    return pd.DataFrame({
        "lang": rows.column("lang").to_pandas(),
        "n_bytes": rows.column("n_bytes").to_numpy(),
        "dup_cluster": pc.cast(dc, pa.float64()).to_numpy(zero_copy_only=False),
        "dup_cluster_size": res.size,
        "reason": REASONS[res.reason],
    })
