"""Child processes the project starts and must stop (servers behind a step or a test)."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen, timeout: float = 30) -> int | None:
    """SIGTERM (a clean shutdown: servers exit 0 on it), then SIGKILL after `timeout` seconds;
    returns the exit code. A process that already ended is left as it is."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
