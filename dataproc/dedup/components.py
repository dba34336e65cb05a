"""Candidate edges from LSH buckets and their connected components, in Spark and locally.

Edges: every document of a (scope, band, bucket) group is linked to the group's smallest row key,
so a bucket of k members gives k-1 edges (a 10^5-member bucket costs 10^5 rows, not 10^10 pairs).
With `verify`, an edge survives only if the two signatures agree on >= min_matches positions
(estimated Jaccard >= threshold).

Spark runner: below `driver_max_edges` verified edges, `driver_components` computes the components
on the driver (scipy, from the materialised edges: two longs per edge). Above it,
`connected_components` runs the alternating large-star / small-star algorithm (Kiveris et al.,
"Connected Components in MapReduce and Beyond", 2014) on an edge DataFrame; every round is
materialised to Parquet (lineage stays short, memory bounded); nothing is collected to the driver.
It stops as soon as the edges form stars whose centre is the component's smallest node.

Local: the same edges in numpy, then scipy's sparse connected_components. Both give the same
partition of the nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from q3.log import get_logger

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("dedup")


def exact_edge_filter(batch, cfg_minhash):
    """Arrow batch (u, v, tu, lu, tv, lv) -> (u, v) of the edges with true Jaccard >= threshold.
    Shared by both runners (Spark: mapInArrow over edges joined with their texts). Each document's
    sorted shingle-hash set is computed once per batch (a node is often in several edges) and the
    pairs are compared by a compiled merge count, not Python sets."""
    import pyarrow as pa

    from dataproc.dedup.minhash import jaccard_pairs

    u = batch.column("u").to_numpy(zero_copy_only=False).astype(np.int64)
    v = batch.column("v").to_numpy(zero_copy_only=False).astype(np.int64)
    nodes, first, inv = np.unique(np.concatenate([u, v]), return_index=True, return_inverse=True)
    texts = pa.concat_arrays([batch.column("tu"), batch.column("tv")]).take(pa.array(first)).to_pylist()
    langs = pa.concat_arrays([batch.column("lu"), batch.column("lv")]).take(pa.array(first)).to_pylist()
    j = jaccard_pairs(texts, langs, inv[:len(u)], inv[len(u):], cfg_minhash)
    keep = j >= cfg_minhash.threshold - 1e-12
    return pa.RecordBatch.from_arrays([pa.array(u[keep], pa.int64()), pa.array(v[keep], pa.int64())],
                                      names=["u", "v"])


# --- local (numpy) --------------------------------------------------------------------------


def bucket_edges_np(rk: np.ndarray, scope: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(m, 2) int64 edges (node, bucket min node) over all bands. `scope` are int codes."""
    out = []
    for j in range(keys.shape[1]):
        key = keys[:, j]
        order = np.lexsort((rk, key, scope))
        s_sc, s_key, s_rk = scope[order], key[order], rk[order]
        new = np.ones(len(order), dtype=bool)
        new[1:] = (s_sc[1:] != s_sc[:-1]) | (s_key[1:] != s_key[:-1])
        first = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))
        root = s_rk[first]
        sel = ~new
        out.append(np.stack([s_rk[sel], root[sel]], axis=1))
    if not out:
        return np.empty((0, 2), np.int64)
    e = np.concatenate(out)
    return np.unique(e, axis=0) if len(e) else e.reshape(0, 2)


def verify_edges_np(edges: np.ndarray, sig_of: dict[int, int], sigs: np.ndarray, need: int) -> np.ndarray:
    if len(edges) == 0:
        return edges
    iu = np.array([sig_of[int(u)] for u in edges[:, 0]])
    iv = np.array([sig_of[int(v)] for v in edges[:, 1]])
    matches = (sigs[iu] == sigs[iv]).sum(axis=1)
    return edges[matches >= need]


