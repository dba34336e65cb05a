"""Pipeline bench: ingest + normalise + LID + quality filters, ours vs datatrove, same corpus, one run.

    python -m bench.pipeline_bench                          # sample from $Q3_DATA/sample
    python -m bench.pipeline_bench --sample /work/sample --docs 2000

Both sides run in this one process on one core, one after the other, on the same JSONL file:
  ours:      dataproc.runner (local engine): JSONL reader -> normalise -> langid -> quality
             (Gopher quality + repetition, C4, FineWeb) -> kept/rejected Parquet by lang
  datatrove: JsonlReader -> LanguageFilter (lid.176, the same local .ftz file) ->
             GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter
             (no writer: datatrove does less I/O than we do).
The shared machine's load makes wall time noisy, so docs per CPU-second (process time) is the
headline "docs/s per core"; wall-clock docs/s is printed too. Results: bench/results/pipeline_bench.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from q3.log import print_table
from q3.paths import ROOT


def make_corpus(sample: Path | None, n_docs: int, where: Path) -> Path:
    from bench.lid_bench import load_sample

    docs = load_sample(sample)
    if n_docs and n_docs < len(docs):   # an even stride: every language and the code, not the first few
        step = len(docs) / n_docs
        docs = [docs[int(i * step)] for i in range(n_docs)]
    where.mkdir(parents=True, exist_ok=True)
    with open(where / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d["text"], "url": d["url"], "lang_hint": d["lang_hint"]},
                               ensure_ascii=False) + "\n")
    return where


def run_ours(corpus: Path, out: Path) -> dict:
    from dataproc import runner
    from dataproc.config import PipelineConfig

    cfg = PipelineConfig.model_validate({
        "input": [{"path": str(corpus / "corpus.jsonl"), "format": "jsonl", "source": "bench"}],
        "output": str(out), "runner": "local", "pii": {"enabled": False}})
    w, c = time.perf_counter(), time.process_time()
    stats = runner.run(cfg)
    return {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
            "docs": stats["input_docs"], "kept": stats["kept_docs"]}


def run_datatrove(corpus: Path, logs: Path) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.utils.lid import FT176LID

    from dataproc.stages.langid import default_model_path, load_model

    class LocalFT176(FT176LID):
        """datatrove's lid.176 backend, on the local .ftz (it would download the .bin) and called on
        a list (its single-string predict breaks under numpy 2); top-1 like its default use."""

        @property
        def model(self):
            return load_model(default_model_path())

        def predict(self, doc):
            labels, scores = self.model.predict([doc.text.replace("\n", " ")], k=1)
            lang, score = labels[0][0].split("__")[2], float(scores[0][0])
            return (lang, score), {lang: score}

    # datatrove insists on the `fasttext-numpy2-wheel` distribution; we have the same `fasttext`
    # module from `fasttext-wheel` (called safely above), so only that one check is skipped.
    import datatrove.pipeline.base as dt_base

    check = dt_base.check_required_dependencies
    dt_base.check_required_dependencies = lambda name, deps: check(
        name, [d for d in deps if not (isinstance(d, tuple) and d[0] == "fasttext")])
    lid = LanguageFilter(language_threshold=0.5)
    lid.model = LocalFT176()
    pipeline = [JsonlReader(str(corpus), glob_pattern="corpus.jsonl", text_key="text", id_key="url"),
                lid, GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
    ex = LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=str(logs),
                               skip_completed=False)
    w, c = time.perf_counter(), time.process_time()
    stats = ex.run()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    total = len((corpus / "corpus.jsonl").read_text(encoding="utf-8").splitlines())
    kept = None
    with contextlib.suppress(Exception):   # the stats layout differs across datatrove versions
        kept = int(stats.stats[-1].stats["forwarded"].total)
    return {"wall_s": wall, "cpu_s": cpu, "docs": total, "kept": kept}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=Path, default=None)
    ap.add_argument("--docs", type=int, default=2000, help="N sample docs, evenly strided (0: all)")
    args = ap.parse_args()
    os.environ.setdefault("Q3_PROGRESS", "0")
    tmp = Path(tempfile.mkdtemp(prefix="q3-pipeline-bench-"))
    try:
        corpus = make_corpus(args.sample, args.docs, tmp / "in")
        ours = run_ours(corpus, tmp / "ours")
        dt = run_datatrove(corpus, tmp / "dt-logs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, r in (("ours (dataproc local runner)", ours), ("datatrove 0.10 (LocalPipelineExecutor)", dt)):
        rows.append([name, r["docs"], r["kept"], round(r["cpu_s"], 1), round(r["docs"] / r["cpu_s"], 1),
                     round(r["wall_s"], 1), round(r["docs"] / r["wall_s"], 1)])
    print_table("ingest + normalise + LID + quality filters, one core", ["", "docs", "kept", "cpu s",
                "docs/cpu-s", "wall s", "docs/wall-s"], rows)
    ratio_cpu = (ours["docs"] / ours["cpu_s"]) / (dt["docs"] / dt["cpu_s"])
    ratio_wall = (ours["docs"] / ours["wall_s"]) / (dt["docs"] / dt["wall_s"])
    print(f"ours / datatrove: {ratio_cpu:.2f}x per CPU-second, {ratio_wall:.2f}x wall-clock")
    result = {"ours": ours, "datatrove": dt, "ratio_cpu": ratio_cpu, "ratio_wall": ratio_wall,
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "load_avg": os.getloadavg(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = ROOT / "bench" / "results" / "pipeline_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
