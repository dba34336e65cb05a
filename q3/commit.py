"""Keyed commits: when a corpus job may reuse its committed output, and when it must redo it.

Every corpus job (pipeline, dedup, decontam, tokenise, label apply, synth) asks the same question
before it works: "is `<output>` committed by a run with this config, on this input, by this code?"
The answer is a `JobKey`, made of three parts, each hashed on its own so a recompute can say why:

- config: the job's config, normalised (the job drops what does not change the result: where the
  output goes, how fast, which engine);
- input:  the input's content fingerprint. An input that is (inside) a committed output is named by
  that commit's `commit_id` (unique per commit, see `q3.atomic.atomic_dir`), so re-running the
  upstream stage changes it even when the new files look alike. Other inputs are named by their
  files' relative names, sizes and mtimes, walked in sorted order;
- code:   the package version and the git revision (read from `.git`, never by spawning git).

    key = job_key("dedup", cfg_dict, inputs=[input_dir])
    if (marker := reuse_if_committed(out, key)) is not None:
        return marker                      # logged: "<out> is up to date (...); skipping"
    with commit(out, key, meta) as tmp:    # the marker gets the key and a fresh commit_id
        ...

Chunked jobs name their chunks by `key.id`, so a changed input never reuses old chunks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from q3.atomic import MARKER, atomic_dir, is_committed, read_marker
from q3.log import get_logger

log = get_logger("q3.commit")
ROOT = Path(__file__).resolve().parents[1]


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@functools.cache
def git_revision(root: Path = ROOT) -> str | None:
    """The checkout's HEAD commit, read from files (also in a worktree, whose .git is a file)."""
    try:
        git = root / ".git"
        if git.is_file():   # worktree: "gitdir: <main>/.git/worktrees/<name>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():   # worktrees keep refs in the main .git
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except (OSError, IndexError):
        pass
    return None   # an installed package, not a checkout: the version alone


@functools.cache
def code_version() -> str:
    from q3 import __version__

    rev = git_revision()
    return f"{__version__}+{rev[:12]}" if rev else __version__


def _committed_root(p: Path, seen: dict[Path, Path | None]) -> Path | None:
    """`p` itself or its nearest ancestor holding a commit marker (e.g. `<pipeline out>/kept`).
    `seen` caches folders: a pipeline's thousands of input files share a few parents."""
    if p in seen:
        return seen[p]
    if (p / MARKER).is_file():
        root = p
    else:
        root = None if p.parent == p else _committed_root(p.parent, seen)
    seen[p] = root
    return root


def _walk(p: Path) -> list[list[Any]]:
    """Relative name, size and mtime of every file under `p` (temporaries and markers excluded)."""
    if p.is_file():
        st = p.stat()
        return [[p.name, st.st_size, st.st_mtime_ns]]
    rows = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith((".", "_")):
                continue
            full = Path(dirpath) / f
            try:
                st = full.stat()
            except OSError:
                continue
            rows.append([str(full.relative_to(p)), st.st_size, st.st_mtime_ns])
    return rows


def input_fingerprint(inputs: Iterable[str | Path]) -> str:
    """Content fingerprint of the inputs (see the module doc); a missing path counts as missing."""
    parts = []
    seen: dict[Path, Path | None] = {}
    cids: dict[Path, str] = {}
    for raw in inputs:
        p = Path(raw).expanduser().resolve()
        root = _committed_root(p, seen) if p.exists() else None
        if root is not None:
            if root not in cids:
                m = read_marker(root)
                # markers written before commit_id existed: their content stands for the commit
                cids[root] = m.get("commit_id") or _hash(m)
            cid = cids[root]
            parts.append({"commit": cid, "sub": str(p.relative_to(root))})
        elif p.exists():
            parts.append({"files": _walk(p)})
        else:
            parts.append({"missing": str(raw)})
    return _hash(parts)


@dataclass(frozen=True)
class JobKey:
    kind: str
    config: str
    input: str
    code: str

    @property
    def id(self) -> str:
        return _hash([self.kind, self.config, self.input, self.code])

    def as_marker(self) -> dict[str, str]:
        return {"id": self.id, **asdict(self)}


def job_key(kind: str, config: dict[str, Any], inputs: Iterable[str | Path]) -> JobKey:
    """The key of a run of job `kind` with (normalised) `config` on `inputs`."""
    return JobKey(kind, _hash(config), input_fingerprint(inputs), code_version())


def why_changed(old: dict[str, Any] | None, key: JobKey) -> str:
    if not old:
        return "no key in its marker (committed by an older version)"
    why = [what for what in ("input", "config", "code") if old.get(what) != getattr(key, what)]
    return " and ".join(f"{w} changed" for w in why) or "key changed"


def reuse_if_committed(out: str | Path, key: JobKey, force: bool = False) -> dict[str, Any] | None:
    """The marker of `out` when it was committed under `key` (the job may skip), else None.

    Says which, and why a committed output is recomputed (input, config or code changed)."""
    out = Path(out)
    if not is_committed(out):
        return None
    marker = read_marker(out)
    old = marker.get("job_key")
    if force:
        log.info("%s: recomputing (force=true)", out)
    elif old and old.get("id") == key.id:
        log.info("%s is up to date (same config and input); skipping", out)
        return marker
    else:
        log.info("%s: recomputing (%s)", out, why_changed(old, key))
    return None


@contextmanager
def commit(out: str | Path, key: JobKey, meta: dict[str, Any] | None = None) -> Iterator[Path]:
    """`atomic_dir` whose marker carries `key` (and, as every marker, a fresh commit_id)."""
    meta = meta if meta is not None else {}
    meta["job_key"] = key.as_marker()
    with atomic_dir(out, meta) as tmp:
        yield tmp
