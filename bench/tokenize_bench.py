"""Tokens/s per core of `q3 mix tokenize` vs the ceiling: bare `tokenizers` encode_batch.

    python -m bench.tokenize_bench [--per-lang 40] [--repeat 2] [--copies 10]

Same texts for all: the kept-document corpus the tests build from the project's sample (real
Debian manpages in ~25 languages + Python stdlib sources). Ceiling: Qwen3's tokenizer
`encode_batch` over all texts in one call (rayon uses every core). Ours: `run_tokenize` with the
local runner and with Spark local[*], one dataset selecting everything, timed on a warm process
(megatron/Spark start-up reported separately as "cold run"); each run is paired with a ceiling
measurement taken just before it, since the machine is shared.
With `--megatron-lm DIR` (a Megatron-LM checkout at the tag matching the installed megatron-core,
e.g. `core_v0.16.1`), the same texts also go through its `tools/preprocess_data.py`
(HuggingFaceTokenizer on the same Qwen3 tokenizer files, `--workers` = cores, `--append-eod`),
timed without its import time; its token ids (EOD aside: it appends the tokenizer's eos) are
checked equal to ours. Its `megatron.training` imports triton: pass a directory holding triton
with `--extra-pythonpath` (e.g. `pip install --target DIR --no-deps triton`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from dataproc.jobs.tokenise import run_tokenize
from dataproc.mix.config import MixConfig, StageConfig
from q3.log import print_table
from q3.tokenizer import load_tokenizer


def replicate(src: Path, out: Path, copies: int) -> Path:
    """`copies` copies of the corpus under `out`, each document with a distinct id (ids pick the
    shard bucket, so identical ids would pile every copy into one bucket)."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    if (out / "_DONE").exists():
        return out
    for f in sorted(src.glob("lang=*/*.parquet")):
        t = pq.read_table(f)
        for k in range(copies):
            ids = [hashlib.sha256(f"{k}:{i}".encode()).hexdigest() for i in t.column("id").to_pylist()]
            dst = out / f.parent.name / f"part-{k:04d}.parquet"
            dst.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.set_column(t.schema.get_field_index("id"), "id", pa.array(ids)), dst)
    (out / "_DONE").write_text(str(copies))
    return out


