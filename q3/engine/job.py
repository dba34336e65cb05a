"""The skeleton every corpus job shares: skip when committed under the same key, else run and
commit atomically with the stats.

    key = job_key("dedup", semantic_config, inputs=[input_dir])      # q3.commit
    stats = run_committed(out, key, lambda tmp, meta: work(tmp))     # work returns the stats dict

An unchanged rerun returns the committed stats at once (and says so); a changed config, input or
code runs `body` into a temporary dir that is renamed into place only when it returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from q3.commit import JobKey, commit, reuse_if_committed

Body = Callable[[Path, dict[str, Any]], dict[str, Any]]


def committed_stats(out: str | Path, key: JobKey, stats_file: str = "stats.json",
                    force: bool = False) -> dict[str, Any] | None:
    """The stats of `out` when it is committed under `key`, else None."""
    out = Path(out)
    if reuse_if_committed(out, key, force=force) is None or not (out / stats_file).is_file():
        return None
    stats = json.loads((out / stats_file).read_text())
    stats["skipped"] = True
    return stats


def _check_stats(stats: dict[str, Any], where: Path) -> None:
    """A corpus job's counts follow the stats contract (kept + rejected = input where both are
    reported); checked before the commit, so a broken run never lands."""
    from q3.contracts import CorpusStats, parse_contract

    if "docs_in" in stats or "input_docs" in stats:
        parse_contract(CorpusStats, stats, where).check_balance(where)


def run_committed(out: str | Path, key: JobKey, body: Body, *, stats_file: str = "stats.json",
                  force: bool = False, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Skip (returning the committed stats, `skipped: true`) or run `body(tmp, meta)` -> stats and
    commit `tmp` as `out` with the stats written to `stats_file` and the key in the marker."""
    done = committed_stats(out, key, stats_file, force)
    if done is not None:
        return done
    t0 = time.time()
    meta = dict(meta or {})
    with commit(out, key, meta) as tmp:
        stats = body(tmp, meta)
        _check_stats(stats, Path(out) / stats_file)
        stats.setdefault("seconds", round(time.time() - t0, 2))
        (tmp / stats_file).write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        meta.update({k: v for k, v in stats.items() if isinstance(v, int | float | str)})
    return stats
