"""run_trainer streams the child's output to its log file (issue 13: parents must not buffer child output)."""

import sys

import pytest

from dataproc.mix.trainer_runs import run_trainer


def test_output_streams_to_the_log_and_a_failure_quotes_its_tail(tmp_path):
    result, log = tmp_path / "result.json", tmp_path / "logs" / "train.log"
    code = ("import json,sys; [print('line', i) for i in range(200000)]; "
            f"json.dump({{'val_loss': 1.5}}, open({str(result)!r}, 'w'))")
    assert run_trainer([sys.executable, "-c", code], result, log) == {"val_loss": 1.5}
    lines = log.read_text().splitlines()
    assert len(lines) == 200000 and lines[-1] == "line 199999"

    boom = "import sys; print('x' * 10000); print('the real error', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError) as err:
        run_trainer([sys.executable, "-c", boom], tmp_path / "none.json", log)
    msg = str(err.value)
    assert "exit 3" in msg and str(log) in msg and msg.endswith("the real error\n") and len(msg) < 3500
