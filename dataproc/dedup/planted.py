"""Planted near-duplicates for tests and benchmarks: mutate real documents, measure truth.

`mutate` applies word (or, for unsegmented scripts, character) edits, insertions, a block reorder
and truncation at a random intensity; `plant` adds one mutated copy per chosen base document;
`true_pairs` computes the exact Jaccard of every pair's shingle sets (sparse matrix product: brute
force, no sketching) and returns the pairs at or above a threshold.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from dataproc.dedup.config import MinHashConfig
from dataproc.dedup.minhash import is_char_lang, shingles


def mutate(text: str, lang: str | None, rng: random.Random, strength: float) -> str:
    """A near-duplicate of `text`: `strength` in [0, 1] scales every kind of edit."""
    char_mode = is_char_lang(lang)
    units = list(text) if char_mode else text.split(" ")
    if len(units) < 4:
        return text + (" extra" if not char_mode else "追加")
    pool = units[:]
    n = len(units)
    # word/char edits: replace ~strength*4% of units with another unit of the document
    for _ in range(int(n * 0.04 * strength) + (1 if strength > 0 else 0)):
        units[rng.randrange(len(units))] = rng.choice(pool)
    # insertions
    for _ in range(int(n * 0.02 * strength)):
        units.insert(rng.randrange(len(units) + 1), rng.choice(pool))
    # reorder: move one block of up to 10% elsewhere
    if strength > 0.3 and len(units) > 20:
        size = max(2, int(len(units) * 0.1 * strength))
        s = rng.randrange(0, len(units) - size)
        block = units[s:s + size]
        del units[s:s + size]
        t = rng.randrange(0, len(units) + 1)
        units[t:t] = block
    # truncation: drop up to 25% of the tail
    if rng.random() < 0.5:
        cut = int(len(units) * (1 - 0.25 * strength * rng.random()))
        units = units[:max(4, cut)]
    return ("" if char_mode else " ").join(units)


def plant(docs: Sequence[dict], rng: random.Random, frac: float = 0.5,
          max_strength: float = 1.0) -> list[dict]:
    """docs + one mutated copy of a `frac` share of them (fields copied, url/id marked)."""
    out = [dict(d) for d in docs]
    for i, d in enumerate(docs):
        if rng.random() < frac:
            c = dict(d)
            c["text"] = mutate(d["text"], d.get("lang"), rng, rng.random() * max_strength)
            c["url"] = f"{d.get('url') or ''}#mut{i}"
            out.append(c)
    return out


def true_pairs(texts: Sequence[str], langs: Sequence[str | None], scopes: Sequence[str],
               cfg: MinHashConfig, threshold: float) -> tuple[set[tuple[int, int]], np.ndarray]:
    """All pairs (i < j, same scope) with exact Jaccard >= threshold; also each doc's shingle count."""
    from scipy import sparse

    vocab: dict[str, int] = {}
    rows, cols = [], []
    sizes = np.zeros(len(texts), np.int64)
    for i, (t, lg) in enumerate(zip(texts, langs, strict=True)):
        sh = shingles(t, lg, cfg)
        sizes[i] = len(sh)
        for s in sh:
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    x = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), len(vocab)))
    inter = (x @ x.T).tocoo()
    pairs = set()
    for i, j, v in zip(inter.row, inter.col, inter.data, strict=True):
        if i < j and scopes[i] == scopes[j]:
            union = sizes[i] + sizes[j] - v
            if union > 0 and v / union >= threshold - 1e-12:
                pairs.add((int(i), int(j)))
    return pairs, sizes


def cluster_pairs(labels: Sequence) -> set[tuple[int, int]]:
    """All pairs (i < j) sharing a cluster label."""
    groups: dict = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    out = set()
    for members in groups.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                out.add((members[a], members[b]))
    return out


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


def docs_table(docs: Sequence[dict]):
    """DOC_SCHEMA table from dicts with text/lang (+url/source); id = content_id(text)."""
    import pyarrow as pa

    from q3.schemas import DOC_SCHEMA, content_id

    n = len(docs)
    cols = {
        "id": pa.array([content_id(d["text"]) for d in docs], pa.string()),
        "text": pa.array([d["text"] for d in docs], pa.string()),
        "source": pa.array([d.get("source") or "sample" for d in docs], pa.string()),
        "url": pa.array([d.get("url") or "" for d in docs], pa.string()),
        "lang": pa.array([d.get("lang") for d in docs], pa.string()),
        "n_chars": pa.array([len(d["text"]) for d in docs], pa.int64()),
    }
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in DOC_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=DOC_SCHEMA)


def evaluate(docs: Sequence[dict], clusters: Sequence, cfg, threshold: float | None = None) -> dict:
    """Precision/recall of same-cluster pairs vs brute-force Jaccard >= threshold (per scope)."""
    from dataproc.dedup.annotate import scope_values

    threshold = cfg.minhash.threshold if threshold is None else threshold
    texts = [d["text"] for d in docs]
    langs = [d.get("lang") for d in docs]
    scopes = scope_values(cfg, langs, [d.get("source") for d in docs])
    truth, _ = true_pairs(texts, langs, scopes, cfg.minhash, threshold)
    found = cluster_pairs(clusters)
    p, r = precision_recall(found, truth)
    return {"docs": len(docs), "true_pairs": len(truth), "found_pairs": len(found),
            "true_positives": len(found & truth), "precision": p, "recall": r}


def sample_path() -> str:
    """docs.jsonl of the project's sample corpus, built (or reused from Q3_DATA) by `dataproc.sample`."""
    from dataproc.sample import SampleConfig, build_sample

    return str(build_sample(SampleConfig()) / "docs.jsonl")


def sample_docs(path: str, langs: Sequence[str] | None = None, limit_per_lang: int | None = None,
                max_chars: int | None = None) -> list[dict]:
    """Real documents from a sample docs.jsonl (fields text/url/source/lang_hint), lang = lang_hint."""
    import json

    out: list[dict] = []
    per: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            lang = d.get("lang_hint") or d.get("lang")
            if langs is not None and lang not in langs:
                continue
            if limit_per_lang is not None and per.get(lang, 0) >= limit_per_lang:
                continue
            text = d["text"] if max_chars is None else d["text"][:max_chars]
            if not text.strip():
                continue
            per[lang] = per.get(lang, 0) + 1
            out.append({"text": text, "lang": lang, "url": d.get("url") or "",
                        "source": d.get("source") or "sample"})
    return out
