"""Dedup benchmark: MinHash signatures/s vs datasketch, end-to-end dedup docs/s vs datatrove.

    python -m bench.dedup_bench [--docs N] [--sample PATH/docs.jsonl] [--no-spark]

1. Signatures: the same documents and shingles through `datasketch.MinHash.update_batch` (its
   default sha1 hash) and through our batch signer (hash=sha1: asserted bit-identical; and our
   default poly64: asserted identical to datasketch given `hashfunc=shingle_hash32`).
2. End to end on the same planted corpus (sample + mutated copies): datatrove's MinHash pipeline
   (MinhashDedupSignature -> Buckets -> Cluster -> Filter, LocalPipelineExecutor, 2 workers) vs
   our `run_dedup` (local runner and Spark local[2]) with the same parameters (5-grams, 14x8).
Results are appended to bench/RESULTS.md under "Dedup".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dataproc.dedup.config import DedupConfig, MinHashConfig
from dataproc.dedup.minhash import Signer, shingle_hash32, shingles
from dataproc.dedup.planted import docs_table, plant, sample_docs, sample_path

RESULTS = Path(__file__).with_name("RESULTS.md")


def bench_signatures(docs: list[dict], num_perm: int = 128) -> dict:
    from datasketch import MinHash

    texts = [d["text"] for d in docs]
    langs = [d["lang"] for d in docs]
    cfg = MinHashConfig(num_perm=num_perm)
    t0 = time.perf_counter()
    ds_vals = []
    for t, lg in zip(texts, langs, strict=True):
        m = MinHash(num_perm=num_perm, seed=cfg.seed)
        m.update_batch([s.encode("utf-8") for s in shingles(t, lg, cfg)])
        ds_vals.append(m.hashvalues)
    t_ds = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_sha1, _ = Signer(cfg.model_copy(update={"hash": "sha1"})).sign(texts, langs)
    t_sha1 = time.perf_counter() - t0
    assert np.array_equal(np.stack(ds_vals), ours_sha1), "sha1 signatures differ from datasketch"
    t0 = time.perf_counter()
    ours, _ = Signer(cfg).sign(texts, langs)
    t_poly = time.perf_counter() - t0
    for i in range(0, len(texts), max(1, len(texts) // 50)):        # datasketch + our hashfunc
        m = MinHash(num_perm=num_perm, seed=cfg.seed, hashfunc=shingle_hash32)
        m.update_batch([s.encode("utf-8") for s in shingles(texts[i], langs[i], cfg)])
        assert np.array_equal(m.hashvalues, ours[i]), "poly64 signatures differ from datasketch"
    n = len(texts)
    return {"docs": n, "num_perm": num_perm, "datasketch_docs_s": n / t_ds, "ours_sha1_docs_s": n / t_sha1,
            "ours_poly64_docs_s": n / t_poly, "ratio_sha1": t_ds / t_sha1, "ratio_poly64": t_ds / t_poly}


class _Whitespace:
    """A datatrove WordTokenizer that splits on whitespace (no model download, same as ours)."""

    @staticmethod
    def make():
        from datatrove.utils.word_tokenizers import WordTokenizer

        class Whitespace(WordTokenizer):
            def word_tokenize(self, text: str) -> list[str]:
                return text.split()

            def sent_tokenize(self, text: str) -> list[str]:
                return text.split("\n")

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                out, pos = [], 0
                for w in text.split():
                    s = text.index(w, pos)
                    out.append((s, s + len(w)))
                    pos = s + len(w)
                return out
        return Whitespace()


def run_datatrove(jsonl_dir: Path, work: Path, workers: int = 2) -> tuple[float, int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg = MinhashConfig()                        # 5-grams, 14 buckets x 8 hashes (FineWeb)
    tok = _Whitespace.make()
    t0 = time.perf_counter()
    common = {"logging_dir": str(work / "logs"), "skip_completed": False}
    LocalPipelineExecutor(pipeline=[JsonlReader(str(jsonl_dir)),
                                    MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg, language=tok)],
                          tasks=workers, workers=workers, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(work / "sigs"),
                                                        output_folder=str(work / "buckets"), config=cfg)],
                          tasks=cfg.num_buckets, workers=workers, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"),
                                                        output_folder=str(work / "remove_ids"), config=cfg)],
                          tasks=1, **common).run()
    LocalPipelineExecutor(pipeline=[JsonlReader(str(jsonl_dir)),
                                    MinhashDedupFilter(input_folder=str(work / "remove_ids"),
                                                       exclusion_writer=JsonlWriter(str(work / "removed"))),
                                    JsonlWriter(str(work / "kept"))],
                          tasks=workers, workers=workers, **common).run()
    secs = time.perf_counter() - t0
    removed = 0
    for f in (work / "removed").glob("*"):
        import gzip
        with gzip.open(f, "rt") as fh:
            removed += sum(1 for _ in fh)
    return secs, removed


def write_inputs(docs: list[dict], root: Path, shards: int = 2) -> tuple[Path, Path]:
    import pyarrow.parquet as pq

    jdir, pdir = root / "jsonl", root / "parquet"
    jdir.mkdir(parents=True)
    pdir.mkdir(parents=True)
    for s in range(shards):
        with (jdir / f"part-{s}.jsonl").open("w", encoding="utf-8") as fh:
            for i in range(s, len(docs), shards):
                fh.write(json.dumps({"text": docs[i]["text"], "id": str(i)}, ensure_ascii=False) + "\n")
    t = docs_table(docs)
    pq.write_to_dataset(t, str(pdir), partitioning=["lang"], partitioning_flavor="hive")
    return jdir, pdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", default=None, help="docs.jsonl (default: build the project sample)")
    ap.add_argument("--sig-docs", type=int, default=1500)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--docs", type=int, default=0,
                    help="end-to-end corpus of this many docs made by bench.dedup_scale (mutations of "
                         "sample segments); default: the sample + one mutated copy of half of it")
    args = ap.parse_args(argv)
    os.environ.setdefault("Q3_PROGRESS", "0")
    path = args.sample or sample_path()
    docs = [d for d in sample_docs(path) if d["lang"] != "code_Python"]
    print(f"sample: {len(docs)} docs from {path}")

    sig = bench_signatures(random.Random(0).sample(docs, min(args.sig_docs, len(docs))))
    print(json.dumps(sig, indent=1))

    root = Path(tempfile.mkdtemp(prefix="q3-dedup-bench-"))
    if args.docs:
        import pyarrow.dataset as ds

        from bench.dedup_scale import make_corpus
        make_corpus(root / "scale", args.docs)
        corpus = ds.dataset(str(root / "scale")).to_table(columns=["text", "lang", "url"]).to_pylist()
        shutil.rmtree(root / "scale")
    else:
        corpus = plant(docs, random.Random(1), frac=0.5)
    try:
        jdir, pdir = write_inputs(corpus, root)
        n = len(corpus)
        dt_secs, dt_removed = run_datatrove(jdir, root / "dt")
        fw = {"minhash": {"preset": "fineweb", "verify": "none"}}
        res = {"docs": n, "datatrove_s": dt_secs, "datatrove_removed": dt_removed,
               "corpus": "bench.dedup_scale mutations of sample segments" if args.docs
               else "sample + planted mutations"}
        t0 = time.perf_counter()
        st = __import__("dataproc.jobs.dedup", fromlist=["run_dedup"]).run_dedup(
            pdir, root / "ours_local", DedupConfig(runner="local", scope="global", **fw))
        res["ours_local_s"] = time.perf_counter() - t0
        res["ours_local_removed"] = st["exact_duplicate"] + st["near_duplicate"]
        if not args.no_spark:
            from dataproc.jobs.dedup import run_dedup
            from dataproc.spark import get_spark
            parts = str(max(8, min(64, n // 20_000)))
            spark = get_spark("q3-dedup-bench", master="local[2]", conf={"spark.sql.shuffle.partitions": parts})
            spark.range(10).count()                                    # JVM warm-up outside the timing
            t0 = time.perf_counter()
            st = run_dedup(pdir, root / "ours_spark", DedupConfig(runner="spark", scope="global", **fw), spark=spark)
            res["ours_spark_s"] = time.perf_counter() - t0
            res["ours_spark_removed"] = st["exact_duplicate"] + st["near_duplicate"]
            spark.stop()
        for k in ("datatrove", "ours_local", "ours_spark"):
            if f"{k}_s" in res:
                res[f"{k}_docs_s"] = n / res[f"{k}_s"]
        res["ratio_local_vs_datatrove"] = res["datatrove_s"] / res["ours_local_s"]
        if "ours_spark_s" in res:
            res["ratio_spark_vs_datatrove"] = res["datatrove_s"] / res["ours_spark_s"]
        print(json.dumps(res, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _append(sig, res, " ".join(["python -m bench.dedup_bench", *(argv if argv is not None else sys.argv[1:])]))
    return 0


def _append(sig: dict, e2e: dict, cmd: str) -> None:
    lines = [
        "", f"### dedup_bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"Command: `{cmd}` — machine: 2-core CPU VM, 24 GiB RAM.", "",
        f"MinHash signatures, {sig['docs']} sample docs, {sig['num_perm']} permutations (outputs asserted identical):", "",
        "| implementation | docs/s | speed-up vs datasketch |", "|---|---:|---:|",
        f"| datasketch.MinHash.update_batch (sha1) | {sig['datasketch_docs_s']:.0f} | 1.0x |",
        f"| ours, hash=sha1 (bit-identical to datasketch default) | {sig['ours_sha1_docs_s']:.0f} | {sig['ratio_sha1']:.1f}x |",
        f"| ours, hash=poly64 (default; = datasketch with hashfunc=shingle_hash32) | {sig['ours_poly64_docs_s']:.0f} | {sig['ratio_poly64']:.1f}x |",
        "", f"End-to-end MinHash dedup, {e2e['docs']} docs ({e2e['corpus']}), 5-grams, 14x8 bands; "
        f"1-minute load average at the end {os.getloadavg()[0]:.1f}:", "",
        "| pipeline | seconds | docs/s | removed | speed-up vs datatrove |", "|---|---:|---:|---:|---:|",
        f"| datatrove 0.10.1 (Signature/Buckets/Cluster/Filter, LocalPipelineExecutor, 2 workers) | {e2e['datatrove_s']:.1f} | {e2e['datatrove_docs_s']:.0f} | {e2e['datatrove_removed']} | 1.0x |",
        f"| ours, local runner | {e2e['ours_local_s']:.1f} | {e2e['ours_local_docs_s']:.0f} | {e2e['ours_local_removed']} | {e2e['ratio_local_vs_datatrove']:.1f}x |",
    ]
    if "ours_spark_s" in e2e:
        lines.append(f"| ours, Spark local[2] (incl. exact dedup, CC in Spark, Parquet out) | {e2e['ours_spark_s']:.1f} | "
                     f"{e2e['ours_spark_docs_s']:.0f} | {e2e['ours_spark_removed']} | {e2e['ratio_spark_vs_datatrove']:.1f}x |")
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if "\n## Dedup" not in text:
        text += "\n## Dedup\n"
    RESULTS.write_text(text + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
