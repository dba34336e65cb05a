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

    On failure the full output goes to `log_file` and the error names it (no lost diagnostics)."""
    log.info("trainer run: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(proc.stdout + proc.stderr)
        raise RuntimeError(f"trainer run failed (exit {proc.returncode}; full log {log_file}): "
                           f"{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    if not result_file.is_file():
        raise RuntimeError(f"trainer run wrote no {result_file}; it must write {{{key!r}: loss}}")
    result = json.loads(result_file.read_text())
    if key not in result:
        raise RuntimeError(f"{result_file} has no {key!r} (keys: {sorted(result)}); "
                           "set validation=[...] and a split with a valid share")
    return result
