"""Dedup: datasketch-identical signatures, LSH parameters, exact/near-duplicate survivors,
precision/recall on real text with planted near-duplicates (Latin and CJK), Spark == local."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from dataproc.dedup.components import bucket_edges_np, connected_components, local_components
from dataproc.dedup.config import DedupConfig, MinHashConfig
from dataproc.dedup.local import dedup_table
from dataproc.dedup.lsh import bands_rows, optimal_params
from dataproc.dedup.minhash import Signer, doc_shingle_hashes, is_char_lang, shingle_hash32, shingles
from dataproc.dedup.planted import docs_table, evaluate, plant
from dataproc.dedup.planted import sample_docs as load_docs
from dataproc.jobs.dedup import run_dedup

LATIN = ["eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn", "pol_Latn", "nld_Latn", "tur_Latn", "swe_Latn"]
CJK = ["cmn_Hans", "cmn_Hant", "jpn_Jpan", "zho_Hans", "zho_Hant"]


@pytest.fixture(scope="session")
def sample_file(sample_dir):
    return str(sample_dir / "docs.jsonl")      # the project's sample builder (tests/dataproc/conftest.py)


@pytest.fixture(scope="session")
def latin_docs(sample_file):
    return load_docs(sample_file, LATIN, limit_per_lang=120, max_chars=6000)


@pytest.fixture(scope="session")
def cjk_docs(sample_file):
    docs = load_docs(sample_file, CJK, max_chars=6000)
    assert len(docs) >= 10, "the sample corpus should hold Chinese/Japanese pages"
    return docs


def test_signatures_identical_to_datasketch(latin_docs, cjk_docs):
    cfg = MinHashConfig(num_perm=128, seed=7)
    docs = latin_docs[:25] + cjk_docs[:10]
    sigs, has = Signer(cfg).sign([d["text"] for d in docs], [d["lang"] for d in docs])
    for d, sig, h in zip(docs, sigs, has, strict=True):
        m = MinHash(num_perm=128, seed=7, hashfunc=shingle_hash32)
        sh = shingles(d["text"], d["lang"], cfg)
        m.update_batch([s.encode("utf-8") for s in sh])
        assert h == bool(sh)
        assert np.array_equal(m.hashvalues, sig), d["url"]
    # datasketch's own default hash (sha1_hash32), no hashfunc given: bit-identical too
    cfg1 = MinHashConfig(num_perm=64, seed=3, hash="sha1")
    s1, _ = Signer(cfg1).sign([d["text"] for d in docs[:8]], [d["lang"] for d in docs[:8]])
    for d, sig in zip(docs[:8], s1, strict=True):
        m = MinHash(num_perm=64, seed=3)
        m.update_batch([s.encode("utf-8") for s in shingles(d["text"], d["lang"], cfg1)])
        assert np.array_equal(m.hashvalues, sig)
    # reusing permutations needs scheme= in datasketch 2.0; still the same values
    m0 = MinHash(num_perm=128, seed=7, hashfunc=shingle_hash32)
    m2 = MinHash(num_perm=128, seed=7, hashfunc=shingle_hash32, permutations=m0.permutations, scheme="affine32")
    m2.update_batch([s.encode() for s in shingles(docs[0]["text"], docs[0]["lang"], cfg)])
    assert np.array_equal(m2.hashvalues, sigs[0])


def test_long_documents_windowed_same_shingles(latin_docs, cjk_docs):
    long_latin = " ".join(d["text"] for d in latin_docs[:30])
    long_cjk = "".join(d["text"] for d in cjk_docs[:10])
    small = MinHashConfig(window_chars=2048)
    for text, lang in [(long_latin, "eng_Latn"), (long_cjk, "cmn_Hans")]:
        ref = np.unique(np.array([shingle_hash32(s) for s in shingles(text, lang, small)], np.uint32))
        assert len(text) > 5 * 2048
        assert np.array_equal(np.unique(doc_shingle_hashes(text, lang, small)), ref)


def test_shingle_kind_from_script():
    assert is_char_lang("cmn_Hans") and is_char_lang("jpn_Jpan") and is_char_lang("tha_Thai")
    assert not is_char_lang("eng_Latn") and not is_char_lang("kor_Hang") and not is_char_lang(None)
    cfg = MinHashConfig(word_ngram=2, char_ngram=3)
    assert shingles("Hello, big World!", "eng_Latn", cfg) == {"hello big", "big world"}
    assert shingles("中文文本", "cmn_Hans", cfg) == {"中文文", "文文本"}


def test_lsh_params_as_datasketch():
    for t, n in [(0.8, 128), (0.7, 64), (0.9, 112), (0.5, 32)]:
        assert optimal_params(t, n) == _optimal_param(t, n, 0.5, 0.5)
    assert bands_rows(MinHashConfig(preset="fineweb")) == (14, 8)
    assert MinHashConfig(preset="fineweb").num_perm == 112
    assert bands_rows(MinHashConfig(bands=20, rows=10, num_perm=200)) == (20, 10)


def test_big_bucket_gives_n_minus_1_edges():
    n = 100_000
    keys = np.zeros((n, 1), np.int64)            # everyone in one bucket
    e = bucket_edges_np(np.arange(n, dtype=np.int64), np.zeros(n, np.int64), keys)
    assert len(e) == n - 1 and set(e[:, 1].tolist()) == {0}


def test_exact_and_near_survivors(latin_docs):
    base = latin_docs[:6]
    docs = [dict(d) for d in base]
    docs.append(dict(base[0], text=base[0]["text"].upper(), url="u-upper"))        # exact (case folded)
    words = base[1]["text"].split(" ")
    words[len(words) // 2] = "EDITED"
    docs.append(dict(base[1], text=" ".join(words), url="u-near"))                  # near duplicate
    t = docs_table(docs)
    q = pa.array([{"score": 0.1}] * len(docs), pa.struct([("score", pa.float32())]))
    scores = [0.1] * len(docs)
    scores[-1] = 0.9                                                                 # the near dup is better
    t = t.set_column(t.schema.get_field_index("quality"), "quality",
                     pa.array([{"score": s} for s in scores], t.schema.field("quality").type))
    assert q is not None
    cfg = DedupConfig(runner="local")
    res = dedup_table(t, cfg).set_index("rk")
    ids = t.column("id").to_pylist()
    assert res.loc[6, "reason"] == "exact_duplicate" or res.loc[0, "reason"] == "exact_duplicate"
    survivor0 = min(ids[0], ids[6])
    assert res.loc[0, "dup_cluster"] == res.loc[6, "dup_cluster"] == survivor0
    assert res.loc[1, "reason"] == "near_duplicate" and res.loc[7, "reason"] is None
    assert res.loc[1, "dup_cluster"] == ids[7] and res.loc[1, "dup_cluster_size"] == 2
    assert res.loc[2, "reason"] is None and res.loc[2, "dup_cluster_size"] == 1


def _planted_pr(docs, cfg, label):
    res = dedup_table(docs_table(docs), cfg)
    m = evaluate(docs, res["dup_cluster"].tolist(), cfg)
    print(f"\n[{label}] docs={m['docs']} true pairs (J>={cfg.minhash.threshold})={m['true_pairs']} "
          f"found={m['found_pairs']} precision={m['precision']:.4f} recall={m['recall']:.4f}")
    return m


def test_precision_recall_planted_latin(latin_docs):
    docs = plant(latin_docs, random.Random(0), frac=0.5)
    m = _planted_pr(docs, DedupConfig(runner="local"), "latin")
    assert m["true_pairs"] >= 40
    assert m["precision"] >= 0.95 and m["recall"] >= 0.90


def test_precision_recall_planted_cjk(cjk_docs):
    docs = plant(cjk_docs, random.Random(1), frac=0.6)
    m = _planted_pr(docs, DedupConfig(runner="local"), "cjk")
    assert m["true_pairs"] >= 10
    assert m["precision"] >= 0.95 and m["recall"] >= 0.90


def test_local_components_same_partition_as_union_find():
    """scipy's connected_components replaced a hand-written union-find: identical node -> root."""
    from bench.components_bench import graph, union_find

    nodes, edges = graph(5000, 7000, seed=3)
    got = local_components(nodes, edges)
    assert got == union_find(nodes, edges) and len(set(got.values())) > 100
    assert local_components(np.array([7, 3]), np.empty((0, 2), np.int64)) == {3: 3, 7: 7}
    with pytest.raises(ValueError, match="not in"):
        local_components(np.array([1, 2]), np.array([[1, 5]]))


