"""Run untrusted Python (model-written code) in a contained subprocess.

The isolation does not depend on Python-level hooks (docs/security.md has the threat model).
With bubblewrap (`bwrap`, fetched on first use by `q3.sandbox_tools`) every run gets
(`SandboxResult.isolation` names the layers that ran):
- `mntns`: a mount namespace whose root is empty except a read-only /usr (the Python runtime and
  its libraries), /etc/ld.so.cache, a minimal read-only /dev, and a fresh size-capped tmpfs /tmp
  holding the work directory /tmp/q3sbx-work, into which only the program text is copied. No /proc,
  no /etc/passwd, nothing of the project, of $HOME or of other sandboxes.
- `pidns`: a fresh PID namespace; when its first process ends (or the wall clock kills bwrap)
  every descendant dies, setsid'd or not.
- `netns`, `ipcns`, `utsns`: no network interface but its own loopback; no shared SysV IPC.
- `userns`: an unprivileged user namespace without capabilities (and no nested ones).
- `uid`: as root, each sandbox runs as its own unprivileged uid (so RLIMIT_NPROC counts it alone);
  as an ordinary user, as that user (the namespaces still separate it from the user's files).
- `seccomp`: a syscall deny list (`sandbox_seccomp.py`), when libseccomp's bindings are available.
- `disk`: the tmpfs caps what the program can write (`disk_mb`); `output`: more than `max_output`
  bytes on stdout or stderr kills it (nothing beyond is buffered).
- `rlimit`: RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_CORE=0.
- `audit`: a `sys.addaudithook` prelude: an extra layer only (native code or `gc` bypass it).
- always: a wall-clock timeout, a clean environment, `python -I -S -B`.

Without bwrap (or where user namespaces are disabled) `run_python` refuses (`SandboxUnavailable`)
unless the caller opts in to the weaker layers with `SandboxLimits(allow_weak=True)` or
`Q3_SANDBOX_ALLOW_WEAK=1`: then only rlimits, the audit hook and, as root, `unshare` namespaces run.
"""

from __future__ import annotations

import contextlib
import functools
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

from q3.errors import RunFailed
from q3.sandbox_tools import ToolsUnavailable, ensure_tools
from synth.verifiers.sandbox_seccomp import filter_bpf

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
    disk_mb: int = 16           # size of the sandbox's tmpfs (/tmp with the work directory)
    max_output: int = 64_000    # bytes of stdout/stderr; more kills the program (reason output_limit)
    audit_hook: bool = True     # tests turn it off to show the OS layers alone
    seccomp: bool = True        # likewise (the syscall filter; used when libseccomp's bindings are there)
    allow_weak: bool = False    # run without bwrap's isolation when it is unavailable (also Q3_SANDBOX_ALLOW_WEAK=1)


@dataclass
class SandboxResult:
    ok: bool                    # exit code 0 and no limit hit
    reason: str                 # ok | error | timeout | cpu_limit | memory_limit | file_limit | disk_limit
    #                             | output_limit | process_limit | blocked | killed | sandbox_error
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    isolation: list[str] = field(default_factory=list)


class SandboxUnavailable(RunFailed):
    """bwrap's isolation cannot be had here and the caller did not opt in to the weaker layers."""


STRONG = ["mntns", "pidns", "netns", "ipcns", "utsns", "userns", "uid", "seccomp", "disk", "output",
          "rlimit", "audit"]
WORKDIR = "/tmp/q3sbx-work"
UID_BASE = int(os.environ.get("Q3_SANDBOX_UID_BASE", "200000"))   # as root: one uid per sandbox from here
_uid_lock = threading.Lock()
_uid_next = [0]


def _weak_allowed(limits: SandboxLimits) -> bool:
    return limits.allow_weak or os.environ.get("Q3_SANDBOX_ALLOW_WEAK", "") in ("1", "true", "yes")


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str, seccomp_path: str | None) -> str | None:
    """None if bwrap can build the sandbox here (as this uid), else why not."""
    if sys.platform != "linux":
        return "the sandbox needs Linux namespaces"
    try:
        r = subprocess.run([bwrap, *_bwrap_common(16), "--", "/bin/true"], capture_output=True, timeout=20,
                           env={}, preexec_fn=_drop_uid(_sandbox_uid()) if os.geteuid() == 0 else None)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{bwrap}: {e}"
    return None if r.returncode == 0 else f"bwrap failed: {r.stderr.decode(errors='replace').strip()[-300:]}"


