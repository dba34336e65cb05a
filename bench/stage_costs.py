"""Per-core cost of every corpus stage, measured on the stages' real code; the inputs of docs/scale.md.

    PYTHONPATH=$PWD python -m bench.stage_costs --spark-docs 50000    # sizes 2,000 and 10,000 docs
    PYTHONPATH=$PWD python -m bench.stage_costs --sizes --spark-docs 50000   # only the Spark row, into --out

Corpus: the project's sample (Debian man pages in 26 languages, real text) scaled by the recipe of
bench/dedup_scale.py (two ~800-char segments joined; 25% near-duplicates by `planted.mutate`, 5%
exact copies), so the dedup phases see realistic candidate and cluster counts. Each stage is the
function its runners call on a batch (normalise/LID/quality/PII stages, the dedup `Annotator`,
`bucket_edges_np`, `verify_edges_np` + `exact_edge_filter`, `local_components`, line dedup,
`Decontaminator`, `LabelStage`, `q3.tokenizer.encode_batch`), timed in process CPU time (the shared
machine's load distorts wall time; CPU time is what a core-hour bills), best of `--repeats`.
Map stages are also run in 1 and 2 worker processes (wall time) for their parallel scaling.
Writes bench/results/stage_costs.json, which `q3 data estimate` reads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from q3.paths import ROOT

OUT = ROOT / "bench" / "results" / "stage_costs.json"
BATCH = 512
MAP_STAGES = ("read", "normalise", "langid", "quality", "pii", "dedup_signatures", "decontam",
              "label", "tokenise")


def _sample_docs(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [{"text": r["text"], "lang": r.get("lang_hint") or "und"} for r in rows]


def scaled_docs(sample: list[dict], n: int, seed: int = 0) -> list[dict]:
    """bench/dedup_scale.py's recipe (unique = two joined segments; 25% near, 5% exact copies)."""
    from bench.dedup_scale import segments
    from dataproc.dedup.planted import mutate

    by_lang: dict[str, list[str]] = {}
    for t, lg in segments([d for d in sample if d["lang"] != "code_Python"]):
        by_lang.setdefault(lg, []).append(t)
    langs = sorted(by_lang)
    rng = random.Random(seed)
    recent: list[tuple[str, str]] = []
    out = []
    for i in range(n):
        r = rng.random()
        if recent and r < 0.05:
            text, lg = rng.choice(recent)
        elif recent and r < 0.30:
            base, lg = rng.choice(recent)
            text = mutate(base, lg, rng, rng.random())
        else:
            lg = rng.choice(langs)
            text = rng.choice(by_lang[lg]) + "\n" + rng.choice(by_lang[lg])
            recent.append((text, lg))
        out.append({"id": f"d{i}", "text": text, "lang": lg, "source": "scale", "url": f"scale://{i}"})
    return out


