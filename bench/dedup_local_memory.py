"""Peak RSS and wall time of the local dedup runner (issue 17), one child process per run.

    Q3_DATA=<data> PYTHONPATH=$PWD python -m bench.dedup_local_memory --docs 100000 --work /tmp/ldd \
        [--code /tmp/ldd/before] [--label before] [--config fineweb]

Corpus: `bench.dedup_scale.make_corpus` (reused from `<work>/input-<docs>` when present). Each run is
`run_dedup(runner=local)` in a fresh child under `/usr/bin/time -v` (peak RSS = the child's maximum
resident set size); `--code DIR` puts another checkout first on PYTHONPATH (e.g. `git archive` of
the commit before the change) so that before and after run the same corpus in the same session.
Prints one JSON line; `--append` adds a table row to bench/RESULTS.md. `--chunk-texts N` instead
measures what one exact-Jaccard chunk of N texts of the corpus costs (RSS as Python strings, then
after `jaccard_pairs` on them): the term that `local.verify_rows` bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
CONFIGS = {"default": {}, "fineweb": {"scope": "global", "minhash": {"preset": "fineweb", "verify": "none"}}}

CHILD = """
import json, logging, sys, time
from dataproc.dedup.config import DedupConfig
from dataproc.jobs.dedup import run_dedup
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
cfg = DedupConfig(runner="local", **json.loads(sys.argv[3]))
t0 = time.time()
st = run_dedup(sys.argv[1], sys.argv[2], cfg)
print("RESULT " + json.dumps({"seconds": time.time() - t0, "exact": st["exact_duplicate"],
      "near": st["near_duplicate"], "kept": st["docs_kept"]}), flush=True)
"""


def run_once(inp: Path, out: Path, code: Path, cfg: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(code), Q3_PROGRESS="0", OMP_NUM_THREADS="1")
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, str(inp), str(out), json.dumps(cfg)],
                       env=env, capture_output=True, text=True)
    sys.stderr.write(p.stderr[-4000:])
    if p.returncode:
        raise SystemExit(f"child failed ({p.returncode})")
    res = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    res["peak_rss_gib"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)[1]) / 2**20
    shutil.rmtree(out, ignore_errors=True)
    return res


def chunk_texts_memory(inp: Path, n: int) -> dict:
    import numpy as np
    import psutil
    import pyarrow.dataset as ds

    from dataproc.dedup.config import MinHashConfig
    from dataproc.dedup.minhash import jaccard_pairs

    proc, cfg = psutil.Process(), MinHashConfig()
    jaccard_pairs(["a b c d e f"], ["eng_Latn"], np.array([0]), np.array([0]), cfg)     # kernels loaded
    r0 = proc.memory_info().rss
    t = ds.dataset(str(inp)).head(n, columns=["text", "lang"])
    text_bytes = t.column("text").nbytes
    texts, langs = t.column("text").to_pylist(), t.column("lang").to_pylist()
    del t
    r1 = proc.memory_info().rss
    jaccard_pairs(texts, langs, np.arange(n - 1), np.arange(1, n), cfg)
    r2 = proc.memory_info().rss
    return {"texts": n, "utf8_mib": round(text_bytes / 2**20), "as_str_gib": round((r1 - r0) / 2**30, 2),
            "after_jaccard_gib": round((r2 - r0) / 2**30, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--work", default="/tmp/q3-dedup-local-memory")
    ap.add_argument("--code", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--label", default="after")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="default")
    ap.add_argument("--append", action="store_true", help="add the row to bench/RESULTS.md")
    ap.add_argument("--chunk-texts", type=int, default=0, help="measure one exact-Jaccard chunk of N texts")
    args = ap.parse_args(argv)
    work = Path(args.work)
    inp = work / f"input-{args.docs}"
    if not (inp / "_DONE").exists():
        from bench.dedup_scale import make_corpus
        (inp / "_DONE").write_text(json.dumps(make_corpus(inp, args.docs)))
    if args.chunk_texts:
        print(json.dumps(chunk_texts_memory(inp, args.chunk_texts)), flush=True)
        return 0
    mib = sum(f.stat().st_size for f in inp.glob("*.parquet")) / 2**20
    res = run_once(inp, work / f"out-{args.label}-{args.docs}", Path(args.code), CONFIGS[args.config])
    res.update(docs=args.docs, label=args.label, config=args.config, parquet_mib=round(mib),
               load=round(os.getloadavg()[0], 1), at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(json.dumps(res), flush=True)
    if args.append:
        with RESULTS.open("a") as fh:
            fh.write(f"| {res['label']} | {res['config']} | {res['docs']:,} | {res['seconds']:.1f} | "
                     f"{res['peak_rss_gib']:.2f} GiB | {res['exact']:,} / {res['near']:,} / {res['kept']:,} | "
                     f"{res['load']} | {res['at']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
