"""q3/log.py: quiet third-party logs, wide tables and few-line progress when the output is a file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _py(code: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("Q3_VERBOSE", "Q3_PROGRESS")}
    e.update(PYTHONPATH=str(ROOT), **env)
    # stdout/stderr are pipes, as in a log file
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=300)


MEGATRON = ("import train, logging\nfrom q3.log import get_logger\nget_logger('x')\n"
            "import megatron.core.optimizer, megatron.core.models.gpt.gpt_layer_specs\n"
            "logging.getLogger('megatron.core.distributed.param_and_grad_buffer').info('Params for bucket 1')\n")


def test_megatron_info_and_te_apex_warnings_quiet_unless_verbose():
    quiet = _py(MEGATRON)
    assert quiet.returncode == 0, quiet.stderr
    assert "Apex" not in quiet.stderr and "Params for bucket" not in quiet.stderr, quiet.stderr
    loud = _py(MEGATRON, Q3_VERBOSE="1")
    assert "Apex is not installed" in loud.stderr and "Params for bucket 1" in loud.stderr, loud.stderr
    # our own warnings and megatron's WARNINGs still show
    p = _py("import q3.log, logging, warnings\nlogging.basicConfig()\n"
            "logging.getLogger('megatron.core.x').warning('real megatron warning')\n"
            "warnings.warn('a warning of ours')\n")
    assert "real megatron warning" in p.stderr and "a warning of ours" in p.stderr


def test_set_verbose_levels():
    from q3.log import set_verbose

    try:
        set_verbose(True)       # megatron's loggers follow the root logger (INFO for q3 verbs)
        assert logging.getLogger("megatron").level == logging.NOTSET and os.environ["Q3_VERBOSE"] == "1"
        set_verbose(False)
        assert logging.getLogger("megatron.core.optimizer").getEffectiveLevel() == logging.WARNING
    finally:
        os.environ.pop("Q3_VERBOSE", None)


def test_table_is_not_cut_at_80_columns_in_a_file():
    p = _py("from q3.log import print_table\n"
            "print_table('LLM client', ['requests', 'sent', 'retries', 'cache hits', 'prompt tok', 'completion tok',"
            " 'cost', 'seconds', 'a long column name'], [[3000, 3000, 0, 0, 2144123, 40721, 0, 15.4, 'x' * 30]])\n")
    assert p.returncode == 0, p.stderr
    assert "2,144,123" in p.stdout and "completion tok" in p.stdout and "…" not in p.stdout, p.stdout
    assert max(len(line) for line in p.stdout.splitlines()) > 80


def test_progress_in_a_file_is_a_few_lines():
    p = _py("import time\nfrom q3.log import progress\n"
            "for i in progress(range(1000), 'docs', unit='doc'):\n    pass\n", Q3_PROGRESS="1")
    lines = [x for x in p.stderr.splitlines() if "docs:" in x]
    assert 1 <= len(lines) <= 11, p.stderr             # at most every 10% and the final line
    assert "1,000/1,000 doc (100%)" in lines[-1] and "\r" not in p.stderr
    silent = _py("from q3.log import progress\nfor i in progress(range(50), 'docs'):\n    pass\n", Q3_PROGRESS="0")
    assert "docs" not in silent.stderr


def test_progress_logs_every_interval_without_total(caplog):
    from q3.log import Progress

    caplog.set_level(logging.INFO, logger="q3.progress")
    os.environ["Q3_PROGRESS"] = "1"
    try:
        p = Progress("requests", None, "req", interval=0.0, tty=False)
        for _ in range(3):
            p.update()
        p.close()
    finally:
        os.environ["Q3_PROGRESS"] = "0"
    assert p.lines == 3 and "requests: 3 req" in caplog.records[-1].getMessage()   # no repeated final line


def test_progress_by_time_only_and_quiet_for_short_work(caplog):
    from q3.log import Progress

    caplog.set_level(logging.INFO, logger="q3.progress")
    os.environ["Q3_PROGRESS"] = "1"
    try:
        short = Progress("batch", 10, "req", interval=60, tty=False, pct_step=None, quiet_s=60)
        for _ in range(10):
            short.update()
        short.close()
        by_time = Progress("batch", 10, "req", interval=0.0, tty=False, pct_step=None, quiet_s=60)
        for _ in range(10):
            by_time.update()
        by_time.close()
    finally:
        os.environ["Q3_PROGRESS"] = "0"
    assert short.lines == 0                              # finished fast: no line at all
    assert by_time.lines == 10 and "10/10 req (100%)" in caplog.records[-1].getMessage()
