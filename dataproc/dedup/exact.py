"""Exact dedup key: a 64-bit hash of the normalised content (case and whitespace folded).

Survivor of an exact group (and of a near-duplicate cluster): the best `quality.score`, then the
smallest `id` (then url, source: only identical rows can tie further). `order_key` is that order,
used by both runners so they pick the same survivor.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import numpy as np


def exact_normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_keys(texts: Sequence[str | None]) -> np.ndarray:
    """int64 hash per text of its normalised form (blake2b-64)."""
    out = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        d = hashlib.blake2b(exact_normalise(t or "").encode("utf-8", "surrogatepass"), digest_size=8).digest()
        out[i] = int.from_bytes(d, "little", signed=True)
    return out


def neg_score(score: float | None) -> float:
    """Sort key: lower is better. Missing/NaN scores rank last (as score -1)."""
    if score is None or score != score:
        return 1.0
    return -float(score)