def _strong_setup() -> tuple[str, bytes | None, str] | str:
    """(bwrap path, seccomp BPF or None, sandbox python), or why the strong sandbox is unavailable."""
    python = _sandbox_python()
    if python is None:
        return "no Python under /usr to bind into the sandbox"
    try:
        tools = ensure_tools()
    except ToolsUnavailable as e:
        return str(e)
    seccomp = str(tools.seccomp_path) if tools.seccomp_path else None
    why = _probe(str(tools.bwrap), seccomp)
    return why if why else (str(tools.bwrap), filter_bpf(seccomp), python)


def _refusal(why: str) -> SandboxUnavailable:
    return SandboxUnavailable(
        f"refusing to run untrusted code without isolation ({why}); install bubblewrap or let "
        "`python -m q3.sandbox_tools` fetch it, or opt in to the weaker layers with Q3_SANDBOX_ALLOW_WEAK=1")


def isolation_plan(limits: SandboxLimits | None = None) -> list[str]:
    """Which layers `run_python` uses on this machine (raises SandboxUnavailable if it would refuse)."""
    limits = limits or SandboxLimits()
    setup = _strong_setup()
    if isinstance(setup, tuple):
        return _strong_plan(setup[1] is not None, limits)
    if not _weak_allowed(limits):
        raise _refusal(setup)
    weak = ["netns", "pidns", "uid", "rlimit", "audit"] if _can_unshare() and _interpreter(True) else \
        ["rlimit", "audit"]
    return weak if limits.audit_hook else [x for x in weak if x != "audit"]


def _sandbox_uid() -> int:
    with _uid_lock:
        _uid_next[0] += 1
        return UID_BASE + (os.getpid() * 97 + _uid_next[0]) % 60000


def _drop_uid(uid: int):
    def apply() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return apply


def _bwrap_common(disk_mb: int) -> list[str]:
    return ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--hostname", "q3sbx",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--dev", "/dev", "--size", str(1 << 20), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", str(disk_mb << 20), "--tmpfs", "/tmp", "--dir", WORKDIR, "--chdir", WORKDIR,
            "--remount-ro", "/", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", WORKDIR]


def _sandbox_python() -> str | None:
    """A Python under /usr (the only runtime bound into the sandbox): ours if it lives there."""
    for c in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if c.startswith("/usr/") and os.path.exists(c) and _world_executable(c):
            return c
    return None


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "",
               base_dir: str | None = None) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; never raises for anything the code does.
    `stdin` is piped to it; `base_dir` only places the weak mode's host work directory.
    Raises SandboxUnavailable when the isolation cannot be had and weak mode is not allowed."""
    limits = limits or SandboxLimits()
    setup = _strong_setup()
    if isinstance(setup, str):
        if not _weak_allowed(limits):
            raise _refusal(setup)
        return _run_weak(code, limits, stdin, base_dir)
    bwrap, bpf, python = setup
    program = ((_PRELUDE if limits.audit_hook else "") + "\n" + code).encode("utf-8")
    fds = [_memfd("main.py", program)]
    argv = [bwrap, *_bwrap_common(limits.disk_mb), "--file", str(fds[0]), f"{WORKDIR}/main.py"]
    bpf = bpf if limits.seccomp else None
    if bpf:
        fds.append(_memfd("seccomp", bpf))
        argv += ["--seccomp", str(fds[1])]
    argv += ["--", python, "-I", "-S", "-B", "main.py"]
    uid = _sandbox_uid() if os.geteuid() == 0 else None
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env={}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=fds, close_fds=True, cwd="/",
                                preexec_fn=_preexec(limits, root_mode=uid is not None, uid=uid, extra_procs=4))
    finally:
        for fd in fds:
            os.close(fd)
    rc, cpu_used, timed_out, out, err, over = _wait(proc, stdin, limits.wall_s, limits.max_output)
    wall = time.monotonic() - t0
    so = out[: limits.max_output].decode("utf-8", "replace")
    se = err[-limits.max_output:].decode("utf-8", "replace")
    if rc > 128:   # bwrap's pid 1 reports the child's death by signal N as 128+N
        rc = -(rc - 128)
    reason = "output_limit" if over else _classify(rc, se, timed_out, cpu_used, limits)
    if reason == "error" and se.startswith("bwrap:"):
        reason = "sandbox_error"
    return SandboxResult(reason == "ok", reason, rc, so, se, round(wall, 3), _strong_plan(bpf is not None, limits))


def _strong_plan(have_seccomp: bool, limits: SandboxLimits) -> list[str]:
    drop = {"seccomp"} if not (have_seccomp and limits.seccomp) else set()
    drop |= set() if limits.audit_hook else {"audit"}
    drop |= set() if os.geteuid() == 0 else {"uid"}   # unprivileged: the caller's uid, namespaced
    return [x for x in STRONG if x not in drop]


def _world_executable(path: str) -> bool:
    """Can any user execute this file (every parent directory searchable)?"""
    p = Path(path)
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(q.stat().st_mode & stat.S_IXOTH for q in p.parents)
    except OSError:
        return False


# --- the weaker fallback (explicit opt-in only) -------------------------------------------------

def _interpreter(drop_uid: bool) -> str | None:
    """A Python the sandbox user can execute: ours if world-accessible, else a system one."""
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    for c in candidates:
        if os.path.exists(c) and (not drop_uid or _world_executable(c)):
            return c
    return None


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and sys.platform == "linux"


def _run_weak(code: str, limits: SandboxLimits, stdin: str, base_dir: str | None) -> SandboxResult:
    """rlimits + audit hook (+ `unshare` namespaces and uid nobody as root): bypassable, opt-in only."""
    root_mode = _can_unshare() and _interpreter(True) is not None
    python = _interpreter(root_mode)
    if python is None:
        return SandboxResult(False, "no_interpreter", -1, "", "no Python the sandbox user can run", 0.0)
    isolation = isolation_plan(limits)
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
        rc, cpu_used, timed_out, out, err, over = _wait(proc, stdin, limits.wall_s, limits.max_output)
        wall = time.monotonic() - t0
        so = out[: limits.max_output].decode("utf-8", "replace")
        se = err[-limits.max_output:].decode("utf-8", "replace")
        if root_mode and rc > 128:   # `unshare` reports the child's death by signal N as 128+N
            rc = -(rc - 128)
        reason = "output_limit" if over else _classify(rc, se, timed_out, cpu_used, limits)
        return SandboxResult(reason == "ok", reason, rc, so, se, round(wall, 3), isolation)
    finally:
        _force_rmtree(workdir)


def _force_rmtree(path: str) -> None:
    """Remove the work dir even where the program left a `chmod 0` subdirectory."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, d), 0o700)
    shutil.rmtree(path, ignore_errors=True)


