"""`q3 demo` is resumable: a finished step leaves a marker a rerun honours, a failed step stops
the chain with exit 1 and a report naming it and its log, `fresh=true` starts over. Real `q3 demo`
processes on its two cheapest real steps (`q3 synth verifiable`, `q3 post prepare`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from q3.demo import DemoConfig, build_steps, done_marker

ROOT = Path(__file__).resolve().parents[2]
CHEAP = "only=[rl-pairs,post-data]"


def demo(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "q3.cli", "demo", f"out={tmp / 'out'}", f"data={tmp / 'data'}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def rows(tmp: Path) -> dict[str, dict]:
    return {r["step"]: r for r in json.loads((tmp / "out" / "report.json").read_text())["rows"]}


def test_rerun_skips_done_steps_and_continues(tmp_path):
    p = demo(tmp_path, "only=[rl-pairs]")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    marker = json.loads((tmp_path / "out" / "steps" / "rl-pairs.json").read_text())
    assert marker["rc"] == 0 and marker["seconds"] > 0 and marker["figures"] == "200 query-verifier pairs"
    assert marker["finished_at"] and marker["data"] == str(tmp_path / "data")
    log = tmp_path / "out" / "logs" / "rl-pairs.log"
    first_log = log.read_text()

    p = demo(tmp_path, CHEAP)                      # rl-pairs is done: only post-data runs
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = rows(tmp_path)
    assert r["rl-pairs"]["status"] == "done earlier" and r["rl-pairs"]["seconds"] == marker["seconds"]
    assert r["rl-pairs"]["result"] == "200 query-verifier pairs"
    assert r["post-data"]["status"] == "ok" and "held-out pairs" in r["post-data"]["result"]
    assert r["s1"]["status"] == "skipped"
    assert log.read_text() == first_log           # not run again
    assert (tmp_path / "out" / "steps" / "post-data.json").exists()
    assert "| rl-pairs |" in (tmp_path / "out" / "REPORT.md").read_text()

    p = demo(tmp_path, "only=[rl-pairs]", "fresh=true")   # starts over: markers gone, the step runs again
    assert p.returncode == 0
    assert rows(tmp_path)["rl-pairs"]["status"] == "ok"
    assert not (tmp_path / "out" / "steps" / "post-data.json").exists()


def test_failed_step_stops_the_chain(tmp_path):
    # post-data without rl-pairs: `q3 post prepare` finds no pairs file and exits 2
    p = demo(tmp_path, "only=[post-data,decontam]")
    assert p.returncode == 1
    r = rows(tmp_path)
    assert r["post-data"]["status"] == "FAILED (rc=2)" and r["decontam"]["status"] == "not run"
    log = tmp_path / "out" / "logs" / "post-data.log"
    assert r["post-data"]["log"] == str(log) and "pairs" in log.read_text()
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert f"Step `post-data` FAILED (rc=2); its log: `{log}`" in report
    assert not (tmp_path / "out" / "steps" / "post-data.json").exists()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["failed"][0]["step"] == "post-data"

    p = demo(tmp_path, CHEAP)                      # the failed step is the first unfinished one: it runs
    assert p.returncode == 0, p.stdout[-3000:]
    assert rows(tmp_path)["post-data"]["status"] == "ok"


def test_unknown_step_is_a_one_line_error(tmp_path):
    p = demo(tmp_path, "skip=[cold_start]")
    assert p.returncode == 2 and "unknown demo step(s) ['cold_start']" in p.stderr
    assert "Traceback" not in p.stderr


def test_marker_of_other_data_folder_is_not_trusted(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    step = build_steps(DemoConfig(), data, out)[0]
    from q3.demo import write_marker

    write_marker(out, data, step, 1.5, "x")
    assert done_marker(out, data, step.name)["seconds"] == 1.5
    assert done_marker(out, tmp_path / "other", step.name) is None
    (out / "steps" / f"{step.name}.json").write_text("{broken")
    assert done_marker(out, data, step.name) is None


def test_chain_order_follows_the_report():
    names = [s.name for s in build_steps(DemoConfig(), Path("d"), Path("o"))]
    order = ["pipeline", "dedup", "decontam", "label", "tokenize", "s1", "s2", "s3", "cold-start", "grpo", "fusion",
             "rl", "export", "post-eval", "serve", "synth", "distill-off", "distill-on", "distill-eval"]
    assert [n for n in names if n in order] == order
    steps = {s.name: s for s in build_steps(DemoConfig(), Path("d"), Path("o"))}
    # each post-training stage starts from the one before it
    assert "load=o/cold-start" in steps["grpo"].argv and "load=o/grpo" in steps["fusion"].argv
    assert "load=o/fusion" in steps["rl"].argv and "load=o/rl" in steps["export"].argv
    assert steps["serve"].serve == "o/hf" and "teacher=o/rl" in steps["distill-off"].argv


def test_nproc_2_runs_training_under_torchrun_with_divisible_batches():
    from q3.demo import SIZES

    steps = {s.name: s for s in build_steps(DemoConfig(nproc=2), Path("d"), Path("o"))}
    for name in ("s1", "cold-start", "grpo", "fusion", "rl", "distill-off", "distill-on"):
        argv = steps[name].argv
        assert argv[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in argv, name
    assert "train.post.distill" in steps["distill-on"].argv
    for name in ("cold-start", "fusion", "distill-off"):        # SFT: global = micro x dp x microbatches
        kv = dict(a.split("=", 1) for a in SIZES[name])
        assert int(kv["global_batch_size"]) % (int(kv["micro_batch_size"]) * 2) == 0, name
