"""Throughput of `q3 label run` (fastText classifiers + rules) vs bare fastText predict, same texts.

    python -m bench.label_bench [--docs PATH.jsonl] [--spark] [--repeat N]

Classifiers are trained first on rule-judge labels (labeling/rule_judge.py, not an LLM) if
$Q3_DATA/labeling-bench/models is missing. Measured, in one process, on the same texts:
  bare      fastText `model.predict(list_of_texts)` (k=1, the wrapper's batch API) for every
            classifier output on pre-cleaned texts (cleaning not timed) — nothing but the models.
  stage     labeling.apply.LabelStage over Arrow batches: cleaning, all classifiers with full
            probability vectors (scores = expected value), code/math rules, building the struct.
  spark     (--spark) the whole `q3 label run` job in Spark local[N] incl. JVM start, Parquet I/O;
            per core = docs/s / N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from labeling.apply import LabelStage, run_apply
from labeling.classifier import Predictor, clean
from labeling.config import LabelConfig
from labeling.judge import run_judge
from labeling.rule_judge import MODEL, RuleJudgeServer
from q3.engine.io import jsonl_to_table
from q3.paths import data_dir


def ensure_models(cfg: LabelConfig) -> Path:
    from labeling.classifier import run_train
    from q3.atomic import is_committed
    models = cfg.work() / "models"
    if not is_committed(models):
        with RuleJudgeServer() as srv:
            run_judge(cfg.model_copy(update={"endpoint": cfg.endpoint.model_copy(
                update={"base_url": srv.base_url, "model": MODEL})}))
        run_train(cfg)
    return models


def main() -> None:
    ap = argparse.ArgumentParser()
    default_docs = data_dir() / "sample" / "docs.jsonl"
    ap.add_argument("--docs", default=str(default_docs if default_docs.exists() else data_dir() / "sample-tests" / "docs.jsonl"))
    ap.add_argument("--spark", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("Q3_PROGRESS", "0")
    cfg = LabelConfig(input=a.docs, output=str(data_dir() / "labeling-bench"), judge={"sample_size": 300})
    models = ensure_models(cfg)
    table = jsonl_to_table(a.docs)
    texts = table["text"].to_pylist()
    n = len(texts)
    stage = LabelStage(models)
    entries = json.loads((models / "models.json").read_text())["outputs"]
    preds = {f: Predictor.load(e, models) for f, e in entries.items()}

    cleaned = {f: [clean(t, entries[f]["max_chars"]) for t in texts] for f in preds}   # not timed

    def bare() -> None:
        for f, p in preds.items():
            p.model.predict(cleaned[f], k=1)

    def staged() -> None:
        for b in table.to_batches(max_chunksize=512):
            stage(b)

    def best(fn) -> float:
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_bare, t_stage = best(bare), best(staged)
    rows = {"docs": n, "classifiers": len(preds), "bare_fasttext_docs_per_s": n / t_bare,
            "label_stage_docs_per_s_per_core": n / t_stage, "stage_vs_bare": t_stage / t_bare}
    if a.spark:
        cores = 2
        os.environ["Q3_SPARK_MASTER"] = f"local[{cores}]"
        scfg = cfg.model_copy(update={"runner": "spark", "run": cfg.run.model_copy(update={"partitions": cores})})
        shutil.rmtree(cfg.work() / "labeled", ignore_errors=True)   # time a real run, not a no-op rerun
        t = time.perf_counter()
        out = run_apply(scfg.model_copy(update={"output": str(data_dir() / "labeling-bench")}))
        t_spark = time.perf_counter() - t
        rows.update({"spark_cores": cores, "spark_job_s": t_spark,
                     "spark_docs_per_s_per_core": n / t_spark / cores, "labeled": str(out)})
    print(json.dumps(rows, indent=2))
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")


if __name__ == "__main__":
    main()
