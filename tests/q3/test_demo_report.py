"""The demo report's per-stage summary reads the trainer's eval.jsonl, including after a rerun
(a resumed, already finished stage appends a row with only "end")."""

import json

from q3.demo_report import _eval


def test_stage_summary_first_start_last_end(tmp_path):
    rows = [{"step": 30, "start": 11.9391, "end": 8.9472}, {"step": 30, "end": 8.9470}]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _eval(tmp_path) == "held-out loss 11.939 -> 8.947 after 30 steps"


def test_stage_summary_empty_when_no_eval(tmp_path):
    assert _eval(tmp_path) == ""
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 3, "end": 9.0}) + "\n")
    assert _eval(tmp_path) == ""
