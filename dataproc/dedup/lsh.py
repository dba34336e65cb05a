"""LSH banding: bands x rows from a Jaccard threshold, and band bucket keys.

`optimal_params` is datasketch's `_optimal_param`: choose (b, r) with b*r <= num_perm that
minimises the weighted integral of the false positive probability (1-(1-s^r)^b over s < t) and the
false negative probability ((1-s^r)^b over s > t). FineWeb's 14x8 is `preset: fineweb`.

A band key is a 64-bit hash of the band's r signature values (collision odds ~2^-64 per pair);
documents sharing a key in any band are candidates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.integrate import quad

from dataproc.dedup.config import MinHashConfig
from dataproc.dedup.minhash import _fmix64


def _fp(t: float, b: int, r: int) -> float:
    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, t)[0]


def _fn(t: float, b: int, r: int) -> float:
    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), t, 1.0)[0]


@lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5,
                   fn_weight: float = 0.5) -> tuple[int, int]:
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = _fp(threshold, b, r) * fp_weight + _fn(threshold, b, r) * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


def bands_rows(cfg: MinHashConfig) -> tuple[int, int]:
    if cfg.bands is not None and cfg.rows is not None:
        return cfg.bands, cfg.rows
    return optimal_params(cfg.threshold, cfg.num_perm, cfg.fp_weight, cfg.fn_weight)


def collision_probability(s: float, b: int, r: int) -> float:
    """P(two documents with Jaccard s share at least one band)."""
    return 1 - (1 - s ** r) ** b


def band_keys(sigs: np.ndarray, b: int, r: int) -> np.ndarray:
    """(n, b) int64 bucket keys: a 64-bit hash of each band's r values (band index mixed in)."""
    n = sigs.shape[0]
    out = np.empty((n, b), dtype=np.uint64)
    s64 = sigs.astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(b):
            h = np.full(n, np.uint64(j + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
            for c in range(j * r, (j + 1) * r):
                h = _fmix64(h ^ s64[:, c]) * np.uint64(0x100000001B3)
            out[:, j] = _fmix64(h)
    return out.view(np.int64)


def min_matches(threshold: float, num_perm: int) -> int:
    """Equal signature positions needed for an estimated Jaccard >= threshold (integer rule,
    so Spark and numpy agree exactly)."""
    import math
    return int(math.ceil(threshold * num_perm - 1e-9))
