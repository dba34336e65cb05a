"""Runners end to end on real multilingual text: accounting, Spark == local, kill + resume."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from lid_corpus import TEXTS, write_corpus

from dataproc import runner
from dataproc.config import PipelineConfig
from q3.atomic import is_committed
from q3.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _cfg(inp: Path, out: Path, **kw) -> PipelineConfig:
    data = {"input": [{"path": str(inp / "*.jsonl"), "format": "jsonl", "source": "test"}],
            "output": str(out), "runner": "local", "chunk_files": 2,
            "quality": {"enabled": []}, **kw}   # one-sentence docs: Gopher's 50-word minimum would drop all
    return PipelineConfig.model_validate(data)


def _rows(out: Path, kind: str) -> list[dict]:
    return runner.read_output(out, kind).to_pylist()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("local") / "pipeline"
    stats = runner.run(_cfg(corpus, out))
    return out, stats


def test_kept_plus_rejected_is_input(corpus, local_run):
    out, stats = local_run
    n_input = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in corpus.glob("*.jsonl"))
    kept, rejected = _rows(out, "kept"), _rows(out, "rejected")
    assert len(kept) + len(rejected) == n_input == stats["input_docs"]
    assert stats["kept_docs"] == len(kept) and stats["rejected_docs"] == len(rejected)
    assert is_committed(out) and json.loads((out / "stats.json").read_text()) == stats
    # every language of the corpus is kept under its own lang= partition
    assert {r["lang"] for r in kept} == set(TEXTS)
    assert {p.name for p in (out / "kept").iterdir()} == {f"lang={lang}" for lang in TEXTS}
    assert all(r["reason"] for r in rejected)
    reasons = {(r["stage"], r["reason"]) for r in rejected}
    assert ("langid", "lang_low_confidence") in reasons
    # per-stage counters chain: each stage's out is the next one's in
    st = stats["stages"]
    assert st[0]["in"] == n_input and st[-1]["out"] == len(kept)
    assert all(a["out"] == b["in"] for a, b in zip(st, st[1:], strict=False))
    assert sum(v["docs"] for v in stats["kept_by_lang"].values()) == len(kept)
    assert not runner.parts_dir(_cfg(corpus, out)).exists()   # parts removed after the final commit


def test_rerun_is_a_noop(corpus, local_run):
    out, stats = local_run
    before = (out / "_Q3_SUCCESS").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = runner.run(_cfg(corpus, out))
    seconds = time.perf_counter() - t0
    print(f"pipeline unchanged rerun: {seconds:.3f} s")
    assert again.pop("skipped") is True and again == stats
    assert (out / "_Q3_SUCCESS").stat().st_mtime_ns == before
    assert seconds < 1.0        # the key from file stats and the marker only: nothing read (~0.02 s)


def test_input_edited_in_place_recomputes(tmp_path, caplog):
    """(test_stale_inputs adds a file) The same file names with new content: the job recomputes,
    and the new document is in the output."""
    caplog.set_level(logging.INFO, logger="q3.commit")
    inp = write_corpus(tmp_path / "in", n_files=1, copies=1)
    cfg = _cfg(inp, tmp_path / "out")
    first = runner.run(cfg)
    with open(inp / "part-00.jsonl", "a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"text": TEXTS["eng_Latn"][0] + " (edited)", "url": "test://edited"}) + "\n")
    caplog.clear()
    second = runner.run(cfg)
    assert f"{tmp_path / 'out'}: recomputing (input changed)" in caplog.text
    assert second["input_docs"] == first["input_docs"] + 1
    assert "test://edited" in runner.read_output(tmp_path / "out", "kept").column("url").to_pylist()


def _same_stats(a: dict, b: dict) -> dict:
    drop = {"fingerprint", "seconds", "skipped"}   # the key differs with chunk_files; timings differ
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


@pytest.mark.parametrize("which", ["local", "spark"])
def test_both_runners_give_the_same_rows_and_stats(which, request, corpus, local_run, tmp_path, caplog):
    """Other chunks (6 files), each runner: the same kept/rejected rows and stats as the reference.
    Spark comes from `runner: auto` over a size limit the corpus exceeds, as on a big input."""
    out, stats = local_run
    caplog.set_level(logging.INFO, logger="q3.engine")
    spark = request.getfixturevalue("spark") if which == "spark" else None
    kw = {"runner": "auto", "auto": {"local_max_bytes": 1}} if which == "spark" else {"runner": "local"}
    other = runner.run(_cfg(corpus, tmp_path / which, chunk_files=6, **kw), spark=spark)
    if which == "spark":
        assert "pipeline: runner spark (input" in caplog.text and "> auto.local_max_bytes" in caplog.text
    for kind in ("kept", "rejected"):
        assert runner.read_output(tmp_path / which, kind).equals(runner.read_output(out, kind)), kind
    assert _same_stats(other, stats)


def test_auto_runner_is_local_on_a_small_input(corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="q3.engine")
    cfg = _cfg(corpus, tmp_path / "auto", runner="auto", quality={"enabled": []}, pii={"enabled": False})
    assert cfg.runner == "auto" and PipelineConfig().runner == "auto"      # the default
    runner.run(cfg)
    assert "pipeline: runner local (input" in caplog.text and "under the auto.local_max_* limits" in caplog.text


def test_killed_run_resumes_to_the_same_output(corpus, local_run, tmp_path):
    out, _ = local_run
    rout = tmp_path / "resumed"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(_cfg(corpus, rout, keep_parts=True).model_dump_json())
    code = ("import sys; from dataproc.config import PipelineConfig; from dataproc import runner; "
            "runner.run(PipelineConfig.model_validate_json(open(sys.argv[1]).read()))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_RUNNER_DIE_IN_CHUNK": "1", "Q3_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", code, str(cfg_file)], env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr          # died hard halfway through chunk 1
    pdir = next(runner.parts_dir(_cfg(corpus, rout)).iterdir())
    assert is_committed(pdir / "chunk-00000") and not is_committed(pdir / "chunk-00001")
    assert list(pdir.glob(".chunk-00001.tmp-*")), "the killed chunk left its temporary"
    assert not rout.exists()
    first = (pdir / "chunk-00000" / "_Q3_SUCCESS").stat().st_mtime_ns

    runner.run(_cfg(corpus, rout, keep_parts=True))   # the rerun
    assert (pdir / "chunk-00000" / "_Q3_SUCCESS").stat().st_mtime_ns == first   # not redone
    assert not list(pdir.glob(".chunk-*.tmp-*"))
    for kind in ("kept", "rejected"):
        assert runner.read_output(rout, kind).equals(runner.read_output(out, kind)), kind


def test_changed_config_does_not_reuse_parts(corpus, local_run, tmp_path):
    out, stats = local_run
    strict = runner.run(_cfg(corpus, tmp_path / "strict", langid={"keep_languages": ["eng_Latn"]}))
    assert strict["kept_docs"] < stats["kept_docs"]
    assert set(strict["kept_by_lang"]) == {"eng_Latn"}


def test_read_failures_become_rejected_rows(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "good.jsonl").write_text(json.dumps({"text": TEXTS["eng_Latn"][0]}) + "\n")
    (inp / "gone.jsonl").write_text(json.dumps({"text": TEXTS["deu_Latn"][0]}) + "\n")
    cfg = PipelineConfig.model_validate({"input": [{"path": str(inp / "*.jsonl"), "format": "jsonl"}],
                                         "output": str(tmp_path / "out"), "runner": "local"})
    items = runner.plan(cfg)
    (inp / "gone.jsonl").unlink()        # vanished between listing and reading (e.g. a cleaned-up shard)
    batches = [b for i, p in items for b in runner.process_file(cfg, i, p)]
    t = pa.Table.from_batches(batches)
    rows = t.select(["url", "reason", "stage"]).to_pylist()
    gone = [r for r in rows if r["url"].endswith("gone.jsonl")]
    assert len(rows) == 2 and len(gone) == 1
    assert gone[0]["reason"] in ("unreadable_file", "read_error") and gone[0]["stage"] == "read"


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no `input`"):
        runner.run(PipelineConfig(output=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="matches no files"):
        runner.plan(PipelineConfig.model_validate({"input": [{"path": str(tmp_path / "nothing*.jsonl")}]}))
    with pytest.raises(ConfigError, match="chunk_files"):
        load_config(PipelineConfig, "pipeline", None, ["chunk_files=0"])
    with pytest.raises(ConfigError, match="runner"):
        load_config(PipelineConfig, "pipeline", None, ["runner=dask"])
    with pytest.raises(ConfigError, match="no cluster config named 'mars'"):
        runner.spark_conf_for(PipelineConfig.model_validate({"spark": {"cluster": "mars"}}))


def test_paths_expand_q3_data(monkeypatch, tmp_path):
    monkeypatch.setenv("Q3_DATA", str(tmp_path))
    cfg = load_config(PipelineConfig, "pipeline", "demo")
    resolved = runner.resolve_paths(cfg)
    assert resolved.input[0].path == f"{tmp_path}/sample/raw"
    assert resolved.output == f"{tmp_path}/pipeline-demo"
