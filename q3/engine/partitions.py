"""Run a stream function over a corpus: `Iterator[RecordBatch] -> Iterator[RecordBatch]`, by a
local call or by Spark `mapInArrow` (one call per partition).

`map_batches` covers jobs whose batches are independent. A job that carries state across batches
(tokenise: a hash bucket's rows span batches and are written as one shard) gets the whole stream
of its partition instead. The factory and the declared Arrow output schema work as in
`q3.engine.map`: the factory runs once per process, Spark's schema is derived from the Arrow one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from q3.engine.map import _built
from q3.engine.schema import conform, spark_schema

StreamFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def _run(fn_factory: Callable[[], StreamFn], schema: pa.Schema,
         batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    fn = _built(fn_factory)
    for out in fn(b for b in batches if b.num_rows):
        yield out if out.schema.equals(schema) else conform(out, schema)


def map_partitions(fn_factory: Callable[[], StreamFn], source: Any, schema: pa.Schema, *, runner: str,
                   batch_size: int = 2048) -> Any:
    """`fn_factory()` over the stream of `source`'s batches (local: the whole source, an iterable of
    batches or a Table, is one stream; Spark: each partition of the DataFrame is one, in its order)."""
    if runner not in ("local", "spark"):
        raise ValueError(f"runner must be local or spark here (auto is resolved before), not {runner!r}")
    run = functools.partial(_run, fn_factory, schema)
    if runner == "local":
        return run(source.to_batches(max_chunksize=batch_size) if isinstance(source, pa.Table) else source)
    source.sparkSession.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    return source.mapInArrow(run, spark_schema(schema))
