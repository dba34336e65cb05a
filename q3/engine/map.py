"""Run a pure `RecordBatch -> RecordBatch` function over a corpus: a local loop or Spark `mapInArrow`.

    fn_factory: a picklable zero-argument callable that builds the batch function. It runs once per
                process (once per Spark Python worker), so models load once, never per batch; a
                `functools.partial` of a module-level function or a small dataclass both pickle.
    schema:     the output's Arrow schema, declared once; Spark's is derived from it (`spark_schema`).

The same factory and schema go to both runners, so the rows are the same whichever runs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from q3.engine.schema import conform, spark_schema

BatchFn = Callable[[pa.RecordBatch], pa.RecordBatch | Iterable[pa.RecordBatch]]
FnFactory = Callable[[], BatchFn]

_BUILT: dict[bytes, BatchFn] = {}


def _key(fn_factory: FnFactory) -> bytes:
    """Equal factories (e.g. two unpickled copies of one partial, one per Spark task) share a key."""
    from pyspark import cloudpickle

    try:
        return hashlib.blake2b(cloudpickle.dumps(fn_factory), digest_size=16).digest()
    except Exception:  # noqa: BLE001 - an unpicklable local factory: fall back to its identity
        return str(id(fn_factory)).encode()


def _built(fn_factory: FnFactory) -> BatchFn:
    """One batch function per factory per process (Spark reuses Python workers across tasks)."""
    key = _key(fn_factory)
    fn = _BUILT.get(key)
    if fn is None:
        fn = _BUILT[key] = fn_factory()
    return fn


def apply(fn_factory: FnFactory, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batch function over `batches`, each output conformed to `schema` (empty batches skipped).

    The function returns one batch, or an iterable of batches where one input batch expands to
    many rows (e.g. a batch of file paths -> their documents, streamed)."""
    fn = _built(fn_factory)
    for b in batches:
        if b.num_rows:
            res = fn(b)
            for out in ([res] if isinstance(res, pa.RecordBatch) else res):
                yield out if out.schema.equals(schema) else conform(out, schema)


def map_batches(fn_factory: FnFactory, source: Any, schema: pa.Schema, *, runner: str,
                batch_size: int = 2048) -> Any:
    """`fn_factory()` over every batch of `source`.

    runner="local": `source` is an iterable of record batches (or a Table); returns an iterator of
    `schema` batches. runner="spark": `source` is a DataFrame; returns the DataFrame of `mapInArrow`
    with the Spark schema derived from `schema` (lazy: nothing runs until it is written)."""
    if runner == "local":
        if isinstance(source, pa.Table):
            source = source.to_batches(max_chunksize=batch_size)
        return apply(fn_factory, source, schema)
    if runner != "spark":
        raise ValueError(f"runner must be local or spark here (auto is resolved before), not {runner!r}")
    source.sparkSession.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))

    def body(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from apply(fn_factory, it, schema)

    return source.mapInArrow(body, spark_schema(schema))