def local_components(nodes: np.ndarray, edges: np.ndarray) -> dict[int, int]:
    """node -> smallest node of its component, by scipy's connected_components on a sparse graph
    (replaced a pure-Python union-find: same partition, bench/RESULTS.md "local connected components")."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    ids = np.unique(np.asarray(nodes, np.int64))          # sorted: index order is node order
    if len(ids) == 0:
        return {}
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    u, v = np.searchsorted(ids, e[:, 0]), np.searchsorted(ids, e[:, 1])
    if len(e) and (u.max() >= len(ids) or v.max() >= len(ids) or (ids[u] != e[:, 0]).any()
                   or (ids[v] != e[:, 1]).any()):
        raise ValueError("an edge names a node that is not in `nodes`")
    graph = coo_matrix((np.ones(len(e), np.int8), (u, v)), shape=(len(ids), len(ids))).tocsr()
    _, labels = cc(graph, directed=False)
    _, first = np.unique(labels, return_index=True)        # first (smallest) node index of each label
    return dict(zip(ids.tolist(), ids[first[labels]].tolist(), strict=True))


def component_roots(n: int, edges: np.ndarray) -> np.ndarray:
    """Nodes 0..n-1 -> smallest node of their component, as an int64 array (the bounded-memory local
    runner: no dict of n Python ints; same partition and roots as `local_components`)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    e = np.asarray(edges, np.int64).reshape(-1, 2)
    if n == 0:
        return np.empty(0, np.int64)
    graph = coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    _, labels = cc(graph, directed=False)
    _, first = np.unique(labels, return_index=True)        # smallest node of each label
    return first[labels].astype(np.int64)


# --- Spark --------------------------------------------------------------------------------


# Bucket keys per shuffle partition of the candidate-pair pass: its Arrow hash join holds one
# partition (three longs a key), so more keys than this get more partitions.
KEYS_PER_PARTITION = 4_000_000


