"""Issue 13's escape payloads, each contained as root and as an unprivileged user (uid 65534).

Payloads run with the audit hook OFF: the OS layers (namespaces, seccomp, rlimits, tmpfs caps) must
contain them alone. The one payload that neutralises the hook runs with it on. Network payloads also
run with seccomp off, to show the network namespace holds by itself. Every test asserts on the host
side (the listener got nothing, the file is not there, no process survived), not only on what the
sandboxed program says.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from synth.generators.code_gen import TASKS
from synth.verifiers import sandbox as sbx
from synth.verifiers.code import run_tests
from synth.verifiers.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_python

NOHOOK = SandboxLimits(audit_hook=False, wall_s=20)
BARE_NET = SandboxLimits(audit_hook=False, seccomp=False, wall_s=20)   # the network namespace alone
USERS = ["root", "nobody"]
SECRET = "q3-parent-secret-4711"
CODE_GEN = Path(__file__).resolve().parents[2] / "synth" / "generators" / "code_gen.py"


@pytest.fixture(scope="module", autouse=True)
def _tools_and_secret():
    assert os.geteuid() == 0, "these tests switch to uid 65534: run them as root (CI does)"
    assert sbx.isolation_plan()[0] == "mntns"   # fetches bwrap once, as root, before any uid switch
    os.environ["Q3_SANDBOX_SECRET"] = SECRET
    yield
    del os.environ["Q3_SANDBOX_SECRET"]


def as_user(user: str, fn):
    """fn() as root, or in a forked child that dropped to uid/gid 65534 first (the sandbox entry
    point then runs unprivileged: bwrap in an unprivileged user namespace). fn returns JSON-able data."""
    if user == "root":
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sbx._probe.cache_clear()   # probe bwrap again as this user
            data = json.dumps(fn()).encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
            code = 0
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            with os.fdopen(w, "wb") as f:
                f.write(json.dumps({"child_error": repr(e)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = json.loads(f.read() or b"null")
    os.waitpid(pid, 0)
    assert not (isinstance(data, dict) and "child_error" in data), data
    return data


def run_as(user: str, code: str, limits: SandboxLimits = NOHOOK) -> SandboxResult:
    return SandboxResult(**as_user(user, lambda: asdict(run_python(code, limits))))


class Listener:
    """A real TCP or UDP listener on the host's 127.0.0.1 that records whatever reaches it."""

    def __init__(self, udp: bool = False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[str] = []
        self.udp, self.stop = udp, threading.Event()
        if not udp:
            self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                if self.udp:
                    self.got.append(self.sock.recvfrom(4096)[0].decode(errors="replace"))
                else:
                    conn, _ = self.sock.accept()
                    self.got.append("connection")
                    conn.close()
            except OSError:
                pass

    def close(self) -> list[str]:
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        return self.got


@pytest.mark.parametrize("user", USERS)
def test_proc_dir_fd_cannot_read_parent_environment(user):
    code = ("import os\n"
            "d = os.open('/proc', 0)\n"
            "print(os.read(os.open('%d/environ' % os.getppid(), 0, dir_fd=d), 99999))\n")
    r = run_as(user, code)
    assert SECRET not in r.stdout + r.stderr and not r.ok, r
    assert "FileNotFoundError" in r.stderr, r   # there is no /proc in the sandbox at all
    assert "mntns" in r.isolation and "seccomp" in r.isolation and ("uid" in r.isolation) == (user == "root")


@pytest.mark.parametrize("user", USERS)
def test_dir_fd_cannot_write_outside_the_work_directory(user, tmp_path):
    host_dir = tmp_path / "open"
    host_dir.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(host_dir, 0o777)   # even a world-writable host directory
    code = ("import os\nhits = []\n"
            f"for target in ({str(host_dir)!r}, '/usr', '/'):\n"
            "    try:\n"
            "        d = os.open(target, os.O_RDONLY)\n"
            "        fd = os.open('q3-escape', os.O_CREAT | os.O_WRONLY, dir_fd=d)\n"
            "        os.write(fd, b'pwned'); hits.append(target)\n"
            "    except OSError as e:\n"
            "        print(target, type(e).__name__)\n"
            "print('hits', hits)\n")
    r = run_as(user, code)
    assert r.ok and "hits []" in r.stdout, r
    assert not (host_dir / "q3-escape").exists() and not Path("/usr/q3-escape").exists()
    assert not Path("/q3-escape").exists()


@pytest.mark.parametrize("user", USERS)
def test_started_programs_cannot_reach_a_host_listener(user):
    lst = Listener()
    probe = (f"/usr/bin/python3 -c \"import socket; print('child-ran', flush=True); "
             f"socket.create_connection(('127.0.0.1', {lst.port}), timeout=2)\"")
    code = ("import os, subprocess, sys\n"
            f"os.system({probe!r})\n"
            f"__import__('posix').system({probe!r})\n"
            f"subprocess.run({probe!r}, shell=True)\n"
            "sys.stdout.flush()\n"
            f"os.execv('/bin/sh', ['sh', '-c', {probe!r}])\n")
    try:
        r = run_as(user, code, BARE_NET)
    finally:
        got = lst.close()
    assert got == [], r
    assert r.stdout.count("child-ran") == 4, r   # the programs ran: the network namespace stopped them
    assert r.stderr.count("ConnectionRefusedError") == 4, r   # its own, empty loopback


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("limits", [NOHOOK, BARE_NET], ids=["seccomp", "netns-only"])
def test_udp_sendmsg_does_not_reach_the_host(user, limits):
    lst = Listener(udp=True)
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendmsg([b'leak-sendmsg'], [], 0, ('127.0.0.1', {lst.port}))\n"
            f"s.sendto(b'leak-sendto', ('127.0.0.1', {lst.port}))\n"
            "print('sent')\n")
    try:
        r = run_as(user, code, limits)
    finally:
        got = lst.close()
    assert got == [], r
    if limits.seccomp:
        assert r.reason == "blocked" and "PermissionError: [Errno 1]" in r.stderr, r   # socket() refused
    else:
        assert "sent" in r.stdout, r   # delivered to the sandbox's own loopback only


