"""Line-level (CCNet-style) dedup in both runners, and the `q3 data dedup` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from dataproc.dedup.config import DedupConfig, LinesConfig
from dataproc.dedup.lines import normalise_unit
from dataproc.dedup.planted import docs_table, sample_docs, sample_path
from dataproc.jobs.dedup import run_dedup
from q3.paths import ROOT

BOILER = "This page is part of release 4.16 of the Linux man-pages project, see the website."


@pytest.fixture(scope="session")
def docs():
    return sample_docs(sample_path(), ["eng_Latn", "deu_Latn"], limit_per_lang=12, max_chars=3000)


def _with_boilerplate(docs):
    out = []
    for i, d in enumerate(docs):
        d = dict(d)
        if i % 2 == 0:    # half the documents end with the same footer line (digits vary)
            d["text"] = d["text"] + "\n" + BOILER.replace("4.16", f"4.{i}")
        out.append(d)
    out.append({"text": BOILER, "lang": "eng_Latn", "url": "only-boilerplate", "source": "t"})
    return out


def test_normalise_unit_like_ccnet():
    assert normalise_unit("  Release 4.16, see  the Website! ") == "release 000 see the website"


@pytest.mark.parametrize("runner", ["local", pytest.param("spark", marks=pytest.mark.slow)])
def test_line_dedup_removes_boilerplate(runner, spark, tmp_path, docs):
    t = docs_table(_with_boilerplate(docs))
    pq.write_table(t, str(tmp_path / "in.parquet"))
    cfg = DedupConfig(runner=runner, lines=LinesConfig(enabled=True, min_count=3))
    stats = run_dedup(str(tmp_path / "in.parquet"), tmp_path / "out", cfg, spark=spark)
    kept = ds.dataset(str(tmp_path / "out" / "kept"), partitioning="hive").to_table()
    rej = ds.dataset(str(tmp_path / "out" / "rejected")).to_table()
    assert kept.num_rows + rej.num_rows == t.num_rows
    assert not any("man-pages project" in x for x in kept.column("text").to_pylist())
    assert "line_dedup_empty" in rej.column("reason").to_pylist()
    assert stats["lines"]["frequent_units"] >= 1 and stats["lines"]["chars_removed"] > 0
    # only repeated units go: most of the text survives, and every unique long line does
    originals = {d["url"]: d["text"] for d in docs}
    got = {r["url"]: r["text"] for r in kept.select(["url", "text"]).to_pylist() if r["url"] in originals}
    assert sum(map(len, got.values())) > 0.5 * sum(len(originals[u]) for u in got)
    all_lines = [ln for t in originals.values() for ln in t.split("\n")]
    for u, text in got.items():
        for ln in originals[u].split("\n"):
            if len(ln) > 40 and all_lines.count(ln) == 1:
                assert ln in text


def test_cli_local_runner(tmp_path, docs):
    t = docs_table(docs + [dict(docs[0], url="copy")])
    pq.write_to_dataset(t, str(tmp_path / "in"), partitioning=["lang"], partitioning_flavor="hive")
    env = dict(os.environ, PYTHONPATH=str(ROOT), Q3_PROGRESS="0")
    cmd = [sys.executable, "-m", "q3.cli", "data", "dedup", f"input={tmp_path / 'in'}",
           f"output={tmp_path / 'out'}", "runner=local", "minhash.threshold=0.7"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "dedup: cluster sizes" in p.stdout
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["docs_in"] == t.num_rows and stats["exact_duplicate"] >= 1
    assert (tmp_path / "out" / "_Q3_SUCCESS").exists()
    bad = subprocess.run(cmd[:5] + ["minhash.thresold=0.7"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "threshold" in bad.stderr
