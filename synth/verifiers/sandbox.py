"""Run untrusted Python (model-written code) in a contained subprocess.

Layers, strongest available first (`SandboxResult.isolation` says which were used):
- `netns`, `pidns`, `uid`: as root with util-linux `unshare`, the child gets its own network namespace
  (no interfaces: every connect fails), its own PID namespace with a private /proc (it cannot see the
  host's processes or their environments; killing it kills every descendant) and runs as `nobody`
  (it cannot write where `nobody` may not, and RLIMIT_NPROC is enforced - root ignores it).
- `rlimit`: RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space), RLIMIT_NPROC (processes),
  RLIMIT_FSIZE (largest file it may write), RLIMIT_CORE=0.
- `audit`: a prelude installs a `sys.addaudithook` hook (cannot be removed from Python) that refuses
  socket connect/bind, writes outside the working directory, and reads of other processes' /proc
  entries. It is the only network block when `unshare` is unavailable (non-root); it is
  bypassable by native code (ctypes is refused by the hook too, but it is a Python-level guard).
- always: a throwaway working directory (removed afterwards), a wall-clock timeout that kills the
  whole process group, and a clean environment (PATH, LANG, HOME only; none of the parent's
  variables), `python -I -S` (no site-packages, no PYTHON* variables, no cwd on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

NOBODY = 65534

# Installed before the user's code. Written without f-strings/imports of ours: it runs under -I -S.
_PRELUDE = r'''
import sys as _s, os as _o
_WD = _o.path.realpath(_o.getcwd())
def _q3_guard(event, args, _wd=_WD, _rp=_o.path.realpath, _str=str):
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
        raise PermissionError("sandbox: network access is disabled")
    if event == "ctypes.dlopen" or event == "ctypes.cdata":
        raise PermissionError("sandbox: ctypes is disabled")
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = args[0].decode() if isinstance(args[0], bytes) else args[0]
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        full = _rp(path)
        writing = any(c in mode for c in "wax+") or (flags & 3) != 0
        if writing and not (full == _wd or full.startswith(_wd + "/")) and not full.startswith("/dev/null"):
            raise PermissionError("sandbox: writing outside the working directory: " + full)
        if full.startswith("/proc/") and not full.startswith("/proc/self/") and full.split("/")[2].isdigit() \
                and full.split("/")[2] != _str(_o.getpid()):
            raise PermissionError("sandbox: reading other processes is disabled: " + full)
    if event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.symlink", "os.link",
                 "os.truncate", "os.chmod", "os.chown"):
        for a in args:
            if isinstance(a, (str, bytes)):
                p = _rp(a.decode() if isinstance(a, bytes) else a)
                if not (p == _wd or p.startswith(_wd + "/")):
                    raise PermissionError("sandbox: changing files outside the working directory: " + p)
_s.addaudithook(_q3_guard)
del _q3_guard
'''


@dataclass
class SandboxLimits:
    cpu_s: int = 2              # RLIMIT_CPU: CPU seconds
    wall_s: float = 10.0        # wall-clock timeout (sleeping or blocked code; generous: shared CPUs)
    mem_mb: int = 256           # RLIMIT_AS
    nproc: int = 8              # RLIMIT_NPROC (processes + threads of the sandbox user)
    fsize_mb: int = 1           # RLIMIT_FSIZE: largest file the code may write
    max_output: int = 64_000    # bytes of stdout/stderr kept
    audit_hook: bool = True     # tests turn it off to show the OS layers alone


@dataclass
class SandboxResult:
    ok: bool                    # exit code 0 and no limit hit
    reason: str                 # ok | error | timeout | cpu_limit | memory_limit | file_limit | blocked | killed
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    isolation: list[str] = field(default_factory=list)


def _world_executable(path: str) -> bool:
    """Can `nobody` execute this file (every parent directory searchable)?"""
    p = Path(path)
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(q.stat().st_mode & stat.S_IXOTH for q in p.parents)
    except OSError:
        return False


def _interpreter(drop_uid: bool) -> str | None:
    """A Python the sandbox user can execute: ours if world-accessible, else a system one."""
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    for c in candidates:
        if os.path.exists(c) and (not drop_uid or _world_executable(c)):
            return c
    return None


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and sys.platform == "linux"


def isolation_plan() -> list[str]:
    """Which layers `run_python` will use on this machine."""
    if _can_unshare() and _interpreter(True):
        return ["netns", "pidns", "uid", "rlimit", "audit"]
    return ["rlimit", "audit"]


def _preexec(limits: SandboxLimits, root_mode: bool):
    def apply() -> None:
        os.setsid()
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.mem_mb * mb, limits.mem_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_mb * mb, limits.fsize_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # As root the limit is enforced after `unshare --setuid nobody`. As an ordinary user it counts
        # all of that user's processes, so allow the ones that already exist plus `nproc`.
        extra = 0 if root_mode else _user_process_count()
        resource.setrlimit(resource.RLIMIT_NPROC, (extra + limits.nproc, extra + limits.nproc))
    return apply


def _user_process_count() -> int:
    uid, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n + 64   # threads count too; leave room for the user's own threads


def _classify(rc: int, stderr: str, timed_out: bool, cpu_used: float, limits: SandboxLimits) -> str:
    """The containment that stopped the program. A limit the program ran into is reported even if the
    wall clock then had to kill it (e.g. a MemoryError traceback that took long to print)."""
    if rc == 0 and not timed_out:
        return "ok"
    # `unshare` (2.38) cannot always re-raise SIGXCPU and exits 1 instead, so also judge by CPU used.
    if rc == -signal.SIGXCPU or (not timed_out and cpu_used >= 0.95 * limits.cpu_s):
        return "cpu_limit"
    if rc == -signal.SIGXFSZ or "File too large" in stderr:
        return "file_limit"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory_limit"
    if "BlockingIOError" in stderr and "Resource temporarily unavailable" in stderr:
        return "process_limit"
    if ("PermissionError: sandbox:" in stderr or "PermissionError: [Errno 13]" in stderr
            or "Network is unreachable" in stderr or "OSError: [Errno 101]" in stderr):
        return "blocked"
    if timed_out:
        return "timeout"
    if rc < 0 or rc > 128:
        return "killed"
    return "error"


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "",
               base_dir: str | None = None) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; never raises for anything the code does."""
    limits = limits or SandboxLimits()
    root_mode = _can_unshare() and _interpreter(True) is not None
    python = _interpreter(root_mode)
    if python is None:
        return SandboxResult(False, "no_interpreter", -1, "", "no Python the sandbox user can run", 0.0)
    isolation = isolation_plan()
    workdir = tempfile.mkdtemp(prefix="q3sbx-", dir=base_dir)
    try:
        main = Path(workdir) / "main.py"
        main.write_text((_PRELUDE if limits.audit_hook else "") + "\n" + code, encoding="utf-8")
        if root_mode:
            os.chmod(workdir, 0o700)
            os.chown(workdir, NOBODY, NOBODY)
            os.chown(main, NOBODY, NOBODY)
        argv = [python, "-I", "-S", "-B", "main.py"]
        if root_mode:
            argv = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
                    "--setuid", str(NOBODY), "--setgid", str(NOBODY), "--", *argv]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir}
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=_preexec(limits, root_mode), close_fds=True)
        rc, cpu_used, timed_out, out, err = _wait(proc, stdin, limits.wall_s)
        wall = time.monotonic() - t0
        so = out[: limits.max_output].decode("utf-8", "replace")
        se = err[-limits.max_output:].decode("utf-8", "replace")
        if root_mode and rc > 128:   # `unshare` reports the child's death by signal N as 128+N
            rc = -(rc - 128)
        reason = _classify(rc, se, timed_out, cpu_used, limits)
        return SandboxResult(reason == "ok", reason, rc, so, se, round(wall, 3), isolation)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait(proc: subprocess.Popen, stdin: str, wall_s: float) -> tuple[int, float, bool, bytes, bytes]:
    """Feed stdin, collect output, and reap the child with wait4 to learn its own CPU time
    (os.times() would mix in other children when several sandboxes run in threads)."""
    chunks: dict[str, bytes] = {}

    def pump(name: str, stream) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=pump, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    try:
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    deadline = time.monotonic() + wall_s
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            _kill_group(proc.pid)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    _kill_group(proc.pid)   # stragglers (fork-bomb children) die with the group / PID namespace
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(timeout=2)
    return proc.returncode, usage.ru_utime + usage.ru_stime, timed_out, chunks.get("out", b""), chunks.get("err", b"")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
