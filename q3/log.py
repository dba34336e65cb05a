"""Logging, progress bars and summary tables, shared by every area."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

T = TypeVar("T")
_console = Console(stderr=False, highlight=False)


def get_logger(name: str) -> logging.Logger:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("Q3_LOG_LEVEL", "INFO"),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
        )
    return logging.getLogger(name)


@contextmanager
def timed(log: logging.Logger, what: str) -> Iterator[None]:
    """Log the start and the duration of a phase of a long job (progress for multi-step Spark jobs)."""
    log.info("%s ...", what)
    t0 = time.time()
    yield
    log.info("%s: done in %.1f s", what, time.time() - t0)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A progress bar on stderr; silent when Q3_PROGRESS=0 (tests, logs)."""
    disable = os.environ.get("Q3_PROGRESS", "1") == "0"
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=disable, file=sys.stderr,
                    dynamic_ncols=True, mininterval=0.5)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a summary table (numbers right-aligned, thousands separated)."""
    table = Table(title=title, title_justify="left")
    rows = [list(r) for r in rows]
    for i, col in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows if r[i] is not None)
        table.add_column(col, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*(_fmt(v) for v in r))
    _console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)
