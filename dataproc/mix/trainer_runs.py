"""Run the trainer (`q3 train pretrain`) as a subprocess and read its `result.json`.

Used by `q3 mix optimize` (RegMix proxies) and `q3 mix sweep` (scaling-law grid). dataproc never
imports train/: the trainer is reached through its command line only, so the mixing tools run
wherever the trainer runs (or against any command that writes the same result file).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from q3.log import get_logger

log = get_logger(__name__)


def run_trainer(cmd: list[str], result_file: Path, log_file: Path, key: str = "val_loss") -> dict:
    """Run `cmd`; return the JSON it left in `result_file`, which must hold `key`.

    The child's output streams into `log_file` (never held in memory: a trainer run can print for
    hours); on failure the error names the file and quotes its tail."""
    log.info("trainer run: %s (log %s)", " ".join(cmd), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"trainer run failed (exit {code}; full log {log_file}): "
                           f"{' '.join(cmd)}\n{_tail(log_file)}")
    if not result_file.is_file():
        raise RuntimeError(f"trainer run wrote no {result_file}; it must write {{{key!r}: loss}}")
    result = json.loads(result_file.read_text())
    if key not in result:
        raise RuntimeError(f"{result_file} has no {key!r} (keys: {sorted(result)}); "
                           "set validation=[...] and a split with a valid share")
    return result


def _tail(path: Path, limit: int = 3000) -> str:
    """The last `limit` bytes of `path`, decoded leniently."""
    with open(path, "rb") as fh:
        fh.seek(max(0, fh.seek(0, 2) - limit))
        return fh.read().decode("utf-8", "replace")
