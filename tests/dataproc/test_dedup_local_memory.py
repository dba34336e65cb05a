"""The bounded-memory local dedup runner (issue 17): streamed passes give the same rows and stats as
the in-memory reference (`local.dedup_table`), with tiny batches so that every chunking path runs;
an input too big for it is refused in one line naming runner=spark; lines.max_frequent is enforced
by the local line dedup exactly as by Spark."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataproc.dedup.config import DedupConfig, LinesConfig, LocalConfig
from dataproc.dedup.lines import line_dedup_spark, line_dedup_table
from dataproc.dedup.local import dedup_table
from dataproc.dedup.planted import docs_table, plant
from dataproc.dedup.planted import sample_docs as load_docs
from dataproc.dedup.stats import compute_stats
from dataproc.jobs.dedup import read_docs_local, run_dedup
from q3.config import ConfigError
from q3.engine.io import read_corpus

LANGS = ["eng_Latn", "deu_Latn", "fra_Latn", "cmn_Hans", "jpn_Jpan"]


@pytest.fixture(scope="module")
def corpus(sample_dir, tmp_path_factory):
    docs = load_docs(str(sample_dir / "docs.jsonl"), LANGS, limit_per_lang=40, max_chars=4000)
    docs = plant(docs, random.Random(4), frac=0.5)
    docs += [dict(docs[5], url="exact-copy"), dict(docs[9], url="exact-copy-2")]
    inp = tmp_path_factory.mktemp("ldm") / "in"
    pq.write_to_dataset(docs_table(docs), str(inp), partitioning=["lang"], partitioning_flavor="hive")
    return inp


def _rows(out):
    kept = read_corpus(out / "kept")
    rej = read_corpus(out / "rejected", keep_extra=True)
    rows = {}
    for tab, reason in ((kept, False), (rej, True)):
        for r in tab.to_pylist():
            rows[(r["id"], r["url"])] = (r["dup_cluster"], r["dup_cluster_size"], r.get("reason") if reason else None,
                                         r["lang"], r["text"])
    return rows, kept.num_rows + rej.num_rows


@pytest.mark.parametrize("verify", ["exact", "signature"])
def test_streamed_runner_equals_in_memory_reference(corpus, tmp_path, verify):
    cfg = DedupConfig(runner="local", batch_size=16, minhash={"verify": verify},
                      local=LocalConfig(batch_rows=64, verify_rows=12))      # many batches, many text chunks
    stats = run_dedup(corpus, tmp_path / "out", cfg)
    rows, n_out = _rows(tmp_path / "out")
    docs = read_docs_local(corpus)
    ref = dedup_table(docs, cfg)
    assert n_out == docs.num_rows == len(rows)
    want = {(i, u): (c, s, r, lg, t) for i, u, c, s, r, lg, t in zip(
        docs.column("id").to_pylist(), docs.column("url").to_pylist(), ref["dup_cluster"], ref["dup_cluster_size"],
        ref["reason"], docs.column("lang").to_pylist(), docs.column("text").to_pylist(), strict=True)}
    assert rows == want
    ref_stats = compute_stats(ref)
    for k in ("docs_in", "docs_kept", "exact_duplicate", "near_duplicate", "bytes_removed",
              "cluster_size_histogram", "per_lang"):
        assert stats[k] == ref_stats[k], k
    assert stats["near_duplicate"] > 12 and stats["exact_duplicate"] >= 2     # > one verify chunk
    assert not (tmp_path / "out" / "_work").exists()


def test_too_big_input_says_use_spark(corpus, tmp_path):
    cfg = DedupConfig(runner="local", local=LocalConfig(max_memory_gib=1e-4))
    with pytest.raises(ConfigError, match=r"need ~.* GiB.*use runner=spark") as e:
        run_dedup(corpus, tmp_path / "out", cfg)
    assert "\n" not in str(e.value)


def test_local_lines_with_line_dedup_equals_reference(corpus, tmp_path):
    """The streamed runner with line dedup: same texts and reasons as line_dedup_table on the
    in-memory result (the former local path)."""
    lines = LinesConfig(enabled=True, min_count=2, min_chars=10)
    cfg = DedupConfig(runner="local", lines=lines, local=LocalConfig(batch_rows=64))
    stats = run_dedup(corpus, tmp_path / "out", cfg)
    rows, _ = _rows(tmp_path / "out")
    docs = read_docs_local(corpus)
    ref = dedup_table(docs, cfg)
    reason = pa.array(ref["reason"].tolist(), pa.string())
    full = (docs.append_column("reason", reason).append_column("stage", pa.nulls(docs.num_rows, pa.string()))
                .append_column("detail", pa.nulls(docs.num_rows, pa.string())))
    out, lstats = line_dedup_table(full, lines)
    assert stats["lines"] == lstats and lstats["frequent_units"] > 0
    got = {k: (v[2], v[4]) for k, v in rows.items()}
    want = {(r["id"], r["url"]): (r["reason"], r["text"]) for r in out.select(["id", "url", "reason", "text"]).to_pylist()}
    assert got == want


def _line_docs():
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    shared = ["first", "second", "third", "fourth"]
    rows = []
    for i, name in enumerate(names):
        body = [f"document {name} says something of its own"]
        body += [f"the {shared[k]} boilerplate line shared by many pages" for k in range(i % 4 + 1)]
        rows.append({"id": f"d{i}", "text": "\n".join(body), "reason": None, "stage": None, "detail": None})
    return pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in
                                                        ("id", "text", "reason", "stage", "detail")]))


def test_lines_max_frequent_local_equals_spark(spark, tmp_path):
    """4 shared lines reach min_count=2 (line k is in the docs with i % 4 >= k): at max_frequent=4 the
    local line dedup removes them, at 3 it refuses with Spark's message (was: Spark only). Spark is
    run on the refusing case only (its count job; the rewrite is covered by test_dedup_lines_cli)."""
    t = _line_docs()
    at = LinesConfig(enabled=True, min_count=2, min_chars=10, max_frequent=3)
    out, stats = line_dedup_table(t, at.model_copy(update={"max_frequent": 4}))
    assert stats["frequent_units"] == 4 and "boilerplate" not in "".join(out.column("text").to_pylist())
    with pytest.raises(RuntimeError) as le:
        line_dedup_table(t, at)
    sdf = spark.createDataFrame([tuple(r.values()) for r in t.to_pylist()],
                                "id string, text string, reason string, stage string, detail string")
    with pytest.raises(RuntimeError) as se:
        line_dedup_spark(sdf, at, str(tmp_path / "lines"))
    assert str(le.value) == str(se.value) == (
        "more than 3 frequent lines (lines.max_frequent); raise min_count or max_frequent")
