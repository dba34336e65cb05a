"""What travels beside the batches: a value sent to every batch function, counts sent back.

    Shared(value, spark)  -> `.value` in the batch function: the value itself (local) or a Spark
                             broadcast (shipped once per executor, not once per task)
    Tally(spark)          -> `.set(key, n)` in the batch function, `.value` ({key: n}) on the driver
                             after the write: a dict (local) or a Spark accumulator

Both go into the batch-function factory (a `functools.partial` argument). `map_batches` keys its
once-per-process cache on the factory's pickle, so both pickle to a stable identity on the workers
as well (a bare Broadcast refuses to pickle there, and the cache would fall back to `id()`).

A Tally merges by key, the latest value winning (not a sum): a Spark task that runs again (lost
executor, evicted cache, speculation) sets the same keys to the same values, so each key counts once.
"""

from __future__ import annotations

import uuid
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _shared_from_broadcast_id(bid: int) -> Shared[Any]:
    from pyspark.broadcast import _from_id

    s: Shared[Any] = Shared.__new__(Shared)
    s._local, s._bc = None, _from_id(bid)
    return s


class Shared(Generic[T]):
    """A read-only value for batch functions: local runner -> the value; Spark -> a broadcast."""

    def __init__(self, value: T, spark: Any = None):
        self._local: T | None = value if spark is None else None
        self._bc = None if spark is None else spark.sparkContext.broadcast(value)

    @property
    def value(self) -> T:
        return self._bc.value if self._bc is not None else self._local  # type: ignore[return-value]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._bc is None:
            return Shared, (self._local,)
        if getattr(self._bc, "_jbroadcast", None) is not None:   # driver: ship the broadcast itself
            return _shared_from_broadcast_id_driver, (self._bc,)
        return _shared_from_broadcast_id, (self._bc.bid,)         # worker: its id is its identity

    def unpersist(self) -> None:
        """Free the broadcast's copies on the executors (the driver keeps nothing either)."""
        if self._bc is not None:
            self._bc.destroy()


def _shared_from_broadcast_id_driver(bc: Any) -> Shared[Any]:
    s: Shared[Any] = Shared.__new__(Shared)
    s._local, s._bc = None, bc
    return s


class _LatestByKeyParam:
    """AccumulatorParam (duck-typed, module level so it pickles): merge dicts, latest value wins."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:
        a.update(b)
        return a


class Tally:
    """Counts by key, set inside batch functions, read on the driver once the result is written."""

    def __init__(self, spark: Any = None):
        self.name = uuid.uuid4().hex
        self._local: dict[str, int] = {}
        self._acc = None if spark is None else spark.sparkContext.accumulator({}, _LatestByKeyParam())

    def set(self, key: str, n: int) -> None:
        if self._acc is None:
            self._local[key] = n
            return
        from pyspark.accumulators import _accumulatorRegistry

        # A Python worker runs many tasks and clears its registry before each; the factory (and so
        # this object) may come from an earlier task: add to the accumulator of the running task.
        _accumulatorRegistry.get(self._acc.aid, self._acc).add({key: n})

    @property
    def value(self) -> dict[str, int]:
        return dict(self._local) if self._acc is None else dict(self._acc.value)

    def total(self) -> int:
        return sum(self.value.values())

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _tally, (self.name, self._acc)


def _tally(name: str, acc: Any) -> Tally:
    t = Tally.__new__(Tally)
    t.name, t._local, t._acc = name, {}, acc
    return t