@pytest.mark.slow          # ~25 large/small-star rounds; the default set covers CC via Spark == local
def test_spark_connected_components_match_local_components(spark, tmp_path):
    rng = random.Random(5)
    edges = []
    for start in range(0, 2000, 100):                    # chains (diameter 25) ...
        edges += [(start + i + 1, start + i) for i in range(25)]
    edges += [(rng.randrange(3000), rng.randrange(3000)) for _ in range(1500)]   # ... and noise
    e = np.array([(u, v) for u, v in edges if u != v], np.int64)
    df = spark.createDataFrame([(int(u), int(v)) for u, v in e], "u long, v long")
    got = {r["node"]: r["comp"] for r in connected_components(df, str(tmp_path / "cc")).collect()}
    want = local_components(np.unique(e), e)
    assert got == want


def _run_both(spark, tmp_path, docs, **kw):
    t = docs_table(docs)
    inp = tmp_path / "in"
    pq.write_to_dataset(t, str(inp), partitioning=["lang"], partitioning_flavor="hive")
    out = {}
    for runner in ("local", "spark"):
        cfg = DedupConfig(runner=runner, **kw)
        stats = run_dedup(inp, tmp_path / runner, cfg, spark=spark)
        kept = ds.dataset(str(tmp_path / runner / "kept"), partitioning="hive").to_table()
        rej = ds.dataset(str(tmp_path / runner / "rejected")).to_table()
        assert kept.num_rows + rej.num_rows == t.num_rows
        assert json.loads((tmp_path / runner / "stats.json").read_text())["docs_in"] == t.num_rows
        rows = {}
        for tab, kept_flag in ((kept, True), (rej, False)):
            for r in tab.select(["id", "url", "dup_cluster", "dup_cluster_size"]).to_pylist():
                rows[(r["id"], r["url"])] = (r["dup_cluster"], r["dup_cluster_size"], kept_flag)
            if not kept_flag and tab.num_rows:
                assert set(tab.column("reason").to_pylist()) <= {"exact_duplicate", "near_duplicate"}
                assert tab.column("detail").to_pylist() == tab.column("dup_cluster").to_pylist()
        out[runner] = (rows, stats)
    return out


def test_spark_and_local_identical_clusters(spark, tmp_path, latin_docs, cjk_docs):
    docs = plant(latin_docs[:150] + cjk_docs[:30], random.Random(2), frac=0.5)
    docs += [dict(docs[3], url="exact-copy")]                    # an exact duplicate row too
    out = _run_both(spark, tmp_path, docs)
    (lrows, lstats), (srows, sstats) = out["local"], out["spark"]
    assert lrows == srows
    for k in ("docs_in", "docs_kept", "exact_duplicate", "near_duplicate", "bytes_removed",
              "cluster_size_histogram", "per_lang"):
        assert lstats[k] == sstats[k], k
    assert sstats["near_duplicate"] > 10 and sstats["exact_duplicate"] >= 1
    print(f"\nspark == local on {sstats['docs_in']} docs: kept {sstats['docs_kept']}, "
          f"near {sstats['near_duplicate']}, exact {sstats['exact_duplicate']}")
