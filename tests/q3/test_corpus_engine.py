"""The corpus engine: one read, one map, one write, one commit — local and Spark give the same rows."""

from __future__ import annotations

import functools
import json
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark import cloudpickle

from q3.commit import job_key
from q3.engine.io import corpus_size, read_corpus, scan_corpus
from q3.engine.job import run_committed
from q3.engine.map import map_batches
from q3.engine.runner import AutoRunner, choose_runner
from q3.engine.schema import conform, spark_schema
from q3.engine.write import LostRows, write_split
from q3.schemas import DOC_SCHEMA, STAGE_OUTPUT_SCHEMA, content_id

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Spark workers cannot import tests/


def _short_docs_out(min_chars: int):
    """A batch function factory: reject documents shorter than `min_chars` (reason short_doc)."""
    def fn(batch: pa.RecordBatch) -> pa.RecordBatch:
        b = conform(batch, STAGE_OUTPUT_SCHEMA)
        short = pc.less(pc.utf8_length(b.column("text")), min_chars)
        reason = pc.if_else(short, pa.scalar("short_doc"), pa.scalar(None, pa.string()))
        stage = pc.if_else(short, pa.scalar("length"), pa.scalar(None, pa.string()))
        b = b.set_column(b.schema.get_field_index("reason"), "reason", reason)
        return b.set_column(b.schema.get_field_index("stage"), "stage", stage)
    return fn


@pytest.fixture
def corpus(tmp_path):
    """Two lang= partitions, only some DOC_SCHEMA columns, one extra column."""
    texts = {"eng_Latn": ["a long enough document", "tiny", "another long document here"],
             "deu_Latn": ["ein langes Dokument", "kurz"]}
    for lang, ts in texts.items():
        d = tmp_path / "kept" / f"lang={lang}"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"id": [content_id(t) for t in ts], "text": ts, "source": ["s"] * len(ts),
                                 "extra": list(range(len(ts)))}), d / "part-0.parquet")
    (tmp_path / "kept" / "_SUCCESS").write_text("")
    return tmp_path / "kept"


def _rows(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=lambda r: r["id"])


def test_read_corpus_local_and_spark_agree(corpus, spark):
    local = read_corpus(corpus)
    assert local.schema == DOC_SCHEMA and local.num_rows == 5
    assert set(local.column("lang").to_pylist()) == {"eng_Latn", "deu_Latn"}
    df = read_corpus(corpus, spark=spark)
    assert _rows(pa.Table.from_pandas(df.toPandas(), preserve_index=False).select(["id", "text", "lang"])) == \
        _rows(local.select(["id", "text", "lang"]))
    assert read_corpus(corpus, ["id", "extra"], keep_extra=True).column("extra").to_pylist() is not None
    assert sum(b.num_rows for b in scan_corpus(corpus, batch_size=2)) == 5
    assert corpus_size(corpus)[1] == 5


def test_map_and_write_split_same_rows_on_both_runners(corpus, spark, tmp_path):
    fac = functools.partial(_short_docs_out, 8)
    local = map_batches(fac, scan_corpus(corpus, batch_size=2), STAGE_OUTPUT_SCHEMA, runner="local")
    c_local = write_split(local, tmp_path / "local", n_in=5, job="t")
    remote = map_batches(fac, read_corpus(corpus, spark=spark), STAGE_OUTPUT_SCHEMA, runner="spark")
    c_spark = write_split(remote, tmp_path / "spark", n_in=5, job="t")
    assert (c_local.kept, c_local.rejected, c_local.by_reason) == (3, 2, {"short_doc": 2})
    assert (c_spark.kept, c_spark.rejected, c_spark.by_reason) == (3, 2, {"short_doc": 2})
    for kind in ("kept", "rejected"):
        a, b = read_corpus(tmp_path / "local" / kind, keep_extra=True), read_corpus(tmp_path / "spark" / kind,
                                                                                   keep_extra=True)
        assert _rows(a) == _rows(b.select(a.schema.names))
    assert read_corpus(tmp_path / "local" / "rejected", ["stage"], keep_extra=True).num_rows == 2