@pytest.mark.parametrize("user", USERS)
def test_neutralised_audit_hook_gains_nothing(user):
    lst = Listener()
    code = ("import gc, os\n"
            "for o in gc.get_objects():\n"
            "    if callable(o) and getattr(o, '__name__', '') == '_q3_guard':\n"
            "        o.__code__ = (lambda *a, **k: None).__code__\n"
            "        print('hook neutralised', flush=True)\n"
            "for p in ('/proc/%d/environ' % os.getppid(), '/proc/1/environ', '/etc/passwd', "
            f"{str(CODE_GEN)!r}):\n"
            "    try:\n"
            "        print(open(p, 'rb').read()[:200])\n"
            "    except OSError as e:\n"
            "        print(p, type(e).__name__)\n"
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {lst.port}), timeout=2)\n")
    try:
        r = run_as(user, code, SandboxLimits(wall_s=20))   # audit hook on
    finally:
        got = lst.close()
    assert "hook neutralised" in r.stdout, r   # the bypass works: the hook is no barrier
    assert got == [] and SECRET not in r.stdout and "root:" not in r.stdout and "CodeTask" not in r.stdout, r
    assert r.stdout.count("FileNotFoundError") == 4 and "audit" in r.isolation, r


@pytest.mark.parametrize("user", USERS)
def test_proc_self_mem_cannot_be_opened(user):
    r = run_as(user, "open('/proc/self/mem', 'r+b')")
    assert not r.ok and "FileNotFoundError" in r.stderr, r


@pytest.mark.parametrize("user", USERS)
def test_host_and_project_files_are_not_on_the_sandbox_filesystem(user):
    code = ("import os\n"
            f"for p in ('/etc/passwd', '/etc/shadow', {str(CODE_GEN)!r}, '/root', '/work', '/home', '/var'):\n"
            "    try:\n"
            "        print(p, 'READ', (os.listdir(p) if os.path.isdir(p) else open(p).read(50)))\n"
            "    except OSError as e:\n"
            "        print(p, type(e).__name__)\n"
            "print(sorted(os.listdir('/')))\n")
    r = run_as(user, code)
    assert r.ok and " READ " not in r.stdout, r
    assert r.stdout.splitlines()[-1] == str(["bin", "dev", "etc", "lib", "lib64", "tmp", "usr"]), r


@pytest.mark.parametrize("user", USERS)
def test_reference_solutions_cannot_be_loaded_by_a_submission(user):
    task = TASKS[0]
    ref = task.fn()
    inputs = [[[3, 6, 7, -9, 12], 3], [[], 3], [[-6, -3, 4], 3], [[1, 2, 3, 4], 2], [[5, 10, 11], 5],
              [[7, 14, 21], 7], [[1, 1, 1], 1], [[2, 4, 5], 4]]
    tests = [{"input": i, "output": ref(*i)} for i in inputs]
    loader = ("import re, ast\n"
              f"src = open({str(CODE_GEN)!r}).read()\n"
              "lit = re.search(r'^\\s+(\"def sum_multiples\\(xs, k\\):.*?\"),\\n', src, re.M).group(1)\n"
              "exec(ast.literal_eval(lit))\n")
    ns: dict = {}
    exec(loader, ns)   # outside the sandbox the loader does get the reference (the control)
    assert all(ns["sum_multiples"](*t["input"]) == t["output"] for t in tests)
    passed, total, reason, detail = as_user(user, lambda: list(run_tests(loader, "sum_multiples", tests)))
    assert (passed, total) == (0, 8) and "FileNotFoundError" in detail, (reason, detail)
    passed, _, _, _ = as_user(user, lambda: list(run_tests(task.reference, "sum_multiples", tests)))
    assert passed == 8   # an honest solution still passes in the same sandbox


