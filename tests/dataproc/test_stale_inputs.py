"""Keyed commits (q3.commit) on the corpus chain pipeline -> dedup -> decontam -> tokenise:
an unchanged rerun of each job skips (says so, writes nothing); re-running the upstream stage on
changed input makes every job downstream recompute, and its output has the new documents."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lid_corpus import write_corpus

from dataproc import runner
from dataproc.config import PipelineConfig
from dataproc.dedup.config import DedupConfig
from dataproc.jobs.decontam import run_decontam
from dataproc.jobs.dedup import run_dedup
from dataproc.jobs.tokenise import run_tokenize
from dataproc.mix.config import MixConfig, StageConfig

# two new English documents, unlike the corpus and each other; the eval set quotes the first
FRESH = ["Lighthouse keepers on remote islands once recorded the weather every four hours, noting the wind, "
         "the swell and the colour of the sky in heavy ledgers that were shipped to the mainland each spring.",
         "Beekeepers inspect their hives in the warm afternoon, lifting each frame slowly to look for eggs, "
         "capped honey and the queen, then closing the box before the colony grows restless and loud."]
SKIP = "is up to date (same config and input); skipping"


def _jobs(root: Path) -> dict:
    """Each job of the chain as a rerunnable call, with the folder it writes."""
    pipe = PipelineConfig.model_validate({
        "input": [{"path": str(root / "raw" / "*.jsonl"), "format": "jsonl", "source": "test"}],
        "output": str(root / "pipeline"), "runner": "local", "chunk_files": 2, "quality": {"enabled": []}})
    decon = DedupConfig(runner="local", decontam={"evals": [str(root / "evals")]})
    stage = StageConfig(stage="T", seq_length=64, rope_base=10000, target_tokens=10**6,
                        datasets=[{"name": "all", "select": {}}])
    mix = MixConfig(input=str(root / "decontam" / "kept"), output=str(root / "mix"), runner="local",
                    buckets=2, batch_size=16)
    return {
        "pipeline": (lambda: runner.run(pipe), root / "pipeline"),
        "dedup": (lambda: run_dedup(root / "pipeline" / "kept", root / "dedup", DedupConfig(runner="local")),
                  root / "dedup"),
        "decontam": (lambda: run_decontam(root / "dedup" / "kept", root / "decontam", decon), root / "decontam"),
        "tokenise": (lambda: run_tokenize(mix, [stage]), root / "mix"),
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stale")
    write_corpus(root / "raw", n_files=2, copies=1)
    (root / "evals").mkdir()
    (root / "evals" / "freshbench.jsonl").write_text(json.dumps({"question": FRESH[0]}) + "\n")
    for fn, _ in _jobs(root).values():
        fn()
    return root


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def _urls(path: Path) -> set[str]:
    return set(pq.read_table(str(path), columns=["url"]).column("url").to_pylist())


def test_unchanged_rerun_skips_every_job(chain, caplog):
    caplog.set_level(logging.INFO, logger="q3.commit")
    seconds = {}
    for name, (fn, out) in _jobs(chain).items():
        before = _tree(out.parent)
        caplog.clear()
        t0 = time.perf_counter()
        fn()
        seconds[name] = round(time.perf_counter() - t0, 3)
        assert SKIP in caplog.text, (name, caplog.text)
        assert _tree(out.parent) == before, name            # nothing written, nothing touched
    print("skip seconds:", seconds)
    assert max(seconds.values()) < 10                        # generous: measured ~0.1 s each


def test_changed_upstream_makes_every_job_recompute(chain, caplog):
    caplog.set_level(logging.INFO, logger="q3.commit")
    jobs = _jobs(chain)
    docs_before = json.loads((chain / "mix" / "tokens" / "_Q3_SUCCESS").read_text())["docs_seen"]
    with open(chain / "raw" / "part-new.jsonl", "w", encoding="utf-8") as fh:
        for i, text in enumerate(FRESH):
            fh.write(json.dumps({"text": text, "url": f"test://fresh/{i}"}) + "\n")
    fresh = {"test://fresh/0", "test://fresh/1"}
    for name, (fn, out) in jobs.items():
        caplog.clear()
        fn()
        assert f"{out / 'tokens' if name == 'tokenise' else out}: recomputing (input changed)" in caplog.text, \
            (name, caplog.text)
    assert fresh <= _urls(chain / "pipeline" / "kept") and fresh <= _urls(chain / "dedup" / "kept")
    rejected = pq.read_table(str(chain / "decontam" / "rejected")).to_pylist()
    assert {(r["url"], r["reason"]) for r in rejected} == {("test://fresh/0", "contaminated:freshbench")}
    assert _urls(chain / "decontam" / "kept") >= {"test://fresh/1"}
    tokens = json.loads((chain / "mix" / "tokens" / "_Q3_SUCCESS").read_text())
    assert tokens["docs_seen"] == docs_before + 1