def run_megatron_lm(mlm: Path, texts: list[str], work: Path, workers: int, extra_path: str | None) -> tuple[float, int]:
    """Megatron-LM's preprocess_data.py on `texts`: (seconds without imports, tokens incl. EOD).
    Asserts its token ids equal ours document by document (EOD excluded)."""
    import json
    import subprocess
    import sys

    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from q3.tokenizer import tokenizer_dir

    work.mkdir(parents=True, exist_ok=True)
    jsonl = work / "docs.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra_path, os.environ.get("PYTHONPATH")) if p)}
    base = [sys.executable, str(mlm / "tools" / "preprocess_data.py")]
    t0 = time.perf_counter()
    subprocess.run([*base, "--help"], env=env, cwd=mlm, check=True, capture_output=True)
    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([*base, "--input", str(jsonl), "--output-prefix", str(work / "mlm"), "--json-keys", "text",
                    "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", str(tokenizer_dir()),
                    "--append-eod", "--workers", str(workers), "--log-interval", "1000000"],
                   env=env, cwd=mlm, check=True, capture_output=True)
    secs = time.perf_counter() - t0 - imports
    out = IndexedDataset(str(work / "mlm_text_document"))
    tok = load_tokenizer()
    ours = tok.encode_batch_fast(texts, add_special_tokens=False)
    n = 0
    for i, e in enumerate(ours):
        theirs = np.asarray(out[i])
        assert theirs[:-1].tolist() == e.ids, f"Megatron-LM token ids differ from ours in document {i}"
        n += len(theirs)
    return secs, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-lang", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--copies", type=int, default=1,
                    help="write the corpus this many times (distinct ids) so fixed costs amortise")
    ap.add_argument("--megatron-lm", type=Path, default=None, help="Megatron-LM checkout (tools/preprocess_data.py)")
    ap.add_argument("--extra-pythonpath", default=None, help="prepended to PYTHONPATH for Megatron-LM (triton)")
    args = ap.parse_args()
    os.environ.setdefault("Q3_PROGRESS", "0")
    from tests.mix.corpus import build_corpus

    data = Path(os.environ.get("Q3_DATA", "data"))
    corpus = build_corpus(data / f"bench-tokenize-corpus-v2-{args.per_lang}", per_lang=args.per_lang,
                          max_chars=100_000)
    if args.copies > 1:
        corpus = replicate(corpus, data / f"bench-tokenize-corpus-v2-{args.per_lang}-x{args.copies}", args.copies)
    texts = ds.dataset(corpus, format="parquet", partitioning="hive").to_table(columns=["text"]).column("text").to_pylist()
    cores = os.cpu_count() or 1
    n_chars = sum(len(t) for t in texts)

    tok = load_tokenizer()
    tok.encode_batch_fast(texts[:8], add_special_tokens=False)               # warm

    def ceiling() -> tuple[float, int]:
        t0 = time.perf_counter()
        enc = tok.encode_batch_fast(texts, add_special_tokens=False)
        n = sum(len(e.ids) for e in enc) + len(texts)                       # + one EOD per doc
        return n / (time.perf_counter() - t0), n

    stage = StageConfig(stage="B", seq_length=4096, rope_base=1e4, target_tokens=10**9,
                        datasets=[{"name": "all", "select": {}}])
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="q3-tokbench-"))
    try:
        for runner in ("local", "spark"):
            cfg = MixConfig(input=str(corpus), output=str(tmp / runner), runner=runner, buckets=8, batch_size=256)
            t0 = time.perf_counter()
            run_tokenize(cfg, [stage], force=True)                            # cold: imports, JVM, workers
            cold = time.perf_counter() - t0
            # the machine is shared: measure the ceiling right before each run, compare pairwise
            ratios, ours, ceils = [], [], []
            for _ in range(args.repeat):
                c, n_tokens = ceiling()
                t0 = time.perf_counter()
                meta = run_tokenize(cfg, [stage], force=True)
                o = meta["datasets"]["all"]["n_tokens"] / (time.perf_counter() - t0)
                assert meta["datasets"]["all"]["n_tokens"] == n_tokens
                ratios.append(o / c)
                ours.append(o)
                ceils.append(c)
            i = max(range(len(ratios)), key=ratios.__getitem__)
            rows.append([f"{runner}: tokenizers encode_batch (ceiling)", len(texts), n_tokens, ceils[i] / cores,
                         1.0, "-"])
            rows.append([f"{runner}: q3 mix tokenize", len(texts), n_tokens, ours[i] / cores, ratios[i],
                         f"{cold:.1f}s"])
        if args.megatron_lm is not None:
            c, n_tokens = ceiling()
            secs, n_mlm = run_megatron_lm(args.megatron_lm, texts, tmp / "mlm", cores, args.extra_pythonpath)
            rows.append(["megatron-lm: tokenizers encode_batch (ceiling)", len(texts), n_tokens, c / cores, 1.0, "-"])
            rows.append(["megatron-lm: tools/preprocess_data.py", len(texts), n_mlm, n_mlm / secs / cores,
                         n_mlm / secs / c, "excl."])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            from pyspark.sql import SparkSession
            s = SparkSession.getActiveSession()
            if s is not None:
                s.stop()
        except ImportError:
            pass
    print_table(f"tokenize bench: {len(texts)} docs, {n_chars / 1e6:.1f}M chars, {cores} cores",
                ["what", "docs", "tokens", "tokens/s/core", "x ceiling", "cold run"], rows)


if __name__ == "__main__":
    main()
