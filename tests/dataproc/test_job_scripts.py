"""Every Spark job file runs as a plain script, as spark-submit runs it (its folder first on sys.path)."""

import subprocess
import sys
from pathlib import Path

import pytest

from q3.paths import ROOT

JOBS = sorted(p for p in (ROOT / "dataproc" / "jobs").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_script_help_and_bad_argument(job: Path):
    ok = subprocess.run([sys.executable, str(job), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip()
    bad = subprocess.run([sys.executable, str(job), "not-an-override"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "key=value" in bad.stderr