def test_write_split_checks_kept_plus_rejected_equals_input(corpus, tmp_path):
    out = map_batches(functools.partial(_short_docs_out, 8), scan_corpus(corpus), STAGE_OUTPUT_SCHEMA,
                      runner="local")
    with pytest.raises(LostRows, match="6 rows in, but 3 kept \\+ 2 rejected"):
        write_split(out, tmp_path / "o", n_in=6, job="t")


def test_spark_schema_refuses_types_spark_cannot_hold():
    assert [f.name for f in spark_schema(STAGE_OUTPUT_SCHEMA).fields] == STAGE_OUTPUT_SCHEMA.names
    with pytest.raises(TypeError, match="column 'h'"):
        spark_schema(pa.schema([("h", pa.float16())]))


def test_auto_runner_chooses_by_input_size_and_says_why(corpus, monkeypatch):
    monkeypatch.delenv("Q3_SPARK_MASTER", raising=False)
    assert choose_runner("auto", [corpus]).runner == "local"
    big = choose_runner("auto", [corpus], AutoRunner(local_max_rows=4))
    assert big.runner == "spark" and "auto.local_max_rows" in big.why
    assert choose_runner("auto", [corpus], AutoRunner(local_max_bytes=10)).runner == "spark"
    assert choose_runner("local", [corpus], AutoRunner(local_max_rows=1)).runner == "local"
    assert choose_runner("auto", [corpus], cluster="standalone").runner == "spark"
    monkeypatch.setenv("Q3_SPARK_MASTER", "spark://127.0.0.1:7077")
    assert "Q3_SPARK_MASTER" in choose_runner("auto", [corpus]).why


def test_run_committed_skips_unchanged_and_redoes_changed_input(corpus, tmp_path):
    calls = []

    def body(tmp, meta):
        calls.append(1)
        (tmp / "x").write_text("done")
        return {"docs_in": read_corpus(corpus).num_rows}

    def key():
        return job_key("t", {"a": 1}, inputs=[corpus])

    out = tmp_path / "out"
    assert run_committed(out, key(), body)["docs_in"] == 5
    t0 = time.time()
    again = run_committed(out, key(), body)
    assert again["skipped"] is True and len(calls) == 1 and time.time() - t0 < 1.0
    pq.write_table(pa.table({"id": ["z"], "text": ["new document"]}), corpus / "lang=eng_Latn" / "part-1.parquet")
    assert run_committed(out, key(), body)["docs_in"] == 6 and len(calls) == 2
    assert json.loads((out / "stats.json").read_text())["docs_in"] == 6


def test_run_committed_refuses_unbalanced_stats_and_commits_nothing(tmp_path):
    from q3.contracts import ContractError

    out = tmp_path / "out"
    with pytest.raises(ContractError, match="3 kept \\+ 1 rejected != 5 in"):
        run_committed(out, job_key("t", {}, inputs=[]), lambda tmp, meta: {"docs_in": 5, "docs_kept": 3,
                                                                            "docs_rejected": 1})
    assert not out.exists()


def test_part_keys_resume_parts_of_one_run_and_redo_them_on_changed_input(corpus, tmp_path):
    """q3.engine.parts (synth's shards): parts of an unchanged run are reused one by one; a changed
    input, or a part that now covers other rows, is redone."""
    from q3.engine.parts import key_from_dict, key_to_dict, part_key

    done = []

    def body(name):
        def run(tmp, meta):
            done.append(name)
            return {"part": name}
        return run

    run_key = job_key("t", {"a": 1}, inputs=[corpus])
    k0, k1 = part_key(run_key, "p0", ["a", "b"]), part_key(run_key, "p1", ["c"])
    assert len({k0.id, k1.id, part_key(run_key, "p0", ["a"]).id, run_key.id}) == 4
    assert key_from_dict(key_to_dict(k0)) == k0 and k0.input == run_key.input and k0.code == run_key.code
    run_committed(tmp_path / "p0", k0, body("p0"))          # the run is killed before part 1
    assert run_committed(tmp_path / "p0", part_key(run_key, "p0", ["a", "b"]), body("p0"))["skipped"]
    run_committed(tmp_path / "p1", k1, body("p1"))
    assert done == ["p0", "p1"]
    pq.write_table(pa.table({"id": ["z"], "text": ["new document"]}), corpus / "lang=eng_Latn" / "part-1.parquet")
    changed = job_key("t", {"a": 1}, inputs=[corpus])
    assert "skipped" not in run_committed(tmp_path / "p0", part_key(changed, "p0", ["a", "b"]), body("p0"))
    assert done == ["p0", "p1", "p0"]