@pytest.mark.parametrize("user", USERS)
def test_concurrent_sandboxes_cannot_see_each_other(user):
    writer = ("import os, time\n"
              "open('a-secret.txt', 'w').write('A')\nos.makedirs('/dev/shm/a', exist_ok=True)\n"
              "time.sleep(3)\nprint(open('a-secret.txt').read())\n")
    snooper = ("import os, time\ntime.sleep(1)\nseen = []\n"
               "for top in ('/tmp', '/dev/shm', '/'):\n"
               "    for d, dirs, files in os.walk(top):\n"
               "        if d.startswith('/usr'):\n"
               "            dirs[:] = []\n"
               "        seen += [os.path.join(d, f) for f in dirs + files]\n"
               "print(sorted(set(seen)))\n"
               "open('a-secret.txt', 'w').write('B')\n")

    def both():
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as ex:
            a, b = ex.map(lambda c: asdict(run_python(c, NOHOOK)), [writer, snooper])
        return [a, b]

    a, b = (SandboxResult(**x) for x in as_user(user, both))
    assert a.ok and a.stdout.strip() == "A", a   # B's write went to B's own directory
    assert b.ok and "a-secret" not in b.stdout and "/dev/shm/a" not in b.stdout, b


@pytest.mark.parametrize("user", USERS)
def test_fork_setsid_child_does_not_survive(user):
    token = f"{os.getpid() % 1000}.{int(time.time() * 1000) % 100000}"   # a unique sleep length
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    os.execv('/usr/bin/sleep', ['sleep', {token!r}])\n"
            "time.sleep(0.3)\nprint('parent exits')\n")
    r = run_as(user, code)
    assert r.ok and "parent exits" in r.stdout, r
    time.sleep(0.3)
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", token]]
    assert left == [], f"the setsid'd child survived: {left}"


@pytest.mark.parametrize("user", USERS)
def test_a_gigabyte_on_stdout_is_cut_off(user):
    code = ("import sys\nb = b'x' * (1 << 20)\n"
            "for _ in range(1024):\n    sys.stdout.buffer.write(b)\n")
    r = run_as(user, code, SandboxLimits(audit_hook=False, wall_s=20, max_output=100_000))
    assert r.reason == "output_limit" and len(r.stdout) == 100_000 and r.wall_s < 15, (r.reason, r.wall_s)


@pytest.mark.parametrize("user", USERS)
def test_disk_use_is_capped(user):
    code = ("import os\n"
            "for where in ('.', '/dev/shm'):\n"
            "    n = 0\n"
            "    try:\n"
            "        while n < 100:\n"
            "            open(f'{where}/f{n}', 'wb').write(b'x' * 900_000); n += 1\n"
            "    except OSError as e:\n"
            "        print(where, n, e.strerror)\n")
    r = run_as(user, code, SandboxLimits(audit_hook=False, wall_s=20, disk_mb=8))
    lines = dict((ln.split(" ", 1)[0], ln) for ln in r.stdout.splitlines())
    assert "No space left on device" in lines["."] and int(lines["."].split()[1]) <= 9, r
    assert "No space left on device" in lines["/dev/shm"] and int(lines["/dev/shm"].split()[1]) <= 1, r


@pytest.mark.parametrize("user", USERS)
def test_chmod_0_subdirectory_leaves_nothing_behind(user):
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("q3sbx-*"))
    code = "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\nos.chmod('a', 0)\nprint('done')"
    r = run_as(user, code)
    assert r.ok and "done" in r.stdout, r
    assert set(tmp.glob("q3sbx-*")) - before == set()


def test_refuses_without_isolation_unless_opted_in(monkeypatch):
    monkeypatch.setenv("Q3_SANDBOX_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="refusing to run untrusted code without isolation"):
        run_python("print('hi')")
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("q3sbx-*"))
    r = run_python("import os\nos.makedirs('a/b')\nos.chmod('a', 0)\nprint('weak')", SandboxLimits(allow_weak=True))
    assert r.ok and "weak" in r.stdout and "mntns" not in r.isolation and "rlimit" in r.isolation, r
    assert set(tmp.glob("q3sbx-*")) - before == set()   # the weak path removes a chmod 0 dir too
    monkeypatch.setenv("Q3_SANDBOX_ALLOW_WEAK", "1")
    assert run_python("print('env opt-in')").stdout.strip() == "env opt-in"