# --- shared: limits, waiting, classification -----------------------------------------------------

def _preexec(limits: SandboxLimits, root_mode: bool, uid: int | None = None, extra_procs: int = 0):
    def apply() -> None:
        os.setsid()
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.mem_mb * mb, limits.mem_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_mb * mb, limits.fsize_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # With a uid of its own the limit counts the sandbox alone (plus bwrap's own processes). As an
        # ordinary user it counts all of that user's processes: allow the ones that exist plus `nproc`.
        extra = extra_procs if root_mode else _user_process_count() + extra_procs
        resource.setrlimit(resource.RLIMIT_NPROC, (extra + limits.nproc, extra + limits.nproc))
        if uid is not None:
            _drop_uid(uid)()
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
    if "No space left on device" in stderr:
        return "disk_limit"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory_limit"
    if "BlockingIOError" in stderr and "Resource temporarily unavailable" in stderr:
        return "process_limit"
    if ("PermissionError: sandbox:" in stderr or "PermissionError: [Errno 13]" in stderr
            or "PermissionError: [Errno 1]" in stderr or "Read-only file system" in stderr
            or "Network is unreachable" in stderr or "OSError: [Errno 101]" in stderr):
        return "blocked"
    if timed_out:
        return "timeout"
    if rc < 0 or rc > 128:
        return "killed"
    return "error"


def _wait(proc: subprocess.Popen, stdin: str, wall_s: float, max_output: int
          ) -> tuple[int, float, bool, bytes, bytes, bool]:
    """Feed stdin, collect at most `max_output` bytes per stream (more kills the program: nothing is
    buffered beyond it), and reap the child with wait4 to learn its own CPU time (os.times() would mix
    in other children when several sandboxes run in threads)."""
    chunks: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}
    over = threading.Event()

    def pump(name: str, stream) -> None:
        buf = chunks[name]
        while data := stream.read1(65536):
            buf += data
            if len(buf) > max_output:
                over.set()
                _kill_group(proc.pid)
                if name == "out":
                    del buf[max_output:]
                else:
                    del buf[:-max_output]
                while stream.read1(65536):   # drain until the killed program's pipe closes
                    pass
                return

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
    return (proc.returncode, usage.ru_utime + usage.ru_stime, timed_out and not over.is_set(),
            bytes(chunks["out"]), bytes(chunks["err"]), over.is_set())


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