def bucket_root_edges(batches) -> pa.Table:
    """Arrow (rk, scope, band, bucket) rows, all the rows of each key included -> (u, v): every
    member of a key with >= 2 members linked to the key's smallest row key (the same edges as
    `local_edges`). Hash aggregate + hash join: no sort."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = pa.Table.from_batches(batches) if isinstance(batches, list) else batches
    if not t.num_rows:
        return pa.table({"u": pa.array([], pa.int64()), "v": pa.array([], pa.int64())})
    # scope as a dictionary index: null is a group of its own there, as in Spark's partitionBy
    # (a null string key would never match in the join)
    sc = pc.dictionary_encode(t.column("scope").combine_chunks(), null_encoding="encode")
    t = pa.table({"rk": t.column("rk"), "s": sc.indices,
                  "band": t.column("band"), "bucket": t.column("bucket")})
    keys = ["s", "band", "bucket"]
    g = t.group_by(keys, use_threads=False).aggregate([("rk", "min"), ("rk", "count")])
    g = g.filter(pc.greater_equal(g.column("rk_count"), 2)).select([*keys, "rk_min"])
    j = t.join(g, keys, join_type="inner", use_threads=False)
    j = j.filter(pc.not_equal(j.column("rk"), j.column("rk_min")))
    return pa.table({"u": j.column("rk"), "v": j.column("rk_min")})


def _bucket_parts(meta, num_bands: int) -> int:
    """Shuffle partitions for the exploded band keys: the session's default, more when the
    input's footers say a partition would hold over `KEYS_PER_PARTITION` keys."""
    from urllib.parse import unquote, urlparse

    import pyarrow.parquet as pq

    spark = meta.sparkSession
    parts = int(spark.conf.get("spark.sql.shuffle.partitions"))
    try:
        rows = sum(pq.read_metadata(unquote(urlparse(f).path)).num_rows for f in meta.inputFiles())
    except (OSError, ValueError):          # not local files: the default
        return parts
    return max(parts, -(-rows * num_bands // KEYS_PER_PARTITION))


def _root_edges_batches(it):
    """mapInArrow body: a whole partition's keys in, its edges out (a key never spans partitions)."""
    yield from bucket_root_edges(list(it)).to_batches(max_chunksize=1 << 20)


def bucket_edges_spark(meta, cfg_minhash, need: int | None, texts=None):
    """meta: DataFrame(rk, scope, sig, bands) of exact survivors -> DataFrame(u, v) edges.
    `need`: signature positions that must agree; `texts` (rk, text, lang): check true Jaccard."""
    from pyspark.sql import functions as F

    ex = (meta.where(F.col("bands").isNotNull())
              .select("rk", "scope", F.posexplode("bands").alias("band", "bucket")))
    # Hash-partition the exploded keys, then per partition an Arrow hash aggregate (root = the
    # key's smallest row key) and hash join: one shuffle and no sort of the ~num_bands x docs
    # rows (a window over (scope, band, bucket) sorted them all).
    edges = (ex.repartition(_bucket_parts(meta, cfg_minhash.bands or 32), "scope", "band", "bucket")
               .mapInArrow(_root_edges_batches, "u long, v long"))
    if need is not None or texts is not None:
        edges = edges.distinct()      # verify each pair once; unverified, repeats are harmless
    if need is not None:
        s = meta.select("rk", "sig")
        edges = (edges.join(s.withColumnRenamed("rk", "u").withColumnRenamed("sig", "su"), "u")
                      .join(s.withColumnRenamed("rk", "v").withColumnRenamed("sig", "sv"), "v")
                      .where(F.expr("size(filter(arrays_zip(su, sv), x -> x.su = x.sv))") >= need)
                      .select("u", "v"))
    if texts is not None:
        cfg_json = cfg_minhash.model_dump_json()

        def fn(it):
            from dataproc.dedup.config import MinHashConfig
            c = MinHashConfig.model_validate_json(cfg_json)
            for b in it:
                yield exact_edge_filter(b, c)

        t = texts.select("rk", "text", "lang")
        edges = (edges.join(t.select(F.col("rk").alias("u"), F.col("text").alias("tu"), F.col("lang").alias("lu")), "u")
                      .join(t.select(F.col("rk").alias("v"), F.col("text").alias("tv"), F.col("lang").alias("lv")), "v")
                      .select("u", "v", "tu", "lu", "tv", "lv")
                      .mapInArrow(fn, "u long, v long"))
    return edges


def driver_components(edges: pa.Table) -> pa.Table:
    """Arrow (u, v) edges -> Arrow (node, comp), comp = smallest node of the component, for every
    node in an edge. The Spark runner's path below `driver_max_edges`: the edges are two longs each
    (10^7 edges: 160 MB), and one scipy call replaces ~5 Spark rounds of 3 jobs each."""
    import pyarrow as pa
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    u = edges.column("u").to_numpy().astype(np.int64, copy=False)
    v = edges.column("v").to_numpy().astype(np.int64, copy=False)
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)    # sorted node ids
    n = len(nodes)
    if n == 0:
        return pa.table({"node": pa.array([], pa.int64()), "comp": pa.array([], pa.int64())})
    graph = coo_matrix((np.ones(len(u), np.int8), (inv[:len(u)], inv[len(u):])), shape=(n, n)).tocsr()
    _, labels = cc(graph, directed=False)
    _, first = np.unique(labels, return_index=True)        # smallest node index of each label
    return pa.table({"node": pa.array(nodes), "comp": pa.array(nodes[first[labels]])})


def _materialise(df, path: str):
    df.write.mode("overwrite").parquet(path)
    return df.sparkSession.read.schema("u long, v long").parquet(path)     # known schema: no inference job


def _stars(e) -> tuple[bool, int]:
    """(every edge (u, v) has a centre v that is nobody's leaf, number of edges), in one job.

    Small-star leaves edges (u, v) with v < u, and every round keeps the components; so when no
    centre is also a leaf, each component is one star around its smallest node: converged."""
    from pyspark.sql import functions as F
    leaves = e.select(F.col("u").alias("x")).distinct().withColumn("leaf", F.lit(1))
    row = (e.join(leaves, e["v"] == leaves["x"], "left")
            .agg(F.count(F.lit(1)).alias("n"), F.count("leaf").alias("bad")).collect()[0])
    return int(row["bad"]) == 0, int(row["n"])


def connected_components(edges, workdir: str, max_rounds: int = 100):
    """edges: DataFrame(u, v) long -> DataFrame(node, comp), comp = smallest node of the
    component, for every node that appears in an edge (isolated nodes are their own component)."""
    from pyspark.sql import functions as F

    e = _materialise(edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
                          .where(F.col("u") != F.col("v")).distinct(), f"{workdir}/e0")
    done, n = _stars(e)
    log.info("connected components: %d verified edges", n)
    for i in range(1, max_rounds + 1):
        if done:
            break
        # large-star: each node u links its larger neighbours to min(neighbourhood + u)
        both = e.select("u", "v").union(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
        mins = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
        ls = (both.join(mins, "u").where(F.col("v") > F.col("u"))
                  .select(F.col("v").alias("u"), F.col("m").alias("v")).distinct())
        ls = _materialise(ls, f"{workdir}/ls{i}")
        # small-star: each node u links itself and its smaller neighbours to min(smaller ones)
        m2 = ls.groupBy("u").agg(F.min("v").alias("m"))
        ss = (ls.join(m2, "u").select(F.col("v").alias("u"), "m")
                .union(m2.select("u", "m"))
                .where(F.col("u") != F.col("m"))
                .select("u", F.col("m").alias("v")).distinct())
        e = _materialise(ss, f"{workdir}/ss{i}")
        done, n = _stars(e)
        log.info("connected components: round %d, %d edges%s", i, n, " (converged)" if done else "")
    if not done:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    nodes = e.select(F.col("u").alias("node"), F.col("v").alias("comp"))
    roots = e.select(F.col("v").alias("node"), F.col("v").alias("comp"))
    return nodes.union(roots).distinct()