# ---- q3.engine.shared (Shared in, Tally out) and 1 -> many batch functions (issue 17: pipeline, decontam)

def _one_row_per_batch_tagged(tag, seen):
    """A factory: each input batch -> one output batch per row (a 1 -> many expansion), its text
    prefixed by the Shared `tag`; every id counted once in the Tally `seen`."""
    def fn(batch: pa.RecordBatch):
        b = conform(batch, STAGE_OUTPUT_SCHEMA)
        b = b.set_column(b.schema.get_field_index("text"), "text",
                         pc.binary_join_element_wise(tag.value, b.column("text"), ""))
        for i in range(b.num_rows):
            yield b.slice(i, 1)
            seen.set(b.column("id")[i].as_py(), 1)
    return fn


@pytest.mark.parametrize("runner", ["local", "spark"])
def test_shared_value_in_tally_out_and_one_to_many_batches(runner, request, corpus, tmp_path):
    from q3.engine.shared import Shared, Tally

    spark = request.getfixturevalue("spark") if runner == "spark" else None
    tag, seen = Shared("T:", spark), Tally(spark)
    fac = functools.partial(_one_row_per_batch_tagged, tag, seen)
    source = read_corpus(corpus, spark=spark) if spark else scan_corpus(corpus, batch_size=2)
    result = map_batches(fac, source, STAGE_OUTPUT_SCHEMA, runner=runner, batch_size=2)
    counts = write_split(result, tmp_path / "o", job="t")
    ids = set(read_corpus(corpus).column("id").to_pylist())
    assert counts.kept == 5 and seen.value == dict.fromkeys(ids, 1) and seen.total() == counts.total
    assert all(t.startswith("T:") for t in read_corpus(tmp_path / "o" / "kept").column("text").to_pylist())
    if spark is not None:   # the same rows computed twice (a re-executed task): each key still counts once
        write_split(result, tmp_path / "again", job="t")
        assert seen.total() == 5
    tag.unpersist()


# ---- label apply / tokenise additions: write_docs (a job that drops no row), map_partitions (a
# stream function whose state spans batches)

def _upper_text():
    def fn(batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.set_column(batch.schema.get_field_index("text"), "text", pc.utf8_upper(batch.column("text")))
    return fn


def _count_stream():
    """A stream function: one row per stream with its row count (state across batches)."""
    def fn(batches):
        n = sum(b.num_rows for b in batches)
        yield pa.RecordBatch.from_pylist([{"rows": n}], schema=pa.schema([("rows", pa.int64())]))
    return fn


def test_write_docs_and_map_partitions_on_both_runners(corpus, spark, tmp_path):
    from q3.engine.docs import write_docs
    from q3.engine.partitions import map_partitions

    local = map_batches(_upper_text, scan_corpus(corpus, batch_size=2), DOC_SCHEMA, runner="local")
    assert write_docs(local, tmp_path / "local", n_in=5, job="t") == 5
    remote = map_batches(_upper_text, read_corpus(corpus, spark=spark), DOC_SCHEMA, runner="spark")
    assert write_docs(remote, tmp_path / "spark", n_in=5, job="t") == 5
    assert sorted(p.name for p in (tmp_path / "spark").iterdir()) == ["lang=deu_Latn", "lang=eng_Latn"]
    assert _rows(read_corpus(tmp_path / "local")) == _rows(read_corpus(tmp_path / "spark"))
    assert "EIN LANGES DOKUMENT" in read_corpus(tmp_path / "local").column("text").to_pylist()
    with pytest.raises(LostRows, match="6 rows in, but 5 written"):
        write_docs(scan_corpus(corpus), tmp_path / "o", n_in=6, job="t")

    schema = pa.schema([("rows", pa.int64())])
    out = list(map_partitions(_count_stream, scan_corpus(corpus, batch_size=2), schema, runner="local"))
    assert [b.to_pylist() for b in out] == [[{"rows": 5}]]                     # one stream, 3 batches
    df = map_partitions(_count_stream, read_corpus(corpus, spark=spark).repartition(2), schema, runner="spark")
    counts = [r["rows"] for r in df.collect()]
    assert len(counts) == 2 and sum(counts) == 5                                # one row per partition
