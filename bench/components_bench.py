"""Local connected components: the former pure-Python union-find vs scipy's connected_components.

    PYTHONPATH=$PWD python -m bench.components_bench [--nodes 200000 --edges 300000]

The graph is shaped like dedup's: many small clusters (edges to a bucket's smallest node), chains
and random noise edges. Checks the two partitions are identical, prints CPU seconds of each.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataproc.dedup.components import local_components


def union_find(nodes: np.ndarray, edges: np.ndarray) -> dict[int, int]:
    """The hand-written baseline (path halving, smaller root wins), as dedup used it before."""
    parent: dict[int, int] = {int(x): int(x) for x in nodes}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges.tolist():
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return {x: find(x) for x in parent}


def graph(n_nodes: int, n_edges: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    nodes = np.unique(rng.choice(np.arange(10 * n_nodes, dtype=np.int64), n_nodes, replace=False))
    u = rng.integers(0, n_nodes, n_edges)
    v = np.clip(u + rng.geometric(0.3, n_edges), 0, n_nodes - 1)     # mostly local: small clusters
    noise = rng.random(n_edges) < 0.05
    v[noise] = rng.integers(0, n_nodes, noise.sum())
    return nodes, np.stack([nodes[u], nodes[v]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200_000)
    ap.add_argument("--edges", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    nodes, edges = graph(a.nodes, a.edges)
    res, secs = {}, {}
    for name, fn in (("union-find (pure Python)", union_find), ("scipy connected_components", local_components)):
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.process_time()
            res[name] = fn(nodes, edges)
            best = min(best, time.process_time() - t0)
        secs[name] = best
    a_, b_ = res.values()
    assert a_ == b_, "partitions differ"
    n_comp = len(set(b_.values()))
    print(f"{a.nodes:,} nodes, {len(edges):,} edges, {n_comp:,} components (identical partitions)")
    for name, s in secs.items():
        print(f"| {name} | {s:.3f} s |")
    print(f"speed-up: {secs['union-find (pure Python)'] / secs['scipy connected_components']:.1f}x")


if __name__ == "__main__":
    main()
