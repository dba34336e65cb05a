"""Atomic, resumable outputs: write to a temporary sibling, then rename and mark success.

A stage output directory counts as done only when it holds `_Q3_SUCCESS` (JSON: counts, config
hash, inputs, and a `commit_id` unique to this commit, which downstream jobs key their inputs on;
see `q3.commit`). A crash leaves at most a `.name.tmp-*` sibling, which the next run removes and redoes.
Works on POSIX filesystems (local disk, NFS, Lustre, HDFS-fuse); rename is atomic there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARKER = "_Q3_SUCCESS"


def is_committed(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def read_marker(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / MARKER).read_text())


def clean_stale(path: str | Path) -> None:
    """Remove temporaries left by a crashed run of this output."""
    p = Path(path)
    if p.parent.exists():
        for stale in p.parent.glob(f".{p.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | Path, meta: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on normal exit it replaces `path` and gets the success marker.

    `meta` may be mutated inside the block (e.g. to add counts); it is written into the marker,
    with a fresh `commit_id`: a re-run of this stage changes it even when its files look alike.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    marker = {**(meta or {}), "commit_id": f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex}"}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file via a temporary and rename, so readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
