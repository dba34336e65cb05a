"""Logging, progress and summary tables, shared by every area.

Logs stay readable in files as well as on a terminal:
- third-party noise (megatron-core's INFO lines: DDP bucket parameter lists, dataset index lines,
  optimizer configs; the TE/APEX "not installed" UserWarnings) is filtered to warnings unless
  `Q3_VERBOSE=1` or a verb's `verbose=true` (`set_verbose`);
- tables use a wide console when stdout is not a terminal (rich cuts at 80 columns otherwise);
- progress is a tqdm bar on a terminal and a few log lines (every ~10% or `interval` s) in a file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

T = TypeVar("T")
TABLE_WIDTH = 200          # not a terminal: wide enough for every table we print, no "2,144,1…"

# loggers whose INFO is noise for a user (they keep WARNING and above)
NOISY_LOGGERS = ("megatron", "py4j", "torch.distributed.elastic")
# warnings printed once per process by megatron-core imports on machines without TE / APEX (by message)
NOISY_WARNINGS = (
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    r"Transformer Engine is not installed",
    r"full scope is deprecated",
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def verbose_env() -> bool:
    return _truthy(os.environ.get("Q3_VERBOSE"))


def set_verbose(verbose: bool) -> None:
    """Quiet (default) or verbose third-party logging. Also exported as Q3_VERBOSE so that child
    processes (torchrun workers, Spark executors, the demo's steps) follow."""
    level = logging.NOTSET if verbose else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    action = "default" if verbose else "ignore"
    for msg in NOISY_WARNINGS:
        warnings.filterwarnings(action, message=msg, category=UserWarning)
    if verbose:
        os.environ["Q3_VERBOSE"] = "1"


def _stdout_console() -> Console:
    # not a terminal (a log file, a pipe): a fixed wide console; a terminal: its own width
    return Console(highlight=False, width=None if sys.stdout.isatty() else TABLE_WIDTH)


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


def progress_enabled() -> bool:
    return os.environ.get("Q3_PROGRESS", "1") != "0"


class Progress:
    """Progress of `total` units: a tqdm bar on a terminal; otherwise a log line when another ~10%
    is done or `interval` seconds have passed, and one at the end (tqdm in a log file writes a line
    per refresh). Silent when Q3_PROGRESS=0 (tests)."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", interval: float = 30.0,
                 log: logging.Logger | None = None, tty: bool | None = None, pct_step: int | None = 10,
                 quiet_s: float = 0.0):
        """`pct_step`: a line each time another pct_step % is done (None: by time only); `quiet_s`:
        no final line for work that finished sooner than this without any line (many small batches)."""
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.pct_step, self.quiet_s = pct_step, quiet_s
        self.log = log or get_logger("q3.progress")
        self.n, self.t0 = 0, time.time()
        self._last_t, self._last_pct, self._last_n = self.t0, 0, 0
        self.enabled = progress_enabled()
        tty = sys.stderr.isatty() if tty is None else tty
        self.bar = (tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
                    if self.enabled and tty else None)
        self.lines = 0                   # log lines written (tests)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.enabled:
            return
        now = time.time()
        step = self.pct_step or 0
        pct = int(100 * self.n / self.total) // step * step if self.total and step else 0
        if (pct > self._last_pct and self.n < (self.total or 0)) or now - self._last_t >= self.interval:
            self._emit(now)
            self._last_pct = pct

    def _emit(self, now: float) -> None:
        dt = max(now - self.t0, 1e-9)
        rate = self.n / dt
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            msg = (f"{self.desc}: {self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%), "
                   f"{rate:.3g} {self.unit}/s, {dt:.0f}s elapsed" + (f", ~{eta:.0f}s left" if self.n < self.total else ""))
        else:
            msg = f"{self.desc}: {self.n:,} {self.unit}, {rate:.3g} {self.unit}/s, {dt:.0f}s elapsed"
        self.log.info(msg)
        self.lines += 1
        self._last_t, self._last_n = now, self.n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n != self._last_n and (self.lines or time.time() - self.t0 >= self.quiet_s):
            self._emit(time.time())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
             interval: float = 30.0) -> Iterator[T]:
    """Iterate `items` showing progress (a bar on a terminal, a few log lines in a file)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, interval) as p:
        for x in items:
            yield x
            p.update()


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a summary table (numbers right-aligned, thousands separated)."""
    table = Table(title=title, title_justify="left")
    rows = [list(r) for r in rows]
    for i, col in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows if r[i] is not None)
        table.add_column(col, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*(_fmt(v) for v in r))
    _stdout_console().print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


set_verbose(verbose_env())   # at import: before megatron-core's imports print their warnings
