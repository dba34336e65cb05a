"""Fetch the code sandbox's tools: bubblewrap (`bwrap`) and libseccomp's Python bindings.

Like `q3 data sample`, nothing is installed system-wide: the Debian packages are fetched with
`apt-get download` (once `apt-get update` if the lists are missing) and unpacked with `dpkg-deb -x`
into `$Q3_DATA/cache/sandbox/`, world-readable so that an unprivileged sandbox uid can execute
`bwrap`. A `bwrap` on PATH (or `Q3_SANDBOX_BWRAP=/path/to/bwrap`) is used instead when present.
The first sandbox run fetches them (cached); `make test` does it up front: `python -m q3.sandbox_tools`.
Stdlib only: the sandbox may run in a process that has dropped root and cannot import the venv.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from q3.debs import DebUnavailable, download_deb, require_tools, unpack_deb

PACKAGES = ("bubblewrap", "python3-seccomp")
_FAILED: set[str] = set()   # optional packages whose fetch failed in this process


class ToolsUnavailable(RuntimeError):
    """The sandbox tools could not be found or fetched; the message says why."""


@dataclass(frozen=True)
class Tools:
    bwrap: Path
    seccomp_path: Path | None   # a directory holding the `seccomp` extension module, if fetched


def cache_dir() -> Path:
    from q3.paths import data_dir

    return data_dir() / "cache" / "sandbox"


def _fetch(pkg: str, root: Path, debs: Path) -> None:
    """apt-get download + dpkg-deb -x into `root` (atomically: a half-unpacked tree is never used)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{pkg}-", dir=root.parent))
    try:
        unpack_deb(download_deb(pkg, debs), tmp)
    except DebUnavailable as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ToolsUnavailable(str(e)) from None
    _world_readable(tmp)
    tmp.rename(root)


def _world_readable(top: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = Path(dirpath) / f
            if not p.is_symlink():
                os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)


def ensure_tools(fetch: bool = True) -> Tools:
    """The sandbox tools, fetched into the cache on first use. Raises ToolsUnavailable when there is
    no bwrap; the seccomp bindings are optional (the sandbox then runs without that layer)."""
    override = os.environ.get("Q3_SANDBOX_BWRAP")
    cache = cache_dir()
    seccomp_dir = cache / "python3-seccomp" / "usr/lib/python3/dist-packages"
    bwrap = Path(override) if override else (Path(shutil.which("bwrap")) if shutil.which("bwrap") else None)
    missing = [p for p in PACKAGES if not (cache / p).is_dir() and p not in _FAILED
               and not (p == "bubblewrap" and bwrap is not None)]
    if missing and fetch:
        try:
            _fetch_missing(cache, missing)
        except (OSError, ToolsUnavailable) as e:
            if "bubblewrap" in missing:
                raise ToolsUnavailable(f"cannot fetch {', '.join(missing)} into {cache}: {e}") from e
            _FAILED.update(missing)   # optional bindings: do not retry on every run of this process
    if bwrap is None:
        bwrap = cache / "bubblewrap" / "usr/bin/bwrap"
    if not bwrap.is_file() or not os.access(bwrap, os.X_OK):
        raise ToolsUnavailable(f"no bubblewrap: {bwrap} is not an executable file")
    return Tools(bwrap=bwrap, seccomp_path=seccomp_dir if seccomp_dir.is_dir() else None)


def _fetch_missing(cache: Path, missing: list[str]) -> None:
    try:
        require_tools("fetching the sandbox tools (or install bubblewrap yourself)")
    except DebUnavailable as e:
        raise ToolsUnavailable(str(e)) from None
    cache.mkdir(parents=True, exist_ok=True)
    for d in (cache, *cache.parents[:2]):
        if d.stat().st_uid == os.geteuid():
            d.chmod(0o755)   # the sandbox uid must reach bwrap
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # concurrent first runs fetch once
        for pkg in missing:
            if (cache / pkg).is_dir():
                continue
            try:
                _fetch(pkg, cache / pkg, debs)
            except ToolsUnavailable:
                if pkg == "bubblewrap":
                    raise
                _FAILED.add(pkg)


def main() -> int:
    try:
        t = ensure_tools()
    except ToolsUnavailable as e:
        print(f"q3.sandbox_tools: {e}", file=sys.stderr)
        return 1
    print(f"bwrap: {t.bwrap}\nseccomp bindings: {t.seccomp_path or 'none (the sandbox runs without seccomp)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
