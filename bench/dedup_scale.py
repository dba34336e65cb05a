"""Scale bench: Spark dedup of >= 1,000,000 documents made from the sample by mutation.

    nohup python -m bench.dedup_scale --docs 1000000 > dedup_scale.log 2>&1 &

Corpus (written as Parquet shards, DOC_SCHEMA, ~1.6 KB/doc): a "unique" document joins two random
~800-character segments of real sample documents; 25% of documents are near-duplicates (random
mutation strength: word/char edits, insertions, a reorder, truncation) of an earlier document and
5% exact copies. Then `run_dedup` with runner=spark, local[2], default config (256 perms, verify).
Peak memory = max over 1 s samples of the RSS summed over this process and all its children (the
Spark JVM and its Python workers), via psutil. Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from dataproc.dedup.config import DedupConfig
from dataproc.dedup.planted import mutate, sample_docs, sample_path
from q3.schemas import DOC_SCHEMA, content_id

RESULTS = Path(__file__).with_name("RESULTS.md")


class PeakRSS:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(1.0)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def segments(docs: list[dict], size: int = 800) -> list[tuple[str, str]]:
    out = []
    for d in docs:
        t = d["text"]
        for s in range(0, len(t) - size // 2, size):
            out.append((t[s:s + size], d["lang"]))
    return out


def make_corpus(out: Path, n: int, seed: int = 0, shard: int = 50_000) -> dict:
    docs = [d for d in sample_docs(sample_path()) if d["lang"] != "code_Python"]
    segs = segments(docs)
    by_lang: dict[str, list[str]] = {}
    for t, lg in segs:
        by_lang.setdefault(lg, []).append(t)
    langs = sorted(by_lang)
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    recent: list[tuple[str, str]] = []
    counts = {"unique": 0, "near": 0, "exact": 0}
    written = 0
    while written < n:
        rows = []
        for _ in range(min(shard, n - written)):
            r = rng.random()
            if recent and r < 0.05:
                text, lg = rng.choice(recent)
                counts["exact"] += 1
            elif recent and r < 0.30:
                base, lg = rng.choice(recent)
                text = mutate(base, lg, rng, rng.random())
                counts["near"] += 1
            else:
                lg = rng.choice(langs)
                pool = by_lang[lg]
                text = rng.choice(pool) + "\n" + rng.choice(pool)
                counts["unique"] += 1
                recent.append((text, lg))
                if len(recent) > 20_000:
                    recent.pop(rng.randrange(len(recent)))
            rows.append((text, lg))
        i0 = written
        t = pa.table({
            "id": [content_id(t) for t, _ in rows],
            "text": [t for t, _ in rows],
            "source": ["scale"] * len(rows),
            "url": [f"scale://{i0 + k}" for k in range(len(rows))],
            "lang": [lg for _, lg in rows],
            "n_chars": pa.array([len(t) for t, _ in rows], pa.int64()),
        })
        arrays = [t.column(f.name) if f.name in t.schema.names else pa.nulls(t.num_rows, f.type) for f in DOC_SCHEMA]
        pq.write_table(pa.Table.from_arrays(arrays, schema=DOC_SCHEMA), str(out / f"part-{i0 // shard:05d}.parquet"))
        written += len(rows)
        print(f"corpus: {written:,}/{n:,}", flush=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--work", default=str(Path(os.environ.get("Q3_DATA", "data")) / "bench-dedup-scale"))
    ap.add_argument("--driver-memory", default="8g")
    args = ap.parse_args(argv)
    os.environ.setdefault("Q3_PROGRESS", "0")
    work = Path(args.work)
    inp = work / f"input-{args.docs}"
    t0 = time.time()
    if not (inp / "_DONE").exists():
        counts = make_corpus(inp, args.docs)
        (inp / "_DONE").write_text(json.dumps(counts))
    counts = json.loads((inp / "_DONE").read_text())
    gen_s = time.time() - t0
    size = sum(f.stat().st_size for f in inp.glob("*.parquet"))
    print(f"corpus ready: {args.docs:,} docs, {size / 2**20:.0f} MiB parquet, {counts}", flush=True)

    from dataproc.jobs.dedup import run_dedup
    from q3.engine.session import get_spark

    with PeakRSS() as mem:
        spark = get_spark("q3-dedup-scale", master="local[2]",
                          conf={"spark.driver.memory": args.driver_memory,
                                "spark.sql.shuffle.partitions": "32",
                                "spark.local.dir": str(work / "spark-tmp")})
        t1 = time.time()
        stats = run_dedup(inp, work / f"output-{args.docs}", DedupConfig(runner="spark"), spark=spark)
        secs = time.time() - t1
        spark.stop()
    res = {"docs": args.docs, "planted": counts, "seconds": round(secs, 1), "docs_per_s": round(args.docs / secs, 1),
           "peak_rss_gib": round(mem.peak / 2**30, 2), "corpus_gen_s": round(gen_s, 1),
           "exact_duplicate": stats["exact_duplicate"], "near_duplicate": stats["near_duplicate"],
           "docs_kept": stats["docs_kept"], "histogram": stats["cluster_size_histogram"]}
    print(json.dumps(res, indent=1), flush=True)
    cmd = "python -m bench.dedup_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if "\n## Dedup" not in text:
        text += "\n## Dedup\n"
    text += (f"\n### dedup_scale ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
             f"Command: `{cmd}` — Spark local[2], driver memory {args.driver_memory}, 2-core VM, 24 GiB RAM; "
             f"1-minute load average at the end {os.getloadavg()[0]:.1f}.\n\n"
             f"| docs | parquet in | seconds | docs/s | peak RSS (driver JVM + Python workers) | exact removed | near removed | kept |\n"
             "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
             f"| {args.docs:,} | {size / 2**20:.0f} MiB | {secs:.0f} | {args.docs / secs:.0f} | {mem.peak / 2**30:.2f} GiB | "
             f"{stats['exact_duplicate']:,} | {stats['near_duplicate']:,} | {stats['docs_kept']:,} |\n\n"
             f"Planted: {counts}. Cluster sizes: "
             + ", ".join(f"{h['size']}: {h['clusters']:,}" for h in stats["cluster_size_histogram"]) + "\n")
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
