"""Debian packages as a source of real files: `apt-get download` + `dpkg-deb -x`, no root install.

Used by `q3 data sample` (man pages, fortunes, references) and by the sandbox tools (bubblewrap,
the seccomp bindings). Standard library only: `make sandbox-tools` runs it before anything is
installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_UPDATED = False   # `apt-get update` at most once per process


class DebUnavailable(RuntimeError):
    """A package could not be downloaded or unpacked (message says which and why)."""


def require_tools(why: str) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DebUnavailable(f"{why} needs {tool} (a Debian/Ubuntu machine)")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def find_deb(debs: Path, pkg: str) -> Path | None:
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    return found[-1] if found else None


def download_deb(pkg: str, debs: Path) -> Path:
    """The .deb of `pkg` in `debs` (downloaded once; a fresh machine often has no package lists
    yet, so a failed download runs `apt-get update` once and retries)."""
    global _UPDATED
    debs.mkdir(parents=True, exist_ok=True)
    deb = find_deb(debs, pkg)
    if deb is not None:
        return deb
    r = _run(["apt-get", "download", pkg], debs)
    if r.returncode != 0 and not _UPDATED:
        _run(["apt-get", "update"], debs)
        _UPDATED = True
        r = _run(["apt-get", "download", pkg], debs)
    deb = find_deb(debs, pkg)
    if r.returncode != 0 or deb is None:
        raise DebUnavailable(f"apt-get download {pkg} failed: {r.stderr.strip()[-300:]}")
    return deb


def unpack_deb(deb: Path, dest: Path) -> None:
    """`dpkg-deb -x` into `dest` (callers unpack into a temporary dir and rename it into place)."""
    r = _run(["dpkg-deb", "-x", str(deb), str(dest)], deb.parent)
    if r.returncode != 0:
        raise DebUnavailable(f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()[-300:]}")
