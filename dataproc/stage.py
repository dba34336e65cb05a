"""The stage contract: a stage is a callable over Arrow record batches.

    stage(batch: pa.RecordBatch) -> pa.RecordBatch

The output holds exactly the input rows, in the same order, with the columns of
`q3.schemas.STAGE_OUTPUT_SCHEMA`: a stage may rewrite columns (text, lang, quality, ...) and sets
`reason`/`stage`/`detail` on the rows it rejects (null reason = kept). Runners (local, Spark
`mapInArrow`) split kept from rejected, so kept + rejected = input holds by construction.

A stage object is built once per process (per Spark executor Python worker) from its config and
is then called on many batches: load models in `__init__` or lazily, never per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from q3.engine.schema import conform as _conform
from q3.schemas import STAGE_OUTPUT_SCHEMA


class Stage(Protocol):
    name: str

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


def conform(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """Cast/complete a batch to STAGE_OUTPUT_SCHEMA (missing columns become nulls)."""
    return _conform(batch, STAGE_OUTPUT_SCHEMA)


def reject(batch: pa.RecordBatch, mask: pa.Array, stage: str, reason: pa.Array | str,
           detail: pa.Array | str | None = None) -> pa.RecordBatch:
    """Mark rows where `mask` is true (and not already rejected) as rejected by `stage`."""
    mask = pc.fill_null(mask, False)
    fresh = pc.and_(mask, pc.is_null(batch.column("reason")))
    n = batch.num_rows

    def _arr(v: pa.Array | str | None) -> pa.Array:
        if v is None:
            return pa.nulls(n, pa.string())
        if isinstance(v, str):
            return pa.array([v] * n, pa.string())
        return v.cast(pa.string())

    new_reason = pc.if_else(fresh, _arr(reason), batch.column("reason"))
    new_stage = pc.if_else(fresh, pa.array([stage] * n, pa.string()), batch.column("stage"))
    new_detail = pc.if_else(fresh, _arr(detail), batch.column("detail"))
    return (batch.set_column(batch.schema.get_field_index("reason"), "reason", new_reason)
                 .set_column(batch.schema.get_field_index("stage"), "stage", new_stage)
                 .set_column(batch.schema.get_field_index("detail"), "detail", new_detail))


def chain(stages: Iterable[Callable[[pa.RecordBatch], pa.RecordBatch]]
          ) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """Compose stages: rows rejected by one stage are not shown to later stages."""
    stages = list(stages)

    def run(batch: pa.RecordBatch) -> pa.RecordBatch:
        out = conform(batch)
        for stage in stages:
            live = pc.is_null(out.column("reason"))
            if not pc.any(live).as_py():
                break
            if pc.all(live).as_py():
                out = _checked(stage, out)
                continue
            idx_live = pc.indices_nonzero(live)
            idx_dead = pc.indices_nonzero(pc.invert(live))
            processed = _checked(stage, out.take(idx_live))
            merged = pa.Table.from_batches([processed, out.take(idx_dead)])
            order = pc.sort_indices(pa.concat_arrays([idx_live, idx_dead]))
            out = merged.take(order).combine_chunks().to_batches()[0]
        return out

    return run


def _checked(stage: Callable[[pa.RecordBatch], pa.RecordBatch], batch: pa.RecordBatch) -> pa.RecordBatch:
    out = conform(stage(batch))
    if out.num_rows != batch.num_rows:
        name = getattr(stage, "name", repr(stage))
        raise RuntimeError(f"stage {name} returned {out.num_rows} rows for {batch.num_rows}: "
                           "a stage must return every input row (reject, never drop)")
    return out


def split(batch: pa.RecordBatch | pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept, rejected) of a stage output; kept loses the reject columns."""
    t = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    live = pc.is_null(t.column("reason"))
    kept = t.filter(live).drop_columns([n for n in ("reason", "stage", "detail") if n in t.schema.names])
    return kept, t.filter(pc.invert(live))


def batches(table: pa.Table, size: int = 1024) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=size)
