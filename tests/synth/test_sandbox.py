"""The code sandbox contains hostile programs, says why, and the host survives them."""

import os
import socket
import threading
from pathlib import Path

from synth.verifiers.sandbox import SandboxLimits, isolation_plan, run_python

# small limits keep the tests fast and harmless; a generous wall clock because the CI machine is shared
FAST = SandboxLimits(cpu_s=2, wall_s=20, mem_mb=256, nproc=8, fsize_mb=1)


def test_plain_program_runs_with_clean_environment_and_throwaway_dir():
    os.environ["Q3_SANDBOX_SECRET"] = "parent-secret"
    try:
        r = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nopen('x.txt','w').write('ok')",
                       FAST)
    finally:
        del os.environ["Q3_SANDBOX_SECRET"]
    assert r.ok and r.reason == "ok", r
    env_keys, cwd = r.stdout.splitlines()
    assert "Q3_SANDBOX_SECRET" not in env_keys and set(eval(env_keys)) <= {"PATH", "LANG", "HOME", "LC_CTYPE", "PWD"}
    assert "q3sbx-" in cwd and not Path(cwd).exists()   # the working directory is gone afterwards


def test_fork_bomb_is_contained():
    r = run_python("import os\nwhile True:\n    os.fork()", FAST)
    assert not r.ok and r.reason in ("process_limit", "timeout", "killed"), r
    # nothing of it survives: no process still runs the bomb's program
    assert not _sandbox_processes()


def _sandbox_processes():
    import psutil
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        if (p.info["cmdline"] or [])[-1:] == ["main.py"] and "q3sbx-" in (p.info["cwd"] or ""):
            out.append(p.pid)
    return out


def test_infinite_loop_hits_cpu_limit():
    # a generous wall clock so the CPU limit (2 s of CPU) fires first even on a busy machine
    r = run_python("while True:\n    pass", SandboxLimits(cpu_s=2, wall_s=60))
    assert r.reason == "cpu_limit", r
    assert r.wall_s < 60


def test_sleeping_program_hits_wall_clock_timeout():
    r = run_python("import time\ntime.sleep(60)", SandboxLimits(wall_s=1.5))
    assert r.reason == "timeout" and r.wall_s < 5, r


def test_memory_bomb_hits_address_space_limit():
    r = run_python("x = []\nwhile True:\n    x.append(bytearray(50 * 1024 * 1024))", FAST)
    assert r.reason == "memory_limit", r


def test_network_connection_is_refused():
    # a real listening socket on the host: the sandbox must not reach it
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    accepted = []
    srv.settimeout(1.5)
    t = threading.Thread(target=lambda: accepted.append(_accept(srv)), daemon=True)
    t.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
    r = run_python(code, FAST)
    t.join(4)
    srv.close()
    assert r.reason == "blocked" and "connected" not in r.stdout, r
    assert accepted == [None]


def _accept(srv):
    try:
        conn, _ = srv.accept()
        conn.close()
        return "connected"
    except OSError:
        return None


def test_network_blocked_by_seccomp_and_by_namespace_alone():
    # the syscall filter refuses the socket itself; without it (and without the hook) the network
    # namespace has no route to the host's 127.0.0.1 listeners
    r = run_python("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)",
                   SandboxLimits(audit_hook=False))
    assert r.reason == "blocked" and "PermissionError: [Errno 1]" in r.stderr and "seccomp" in r.isolation, r
    r = run_python("import socket\nsocket.create_connection(('10.0.0.1', 22), timeout=2)",
                   SandboxLimits(audit_hook=False, seccomp=False))
    assert r.reason == "blocked" and "Network is unreachable" in r.stderr, r
    assert "netns" in r.isolation and "seccomp" not in r.isolation


def test_writing_outside_working_directory_is_refused(tmp_path):
    target = tmp_path / "escape.txt"
    os.chmod(tmp_path, 0o777)   # even a world-writable place is refused
    r = run_python(f"open({str(target)!r}, 'w').write('pwned')", FAST)
    assert r.reason == "blocked" and not target.exists(), r
    r = run_python("import os\nos.remove('/etc/hostname')", FAST)
    assert r.reason == "blocked" and Path("/etc/hostname").exists(), r


def test_file_size_limit():
    r = run_python("open('big.bin', 'wb').write(b'x' * 5_000_000)", FAST)
    assert r.reason == "file_limit", r


def test_reading_parent_environment_is_refused():
    os.environ["Q3_SANDBOX_SECRET"] = "parent-secret"
    try:
        code = ("import os\nprint(os.environ.get('Q3_SANDBOX_SECRET'))\n"
                f"print(open('/proc/{os.getpid()}/environ', 'rb').read())")
        r = run_python(code, FAST)
    finally:
        del os.environ["Q3_SANDBOX_SECRET"]
    assert "parent-secret" not in r.stdout and r.stdout.splitlines()[0] == "None"
    assert r.reason == "blocked", r


def test_host_survives_everything_in_parallel():
    from concurrent.futures import ThreadPoolExecutor
    progs = ["while True: pass", "x = bytearray(10**9)", "print('fine')", "import os\nos.fork(); os.fork()"]
    with ThreadPoolExecutor(4) as ex:
        res = list(ex.map(lambda c: run_python(c, FAST), progs))
    assert res[0].reason in ("cpu_limit", "timeout") and [r.reason for r in res][1:3] == ["memory_limit", "ok"]
    assert all(r.isolation == isolation_plan() for r in res)
