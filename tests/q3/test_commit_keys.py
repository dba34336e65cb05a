"""q3.commit: job keys from config + input content + code; skip, or say why a job recomputes."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from q3.atomic import atomic_dir, read_marker
from q3.commit import code_version, commit, git_revision, input_fingerprint, job_key, reuse_if_committed

ROOT = Path(__file__).resolve().parents[2]


def _upstream(path: Path, text: str) -> None:
    with atomic_dir(path, {"stage": "up"}) as tmp:
        (tmp / "kept").mkdir()
        (tmp / "kept" / "part-0.txt").write_text(text)


def test_every_commit_gets_a_fresh_commit_id(tmp_path):
    _upstream(tmp_path / "up", "a")
    first = read_marker(tmp_path / "up")["commit_id"]
    _upstream(tmp_path / "up", "a")              # same files, same bytes: still another commit
    assert read_marker(tmp_path / "up")["commit_id"] != first


def test_committed_input_is_keyed_by_its_commit_not_its_files(tmp_path):
    _upstream(tmp_path / "up", "a")
    kept = tmp_path / "up" / "kept"
    fp = input_fingerprint([kept])
    assert input_fingerprint([kept]) == fp                       # deterministic
    assert input_fingerprint([tmp_path / "up"]) != fp            # another part of the same commit
    _upstream(tmp_path / "up", "a")                              # upstream re-run
    assert input_fingerprint([kept]) != fp


def test_plain_input_is_keyed_by_names_sizes_mtimes(tmp_path):
    d = tmp_path / "raw"
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_text("x\n")
    (d / "sub" / "b.jsonl").write_text("y\n")
    (d / ".a.jsonl.tmp-1").write_text("partial")                # temporaries do not count
    fp = input_fingerprint([d])
    (d / ".a.jsonl.tmp-1").write_text("partial, longer")
    assert input_fingerprint([d]) == fp
    st = (d / "a.jsonl").stat()
    os.utime(d / "a.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert input_fingerprint([d]) != fp                          # touched
    fp = input_fingerprint([d])
    (d / "c.jsonl").write_text("z\n")
    assert input_fingerprint([d]) != fp                          # a new file
    assert input_fingerprint([tmp_path / "nope"]) != input_fingerprint([d])


def test_code_version_is_the_package_version_and_git_head():
    from q3 import __version__

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert git_revision() == head
    assert code_version() == f"{__version__}+{head[:12]}"


def test_skip_or_say_why(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="q3.commit")
    _upstream(tmp_path / "up", "a")
    out = tmp_path / "out"
    key = job_key("demo", {"n": 1}, inputs=[tmp_path / "up" / "kept"])
    assert reuse_if_committed(out, key) is None                  # nothing committed yet
    with commit(out, key, {"docs": 3}) as tmp:
        (tmp / "x").write_text("1")
    marker = read_marker(out)
    assert marker["job_key"]["id"] == key.id and marker["docs"] == 3 and marker["commit_id"]

    caplog.clear()
    assert reuse_if_committed(out, job_key("demo", {"n": 1}, [tmp_path / "up" / "kept"])) == marker
    assert f"{out} is up to date (same config and input); skipping" in caplog.text

    caplog.clear()
    assert reuse_if_committed(out, job_key("demo", {"n": 2}, [tmp_path / "up" / "kept"])) is None
    assert "recomputing (config changed)" in caplog.text

    _upstream(tmp_path / "up", "b")
    caplog.clear()
    assert reuse_if_committed(out, job_key("demo", {"n": 1}, [tmp_path / "up" / "kept"])) is None
    assert "recomputing (input changed)" in caplog.text

    caplog.clear()
    assert reuse_if_committed(out, key, force=True) is None
    assert "force" in caplog.text
