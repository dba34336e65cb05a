"""Exit codes tell the truth and user errors are one line (issue 14): each repro of the issue runs
the real `q3` command line in a child process; the rule lives in q3/errors.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def q3(*args: str, tmp: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_DATA": str(tmp / "data"), "Q3_PROGRESS": "0",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "q3.cli", *args], capture_output=True, text=True,
                          cwd=tmp, env=env, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    """The last stderr line is the message; there is no traceback anywhere."""
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


def main_in_child(argv: list[str], modules: list[str]) -> subprocess.CompletedProcess:
    """`q3 <argv>` in a fresh interpreter; stdout: its exit code, then whether each module got imported."""
    code = (f"import sys; from q3.cli import main; rc = main({argv!r}); "
            f"print(rc, *[m in sys.modules for m in {modules!r}])")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once (a dead endpoint)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def docs_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    with p.open("w") as f:
        for i in range(12):
            f.write(json.dumps({"text": f"Document {i}. " + "A sentence about foxes and dogs. " * (4 + i),
                                "lang_hint": "eng_Latn", "source": "t"}) + "\n")
    return p


# ---- exit 1: the run produced nothing useful ------------------------------------------------------


def test_label_judge_dead_endpoint_then_train_zero_classifiers(tmp_path, docs_jsonl):
    work = tmp_path / "lab"
    judge = ["label", "judge", f"input={docs_jsonl}", f"output={work}", "judge.sample_size=4",
             f"endpoint.base_url=http://127.0.0.1:{closed_port()}/v1", "endpoint.model=x",
             "endpoint.max_retries=0", "dimensions=[edu]"]
    msg = one_line_error(q3(*judge, tmp=tmp_path), 1)
    assert msg.startswith("q3 label judge: 0 of 4 judgements valid") and "connection" in msg.lower()
    assert "allow_empty=true" in msg
    assert not (work / "judgements" / "_Q3_SUCCESS").exists()          # nothing committed

    r = q3(*judge, "allow_empty=true", tmp=tmp_path)                     # accepted on request
    assert r.returncode == 0 and (work / "judgements" / "_Q3_SUCCESS").exists()
    msg = one_line_error(q3("label", "train", f"output={work}", "dimensions=[edu]", tmp=tmp_path), 1)
    assert msg.startswith("q3 label train: 0 classifiers trained") and "min_examples" in msg
    assert not (work / "models" / "_Q3_SUCCESS").exists()


def test_data_run_random_bytes_exits_1(tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(bytes(range(256)) * 8 + b"\n{not json\n")
    r = q3("data", "run", f"input={junk}", "runner=local", f"output={tmp_path / 'out'}", tmp=tmp_path)
    msg = one_line_error(r, 1)
    assert "every input row was rejected at read" in msg and "malformed_json" in msg
    ok = q3("data", "run", f"input={junk}", "runner=local", f"output={tmp_path / 'out'}", "allow_empty=true",
            tmp=tmp_path)
    assert ok.returncode == 0 and "allow_empty=true: not a failure" in ok.stderr


def test_text_field_named_otherwise_says_which_fields(tmp_path):
    src = tmp_path / "content.jsonl"
    src.write_text(json.dumps({"id": "a", "content": "Some long enough text in a field named content."}) + "\n")
    msg = one_line_error(q3("data", "run", f"input={src}", "runner=local", f"output={tmp_path / 'o'}",
                            tmp=tmp_path), 1)
    assert "missing_text" in msg and "fields: id, content" in msg and "text_field" in msg
    # the list form with text_field= is the fix the message names
    r = q3("data", "run", f"input=[{{path: '{src}', text_field: content}}]", "runner=local",
           f"output={tmp_path / 'o2'}", tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    # the labeling and synth readers say the same
    for verb in (("label", "judge"), ("synth", "run")):
        msg = one_line_error(q3(*verb, f"input={src}", tmp=tmp_path), 2)
        assert f"{src}:1" in msg and "fields: id, content" in msg


# ---- exit 2: usage errors are one line, and fast -----------------------------------------------------


def test_missing_inputs_are_one_line(tmp_path):
    msg = one_line_error(q3("data", "dedup", "input=/nonexistent", tmp=tmp_path), 2)
    assert msg == ("q3 data dedup: input=/nonexistent: no such file or directory; kept documents: the Parquet "
                   "output of `q3 data run` (<output>/kept)")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    msg = one_line_error(q3("synth", "run", f"input={bad}", tmp=tmp_path), 2)
    assert f"{bad}:2: not JSON" in msg
    msg = one_line_error(q3("label", "run", f"output={tmp_path / 'none'}", tmp=tmp_path), 2)
    assert "run `q3 label train` first" in msg


def test_pretrain_bad_manifest_fails_before_torch(tmp_path):
    """The path is checked before megatron (and torch) are imported: a second, not 15."""
    r = main_in_child(["train", "pretrain", "manifest=/nope.yaml"], ["torch", "megatron.core"])
    assert r.stdout.split() == ["2", "False", "False"], (r.stdout, r.stderr)
    assert r.stderr.strip() == ("q3 train pretrain: manifest=/nope.yaml: no such file or directory; a stage "
                                "manifest YAML (`q3 mix build` writes them)")


def test_generate_values_checked(tmp_path):
    msg = one_line_error(q3("train", "generate", "load=/x", "max_tokens=-3", tmp=tmp_path), 2)
    assert "max_tokens: Input should be greater than or equal to 1; got -3" in msg
    msg = one_line_error(q3("train", "generate", "load=/nope", tmp=tmp_path), 2)
    assert "load=/nope: no such file or directory" in msg


def test_serve_bad_load_fails_before_torch(tmp_path):
    r = main_in_child(["serve", "load=/nope"], ["torch"])
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr)
    assert r.stderr.startswith("q3 serve: load=/nope: no such file or directory")
