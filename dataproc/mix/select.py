"""Dataset selections: predicates over a batch of documents -> boolean masks, and length buckets.

A "dataset" (one `.bin`/`.idx` pair) is a named `Selection`. Document-level predicates
(`doc_mask`) run before tokenisation, token-length predicates (`length_ok`) after, on each
document or chunk. `expand_stage` turns a stage config into the token datasets it needs,
splitting every dataset per length bucket for stages that have buckets (S3).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.mix.config import Selection, StageConfig


@dataclass(frozen=True)
class TokenDataset:
    """A token dataset to write: a name and its selection (one .bin/.idx)."""

    name: str
    select: Selection


def _expand_patterns(patterns: list[str], groups: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        if p.startswith("@"):
            if p[1:] not in groups:
                raise ValueError(f"unknown language group {p!r}; defined: {sorted(groups)}")
            out.extend(groups[p[1:]])
        else:
            out.append(p)
    return out


def _glob_mask(col: pa.Array, include: list[str] | None, exclude: list[str]) -> np.ndarray:
    """Match each distinct value once (columns like lang/source have few distinct values)."""
    values = col.to_pylist()
    cache: dict[str | None, bool] = {}
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        hit = cache.get(v)
        if hit is None:
            s = v or ""
            hit = (include is None or any(fnmatch.fnmatchcase(s, p) for p in include)) and \
                not any(fnmatch.fnmatchcase(s, p) for p in exclude)
            cache[v] = hit
        out[i] = hit
    return out


def _field(batch: pa.RecordBatch, struct: str, field: str) -> pa.Array | None:
    if struct not in batch.schema.names:
        return None
    col = batch.column(struct)
    if not pa.types.is_struct(col.type) or col.type.get_field_index(field) < 0:
        return None
    # a null struct makes its fields null too
    return pc.struct_field(col, field)


def _cmp(arr: pa.Array | None, n: int, fn) -> np.ndarray:
    if arr is None:
        return np.zeros(n, dtype=bool)             # missing column: predicate cannot hold
    return fn(arr).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def doc_mask(batch: pa.RecordBatch, sel: Selection, groups: dict[str, list[str]]) -> np.ndarray:
    """True where a document passes every document-level predicate of `sel`."""
    n = batch.num_rows
    mask = np.ones(n, dtype=bool)
    if sel.langs is not None or sel.exclude_langs:
        include = _expand_patterns(sel.langs, groups) if sel.langs is not None else None
        mask &= _glob_mask(batch.column("lang"), include, _expand_patterns(sel.exclude_langs, groups))
    if sel.sources is not None or sel.exclude_sources:
        mask &= _glob_mask(batch.column("source"), sel.sources, sel.exclude_sources)
    if sel.domains is not None:
        mask &= _cmp(_field(batch, "labels", "domain"), n, lambda a: pc.is_in(a, pa.array(sel.domains)))
    for value, struct, field in ((sel.min_quality, "quality", "score"),
                                 (sel.min_quality_label, "labels", "quality_score"),
                                 (sel.min_edu, "labels", "edu_score"),
                                 (sel.min_reasoning, "labels", "reasoning_score")):
        if value is not None:
            mask &= _cmp(_field(batch, struct, field), n, lambda a, v=value: pc.greater_equal(a, v))
    for value, field in ((sel.has_code, "has_code"), (sel.has_math, "has_math")):
        if value is not None:
            mask &= _cmp(_field(batch, "labels", field), n, lambda a, v=value: pc.equal(a, v))
    if sel.safety is not None:
        mask &= _cmp(_field(batch, "labels", "safety"), n, lambda a: pc.is_in(a, pa.array(sel.safety)))
    if sel.min_chars is not None or sel.max_chars is not None:
        n_chars = pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
        if sel.min_chars is not None:
            mask &= n_chars >= sel.min_chars
        if sel.max_chars is not None:
            mask &= n_chars <= sel.max_chars
    return mask


def length_ok(n_tokens: int, sel: Selection) -> bool:
    """Token-length bucket predicate (EOD included) on a document or chunk."""
    return (sel.min_tokens is None or n_tokens >= sel.min_tokens) and \
        (sel.max_tokens is None or n_tokens <= sel.max_tokens)


def chunk_lengths(n_tokens: int, chunk: int | None) -> list[int]:
    """Split a document of n_tokens into pieces of at most `chunk` tokens (the last is shorter)."""
    if not chunk or n_tokens <= chunk:
        return [n_tokens]
    full, rest = divmod(n_tokens, chunk)
    return [chunk] * full + ([rest] if rest else [])


def bucket_name(name: str, lo: int, hi: int) -> str:
    return f"{name}.L{lo}-{hi}"


def expand_stage(stage: StageConfig) -> list[tuple[TokenDataset, float]]:
    """Token datasets of a stage with their manifest weights (normalised to sum 1).

    With length buckets, dataset d becomes one derived dataset per bucket b, selecting the chunks
    (documents cut at the top bucket's max) whose length is in b; its weight is
    `fraction_b * w_d / sum(w)`, so bucket b gets `fraction_b` of the blended samples.
    """
    total = sum(d.weight for d in stage.datasets)
    out: list[tuple[TokenDataset, float]] = []
    if not stage.length_buckets:
        for d in stage.datasets:
            out.append((TokenDataset(d.name, d.select), d.weight / total))
        return out
    top = max(b.max_tokens for b in stage.length_buckets)
    for d in stage.datasets:
        for b in stage.length_buckets:
            sel = d.select.model_copy(update={"min_tokens": b.min_tokens, "max_tokens": b.max_tokens,
                                              "chunk_tokens": top})
            out.append((TokenDataset(bucket_name(d.name, b.min_tokens, b.max_tokens), sel),
                        b.fraction * d.weight / total))
    return out


def token_datasets(stages: list[StageConfig]) -> list[TokenDataset]:
    """The union of the stages' token datasets (a name shared by stages must select the same)."""
    seen: dict[str, TokenDataset] = {}
    for st in stages:
        for td, _ in expand_stage(st):
            prev = seen.get(td.name)
            if prev is not None and prev.select != td.select:
                raise ValueError(f"dataset {td.name!r} is defined differently in two stages; rename one")
            seen[td.name] = td
    return [seen[k] for k in sorted(seen)]
