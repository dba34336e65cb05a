"""Which runner a job uses: `runner: auto` (the default) picks local or Spark from the input.

Spark's fixed cost (JVM start, ~a second per Spark job) dominates small inputs: the local runner
runs the same batch functions in-process and is faster up to a few hundred MB. `auto` uses the
local runner below both `auto.local_max_bytes` and `auto.local_max_rows` (measured from the input:
file sizes and Parquet footers, no data read), and Spark above either, or whenever a cluster is
configured (`Q3_SPARK_MASTER`, running under spark-submit, or a non-local cluster profile). The
choice and the reason are logged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from q3.config import Q3Config
from q3.log import get_logger

log = get_logger("q3.engine")
Runner = Literal["auto", "local", "spark"]


class AutoRunner(Q3Config):
    """How `runner: auto` chooses (local below both limits, Spark above either or on a cluster)."""

    local_max_bytes: int = 512 * 2**20      # input bytes on disk the local runner takes
    local_max_rows: int = 500_000           # input rows (documents) the local runner takes


@dataclass(frozen=True)
class RunnerChoice:
    runner: str
    why: str


def cluster_configured(cluster: str | None = None) -> str | None:
    """Why Spark is wanted regardless of size (a cluster to use), or None."""
    from q3.engine.session import _under_submit

    if _under_submit():
        return "running under spark-submit"
    if os.environ.get("Q3_SPARK_MASTER"):
        return f"Q3_SPARK_MASTER={os.environ['Q3_SPARK_MASTER']}"
    if cluster not in (None, "", "local"):
        return f"cluster profile {cluster!r}"
    return None


def input_size(inputs: Iterable[str | Path]) -> tuple[int, int | None]:
    """(bytes, rows) of the inputs; rows from Parquet footers, None when an input is not Parquet."""
    from q3.engine.io import corpus_size

    total_bytes, total_rows = 0, 0
    rows_known = True
    for p in map(Path, inputs):
        if p.is_dir() and not any(p.rglob("*.parquet")):
            total_bytes += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            rows_known = False
        elif p.suffix in (".jsonl", ".json"):      # rows unknown without reading it all: bytes decide
            total_bytes += p.stat().st_size
            rows_known = False
        elif p.suffix == ".parquet" or p.is_dir():
            b, r = corpus_size(p)
            total_bytes, total_rows = total_bytes + b, total_rows + r
        elif p.exists():
            total_bytes += p.stat().st_size
            rows_known = False
    return total_bytes, (total_rows if rows_known else None)


def choose_runner(requested: str, inputs: Iterable[str | Path], auto: AutoRunner | None = None,
                  cluster: str | None = None, job: str = "job") -> RunnerChoice:
    """Resolve `requested` (auto | local | spark) for a job on `inputs`; logs the choice and why."""
    if requested in ("local", "spark"):
        choice = RunnerChoice(requested, "as configured")
    else:
        auto = auto or AutoRunner()
        on_cluster = cluster_configured(cluster)
        if on_cluster:
            choice = RunnerChoice("spark", on_cluster)
        else:
            n_bytes, n_rows = input_size(inputs)
            size = f"{n_bytes / 2**20:.1f} MB" + ("" if n_rows is None else f", {n_rows:,} rows")
            if n_bytes > auto.local_max_bytes:
                choice = RunnerChoice("spark", f"input {size} > auto.local_max_bytes "
                                      f"{auto.local_max_bytes / 2**20:.0f} MB")
            elif n_rows is not None and n_rows > auto.local_max_rows:
                choice = RunnerChoice("spark", f"input {size} > auto.local_max_rows {auto.local_max_rows:,}")
            else:
                choice = RunnerChoice("local", f"input {size} is under the auto.local_max_* limits")
    log.info("%s: runner %s (%s)", job, choice.runner, choice.why)
    return choice