def _batches(docs: list[dict]) -> list[pa.RecordBatch]:
    from dataproc.stage import conform

    t = pa.table({k: [d[k] for d in docs] for k in ("id", "text", "lang", "source", "url")})
    return [conform(b) for b in t.to_batches(max_chunksize=BATCH)]


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(best, median) CPU seconds of `fn` over `repeats` runs, and its last result."""
    times, res = [], None
    for _ in range(repeats):
        t = time.process_time()
        res = fn()
        times.append(time.process_time() - t)
    return min(times), statistics.median(times), res


class Stages:
    """Each stage built once (models loaded), as the runners do per worker process."""

    def __init__(self, work: Path, label_models: Path | None):
        from dataproc.config import PipelineConfig
        from dataproc.dedup.annotate import Annotator
        from dataproc.dedup.config import DecontamConfig, DedupConfig
        from dataproc.dedup.decontam import Decontaminator
        from dataproc.stages import build_stages

        cfg = PipelineConfig.model_validate({"input": [], "output": str(work / "unused"), "pii": {"enabled": True}})
        self.normalise, self.langid, self.quality, self.pii = build_stages(cfg)
        self.dedup_cfg = DedupConfig(runner="local")
        self.annotator = Annotator(self.dedup_cfg)
        self.decontam = Decontaminator(DecontamConfig(evals=[str(work / "evals" / "bench_eval.jsonl")]))
        self.label = None
        if label_models is not None:
            from labeling.apply import LabelStage
            self.label = LabelStage(label_models)

    def run(self, name: str, batches: list[pa.RecordBatch], read_path: str | None = None) -> object:
        if name == "read":
            from dataproc.config import InputSpec
            from dataproc.readers import read_file
            return sum(b.num_rows for b in read_file(read_path, InputSpec(path=read_path, format="jsonl")))
        if name == "tokenise":
            from q3.tokenizer import encode_batch
            return sum(len(x) + 1 for b in batches for x in encode_batch(b.column("text").to_pylist()))
        if name == "dedup_signatures":
            return [self.annotator(_ann_input(b, i * BATCH)) for i, b in enumerate(batches)]
        stage = getattr(self, name)
        return [stage(b) for b in batches]


def _ann_input(b: pa.RecordBatch, rk0: int) -> pa.RecordBatch:
    n = b.num_rows
    return pa.RecordBatch.from_pydict({
        "rk": pa.array(np.arange(rk0, rk0 + n, dtype=np.int64)), "id": b.column("id"), "url": b.column("url"),
        "source": b.column("source"), "lang": b.column("lang"), "text": b.column("text"),
        "score": pa.nulls(n, pa.float32())})


_WORKER: dict = {}


def _worker(args: tuple) -> float:
    name, lo, hi = args
    st, batches, path = _WORKER["stages"], _WORKER["batches"], _WORKER["path"]
    t = time.process_time()
    st.run(name, batches[lo:hi], path)
    return time.process_time() - t


def parallel_wall(name: str, n_batches: int, procs: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds summed over the workers) for the stage over all batches split
    across `procs` forked processes. Equal CPU sums for 1 and 2 processes mean the work divides
    with no per-process overhead; the wall speed-up then says how many cores the machine gave."""
    ctx = mp.get_context("fork")
    step = -(-n_batches // procs)
    parts = [(name, i, min(i + step, n_batches)) for i in range(0, n_batches, step)]
    if name == "read":      # one file: each process reads it all (2x the work, halved below)
        parts = [(name, 0, 0)] * procs
    t = time.perf_counter()
    with ctx.Pool(procs) as pool:
        cpu = sum(pool.map(_worker, parts))
    return time.perf_counter() - t, cpu


def measure_size(st: Stages, docs: list[dict], work: Path, repeats: int, scaling: bool) -> dict:
    from dataproc.dedup.components import (
        bucket_edges_np,
        exact_edge_filter,
        local_components,
        verify_edges_np,
    )
    from dataproc.dedup.lines import line_dedup_table
    from dataproc.dedup.lsh import min_matches

    n = len(docs)
    text_bytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    path = work / f"corpus-{n}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d["text"], "url": d["url"], "lang": d["lang"]}, ensure_ascii=False) + "\n")
    raw = _batches(docs)
    res: dict = {"docs": n, "text_bytes": text_bytes, "stages": {}}

    def record(name: str, cpu: float, med: float, **extra) -> None:
        res["stages"][name] = {"cpu_s": round(cpu, 4), "cpu_s_median": round(med, 4),
                               "docs_per_cpu_s": round(n / cpu, 1), "bytes_per_cpu_s": round(text_bytes / cpu),
                               **extra}
        print(f"  {n:>7,} docs  {name:<18} {cpu:8.2f} CPU s  {n / cpu:10,.0f} docs/s  "
              f"{text_bytes / cpu / 2**20:8.2f} MiB/s", flush=True)

    b, m, _ = _best(lambda: st.run("read", raw, str(path)), repeats)
    record("read", b, m)
    # each stage sees every document (the upper bound per doc); later stages get the LID output
    b, m, norm = _best(lambda: st.run("normalise", raw), repeats)
    record("normalise", b, m)
    b, m, lid = _best(lambda: st.run("langid", norm), repeats)
    record("langid", b, m)
    lid_in = [x.set_column(x.schema.get_field_index("reason"), "reason", pa.nulls(x.num_rows, pa.string()))
              for x in lid]       # a rejected row would skip later stages: measure them on every row
    for name in ("quality", "pii", "decontam"):
        b, m, _ = _best(lambda name=name: st.run(name, lid_in), repeats)
        record(name, b, m)
    if st.label is not None:
        b, m, _ = _best(lambda: st.run("label", raw), repeats)
        record("label", b, m)
    b, m, toks = _best(lambda: st.run("tokenise", raw), repeats)
    record("tokenise", b, m, tokens=toks, bytes_per_token=round(text_bytes / toks, 3))
    res["tokens"] = toks

    # dedup phases, as the local runner runs them (Spark: the same functions per partition + shuffles)
    b, m, metas = _best(lambda: st.run("dedup_signatures", raw), repeats)
    meta = pa.Table.from_batches(metas)
    band_bytes = meta.column("bands").nbytes
    record("dedup_signatures", b, m, meta_bytes_per_doc=round(meta.nbytes / n, 1),
           band_key_bytes_per_doc=round(band_bytes / n, 1))
    from dataproc.dedup.exact import exact_keys
    texts = [d["text"] for d in docs]
    b, m, nh = _best(lambda: exact_keys(texts), repeats)
    record("dedup_exact", b, m, exact_duplicates=int(n - len(np.unique(nh))))
    import pyarrow.compute as pc
    nb = len(meta.column("bands")[0])
    keys = np.asarray(pc.list_flatten(meta.column("bands")).to_numpy()).reshape(-1, nb)
    rks = meta.column("rk").to_numpy()
    scope = np.unique(np.array([d["lang"] for d in docs]), return_inverse=True)[1]
    b, m, edges = _best(lambda: bucket_edges_np(rks, scope, keys), repeats)
    record("dedup_lsh_buckets", b, m, candidate_edges=int(len(edges)), bands=nb)
    mh = st.dedup_cfg.minhash
    p = mh.num_perm
    sigs = np.asarray(pc.list_flatten(meta.column("sig")).to_numpy()).reshape(-1, p)
    need = min_matches(mh.threshold - mh.prefilter_margin, p)

    def verify() -> np.ndarray:
        e = verify_edges_np(edges, {int(r): i for i, r in enumerate(rks)}, sigs, need)
        if not len(e):
            return e
        batch = pa.RecordBatch.from_pydict({
            "u": e[:, 0], "v": e[:, 1], "tu": [texts[u] for u in e[:, 0]], "lu": [docs[u]["lang"] for u in e[:, 0]],
            "tv": [texts[v] for v in e[:, 1]], "lv": [docs[v]["lang"] for v in e[:, 1]]})
        k = exact_edge_filter(batch, mh)
        return np.stack([k.column("u").to_numpy(), k.column("v").to_numpy()], axis=1).astype(np.int64)

    b, m, kept_edges = _best(verify, repeats)
    record("dedup_verify", b, m, verified_edges=int(len(kept_edges)))
    b, m, comp = _best(lambda: local_components(rks, kept_edges), repeats)
    roots = np.array(list(comp.values()))
    sizes = np.unique(roots, return_counts=True)[1]
    record("dedup_components", b, m, near_removed=int(n - len(sizes)), largest_cluster=int(sizes.max()))
    table = pa.Table.from_batches(lid_in)
    b, m, (_, lstats) = _best(lambda: line_dedup_table(table, st.dedup_cfg.lines), repeats)
    from dataproc.dedup.lines import unit_hashes
    units = sum(unit_hashes(x, st.dedup_cfg.lines).num_rows for x in lid_in)
    record("dedup_lines", b, m, unit_hashes_per_doc=round(units / n, 2), **lstats)

    if scaling:
        _WORKER.update(stages=st, batches=raw, path=str(path))
        res["parallel"] = {}
        for name in MAP_STAGES:
            if name not in res["stages"]:
                continue
            (w1, c1), (w2, c2) = parallel_wall(name, len(raw), 1), parallel_wall(name, len(raw), 2)
            if name == "read":
                w2, c2 = w2 / 2, c2 / 2      # both processes read the whole file: 2x the work
            res["parallel"][name] = {"wall_1": round(w1, 3), "wall_2": round(w2, 3), "speedup": round(w1 / w2, 2),
                                     "cpu_1": round(c1, 3), "cpu_2": round(c2, 3)}
            print(f"  {name:<18} 1 proc {w1:7.2f} s ({c1:6.2f} CPU)  2 procs {w2:7.2f} s ({c2:6.2f} CPU)  "
                  f"speed-up {w1 / w2:4.2f}  load {os.getloadavg()[0]:.1f}", flush=True)
    return res


def lang_bytes_per_token(sample: list[dict]) -> dict:
    """UTF-8 bytes per Qwen3 token per sample language (real, unmutated documents)."""
    from q3.tokenizer import encode_batch

    by: dict[str, list[str]] = {}
    for d in sample:
        by.setdefault(d["lang"], []).append(d["text"])
    out = {}
    for lg, texts in sorted(by.items()):
        toks = sum(len(x) for x in encode_batch(texts))
        out[lg] = round(sum(len(t.encode("utf-8")) for t in texts) / max(toks, 1), 3)
    return out


def write_eval_set(sample: list[dict], where: Path) -> None:
    """A decontamination eval set: 300 paragraphs of the sample (so some documents do match)."""
    where.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    with open(where / "bench_eval.jsonl", "w", encoding="utf-8") as f:
        for d in rng.sample(sample, min(300, len(sample))):
            f.write(json.dumps({"text": d["text"][:600]}, ensure_ascii=False) + "\n")


def label_models(sample_path: Path, work: Path) -> Path | None:
    try:
        from bench.label_bench import ensure_models
        from labeling.config import LabelConfig
        cfg = LabelConfig(input=str(sample_path), output=str(work / "labeling"), judge={"sample_size": 300})
        return ensure_models(cfg)
    except Exception as e:     # the label models need a judge round and training: report, go on
        print(f"label stage skipped: {type(e).__name__}: {e}", flush=True)
        return None


def spark_dedup(sample: list[dict], n: int, work: Path) -> dict:
    """The whole Spark dedup job (default config) on n scaled documents, local[1] vs local[2]: wall
    seconds (JVM start included) and the 2-core speed-up of a shuffle-heavy job."""
    import pyarrow.parquet as pq

    from dataproc.dedup.config import DedupConfig
    from dataproc.jobs.dedup import run_dedup
    from q3.engine.session import get_spark
    from q3.schemas import DOC_SCHEMA, content_id

    docs = scaled_docs(sample, n, seed=7)
    inp = work / f"spark-in-{n}"
    inp.mkdir(parents=True, exist_ok=True)
    t = pa.table({"id": [content_id(d["text"]) for d in docs], "text": [d["text"] for d in docs],
                  "source": ["scale"] * n, "url": [d["url"] for d in docs], "lang": [d["lang"] for d in docs],
                  "n_chars": pa.array([len(d["text"]) for d in docs], pa.int64())})
    arrays = [t.column(f.name) if f.name in t.schema.names else pa.nulls(n, f.type) for f in DOC_SCHEMA]
    step = -(-n // 8)        # 8 files: both cores get scan tasks
    full = pa.Table.from_arrays(arrays, schema=DOC_SCHEMA)
    for i in range(0, n, step):
        pq.write_table(full.slice(i, step), str(inp / f"part-{i // step:03d}.parquet"))
    out = {"docs": n}
    for cores in (1, 2):
        spark = get_spark(f"stage-costs-{cores}", master=f"local[{cores}]",
                          conf={"spark.sql.shuffle.partitions": "8", "spark.local.dir": str(work / "spark-tmp")})
        w = time.perf_counter()
        stats = run_dedup(inp, work / f"spark-out-{n}-{cores}", DedupConfig(runner="spark"), spark=spark)
        out[f"wall_{cores}"] = round(time.perf_counter() - w, 1)
        out[f"removed_{cores}"] = stats["exact_duplicate"] + stats["near_duplicate"]
        spark.stop()
        print(f"  spark dedup {n:,} docs local[{cores}]: {out[f'wall_{cores}']} s", flush=True)
    out["speedup"] = round(out["wall_1"] / out["wall_2"], 2)
    return out


def merge_best(runs: list[dict]) -> dict:
    """Repeated runs (same sizes, same corpus) -> the last run with each stage's best rate of all runs."""
    out = json.loads(json.dumps(runs[-1]))
    for size in out["sizes"]:
        for name, m in size["stages"].items():
            for r in runs:
                other = next((x for x in r["sizes"] if x["docs"] == size["docs"]), None)
                o = other and other["stages"].get(name)
                if o and o["cpu_s"] < m["cpu_s"]:
                    size["stages"][name] = m = dict(o)
    out["merged_runs"] = [{"measured_at": r["measured_at"], "load_average_start": r["load_average_start"],
                           "load_average_end": r["load_average_end"]} for r in runs]
    return out


def markdown(res: dict) -> str:
    """The measured table (both sizes, growth of the per-doc cost, 1 vs 2 processes) as Markdown."""
    small, big = sorted(res["sizes"], key=lambda x: x["docs"])[0], sorted(res["sizes"], key=lambda x: x["docs"])[-1]
    par = big.get("parallel", {})
    lines = [f"| stage | docs/s/core @{small['docs']:,} | docs/s/core @{big['docs']:,} | MiB/s/core @{big['docs']:,} "
             f"| per-doc cost {big['docs'] // small['docs']}x docs | CPU 1 proc / 2 procs (s) | wall speed-up 2 procs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in big["stages"].items():
        s0 = small["stages"].get(name)
        growth = f"{s0['docs_per_cpu_s'] / m['docs_per_cpu_s']:.2f}x" if s0 else "-"
        p = par.get(name)
        cpu = f"{p['cpu_1']:.2f} / {p['cpu_2']:.2f}" if p and "cpu_1" in p else "-"
        sp = f"{p['speedup']:.2f}" if p else "-"
        lines.append(f"| {name} | {s0['docs_per_cpu_s']:,.0f} | {m['docs_per_cpu_s']:,.0f} | "
                     f"{m['bytes_per_cpu_s'] / 2**20:,.2f} | {growth} | {cpu} | {sp} |" if s0 else "")
    return "\n".join(x for x in lines if x)


def plot(measured: Path, png: Path) -> None:
    """Cost share per stage of the default 36T estimate (docs/scale.md)."""
    from matplotlib.figure import Figure

    from dataproc.estimate import EstimateConfig, estimate, load_measured

    e = estimate(EstimateConfig(input=str(measured)), load_measured(measured))
    rows = sorted(e["stages"], key=lambda r: r["core_hours"])
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    ax.barh([r["stage"] for r in rows], [r["core_hours"] / 1e3 for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        ax.text(r["core_hours"] / 1e3, i, f" {r['share']:.0%}", va="center", fontsize=8)
    ax.set_xlabel("thousand core-hours (36T tokens, default assumptions)")
    ax.set_title(f"Corpus pipeline cost per stage: {e['core_hours'] / 1e3:,.0f}k core-hours in total", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from q3.paths import data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", default=str(data_dir() / "sample-tests" / "docs.jsonl"))
    ap.add_argument("--sizes", type=int, nargs="*", default=[2000, 10000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--no-label", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--spark-docs", type=int, default=0, help="also time the Spark dedup job, local[1] vs [2]")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="write to --out the best rate per stage over these stage_costs.json runs")
    ap.add_argument("--markdown", action="store_true", help="print the measured table of --out as Markdown")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out, measure nothing")
    a = ap.parse_args(argv)
    png = Path(a.out).with_suffix(".png")
    if a.merge:
        merged = merge_best([json.loads(Path(p).read_text()) for p in a.merge])
        Path(a.out).write_text(json.dumps(merged, indent=1) + "\n")
        plot(Path(a.out), Path(a.out).with_suffix(".png"))
        return 0
    if a.markdown:
        print(markdown(json.loads(Path(a.out).read_text())))
        return 0
    if a.plot_only:
        plot(Path(a.out), png)
        return 0
    if a.spark_docs and not a.sizes:     # `--sizes` with no value: add the Spark row to an existing --out
        res = json.loads(Path(a.out).read_text())
        res["spark_dedup"] = spark_dedup(_sample_docs(Path(a.sample)), a.spark_docs,
                                         Path(a.work or tempfile.mkdtemp(prefix="stage-costs-")))
        res["spark_load_average_end"] = [round(x, 1) for x in os.getloadavg()]
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        return 0
    os.environ.setdefault("Q3_PROGRESS", "0")
    sample_path = Path(a.sample)
    sample = _sample_docs(sample_path)
    work = Path(a.work or tempfile.mkdtemp(prefix="stage-costs-"))
    write_eval_set(sample, work / "evals")
    models = None if a.no_label else label_models(sample_path, work)
    st = Stages(work, models)
    load0 = os.getloadavg()
    t0 = time.time()
    sizes = []
    for i, n in enumerate(sorted(a.sizes)):
        docs = scaled_docs(sample, n)
        print(f"size {n:,}: {sum(len(d['text']) for d in docs) / n:,.0f} chars/doc", flush=True)
        sizes.append(measure_size(st, docs, work, a.repeats, scaling=i == len(a.sizes) - 1))
    spark = spark_dedup(sample, a.spark_docs, work) if a.spark_docs else None
    res = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.stage_costs " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_start": [round(x, 1) for x in load0],
        "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "seconds": round(time.time() - t0, 1),
        "repeats": a.repeats,
        "dedup_config": {"num_perm": st.dedup_cfg.minhash.num_perm, "verify": st.dedup_cfg.minhash.verify,
                         "scope": st.dedup_cfg.scope},
        "label_measured": models is not None,
        "sample_bytes_per_token": lang_bytes_per_token(sample),
        "sizes": sizes,
        "spark_dedup": spark,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {a.out}", flush=True)
    plot(Path(a.out), png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
