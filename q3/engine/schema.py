"""Schemas, declared once in Arrow: conform batches to them, and derive Spark's from them.

A job declares its output schema as a `pa.Schema` (usually `q3.schemas.STAGE_OUTPUT_SCHEMA`);
Spark's `StructType` is derived from it here, so the two can never drift apart, and a type Spark
cannot hold is an error naming the column instead of a silent `string`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from q3.schemas import DOC_SCHEMA


def conform(data: pa.RecordBatch | pa.Table, schema: pa.Schema = DOC_SCHEMA,
            keep_extra: bool = False) -> pa.RecordBatch:
    """`data` with the columns of `schema`, in its order and types; missing columns become nulls.

    keep_extra: columns not in `schema` follow, unchanged (e.g. a job's own annotation columns)."""
    n = data.num_rows
    names = data.schema.names
    cols, fields = [], []
    for field in schema:
        if field.name in names:
            col = data.column(field.name)
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if col.type != field.type:
                col = col.cast(field.type)
        else:
            col = pa.nulls(n, field.type)
        cols.append(col)
        fields.append(field)
    if keep_extra:
        for i, name in enumerate(names):
            if name not in schema.names:
                col = data.column(i)
                cols.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
                fields.append(data.schema.field(i))
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


def spark_type(t: pa.DataType, column: str = "?") -> Any:
    """Spark's type for an Arrow type; a type Spark cannot hold is an error naming the column."""
    from pyspark.sql.pandas.types import from_arrow_type

    try:
        return from_arrow_type(t)
    except (TypeError, NotImplementedError) as e:
        raise TypeError(f"column {column!r}: Arrow type {t} has no Spark type ({e})") from None


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark `StructType` of an Arrow schema (every field, in order, nullability kept)."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, spark_type(f.type, f.name), f.nullable) for f in schema])


def spark_conform(df: Any, schema: pa.Schema = DOC_SCHEMA, keep_extra: bool = False) -> Any:
    """A Spark DataFrame with the columns of `schema` (typed nulls where missing, casts where the
    files hold another type), in its order; like `conform` for Arrow."""
    from pyspark.sql import functions as F

    cols = []
    for f in schema:
        want = spark_type(f.type, f.name)
        if f.name in df.columns:
            col = F.col(f.name)
            cols.append(col if df.schema[f.name].dataType == want else col.cast(want).alias(f.name))
        else:
            cols.append(F.lit(None).cast(want).alias(f.name))
    if keep_extra:
        cols += [F.col(c) for c in df.columns if c not in schema.names]
    return df.select(*cols)
