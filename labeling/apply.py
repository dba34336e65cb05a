"""`q3 label run`: apply the trained classifiers + rule signals to every kept document.

The work is one stage function over Arrow batches, `LabelStage` (models loaded once per process:
per Spark Python worker, which Spark reuses across tasks), run by the corpus engine
(`q3.engine`: read_corpus -> map_batches -> write_docs -> run_committed) locally or by Spark
`mapInArrow` (`runner: auto` picks by input size). It fills the `labels` struct (q3.schemas.LABELS_TYPE) of every row:
classifier outputs (edu_score, domain, quality_score, safety, safety_severity, reasoning_score),
rule outputs (has_code, has_math; raw signals in `extra`), and `versions` (model file hashes,
rule version). Rows are never dropped: same rows, same order.

Output: <output>/labeled/docs/lang=*/part-*.parquet + distributions.json + stats.json, committed
atomically with a key of (model versions, rules, input and models content, code); a rerun with the
same key does nothing.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labeling.classifier import Predictor
from labeling.config import LabelConfig
from labeling.dimensions import LABEL_FIELDS
from labeling.rules import apply_rules
from q3.atomic import is_committed
from q3.commit import job_key
from q3.config import load_config
from q3.engine.docs import write_docs
from q3.engine.io import corpus_size, read_corpus, scan_corpus
from q3.engine.job import run_committed
from q3.engine.map import map_batches
from q3.engine.runner import choose_runner
from q3.errors import InputMissing, require_path
from q3.log import get_logger, print_table
from q3.schemas import DOC_SCHEMA

log = get_logger("labeling.apply")
RULES_VERSION = "rules:v1"


def _labels_type() -> pa.DataType:
    from q3.schemas import LABELS_TYPE
    return LABELS_TYPE


class LabelStage:
    """`pa.RecordBatch -> pa.RecordBatch`: the batch with its `labels` column (re)computed."""

    name = "label"

    def __init__(self, models_dir: str | Path):
        self.models_dir = Path(models_dir)
        manifest = json.loads((self.models_dir / "models.json").read_text())
        self.entries: dict[str, dict[str, Any]] = manifest["outputs"]
        self.predictors = {f: Predictor.load(e, self.models_dir) for f, e in self.entries.items()}

    def labels(self, texts: list[str]) -> pa.Array:
        n = len(texts)
        cols: dict[str, list[Any]] = {f.name: [None] * n for f in _labels_type()}
        extra: list[dict[str, str]] = [{} for _ in range(n)]
        versions = {f: e["version"] for f, e in self.entries.items()}
        versions.update({"has_code": RULES_VERSION, "has_math": RULES_VERSION})
        for field, pred in self.predictors.items():
            values = pred.predict(texts)
            if field == "safety_severity":
                values = [int(round(v)) for v in values]
            if field in LABEL_FIELDS:
                cols[field] = values
            else:
                for i, v in enumerate(values):
                    extra[i][field] = str(v)
        for i, t in enumerate(texts):
            r = apply_rules(t or "")
            cols["has_code"][i], cols["has_math"][i] = r["has_code"], r["has_math"]
            extra[i]["code_line_frac"] = str(r["code_line_frac"])
            extra[i]["math_density"] = str(r["math_density"])
        cols["extra"] = [list(e.items()) for e in extra]
        cols["versions"] = [list(versions.items())] * n
        lt = _labels_type()
        return pa.StructArray.from_arrays([pa.array(cols[f.name], f.type) for f in lt], fields=list(lt))

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        labels = self.labels(batch.column("text").to_pylist())
        names = batch.schema.names
        if "labels" in names:
            return batch.set_column(names.index("labels"), pa.field("labels", labels.type), labels)
        return batch.append_column(pa.field("labels", labels.type), labels)


_STAGES: dict[str, LabelStage] = {}


def get_stage(models_dir: str) -> LabelStage:
    """One LabelStage per process and models dir (Spark reuses Python workers across tasks)."""
    if models_dir not in _STAGES:
        _STAGES[models_dir] = LabelStage(models_dir)
    return _STAGES[models_dir]


DIE_ENV = "Q3_LABEL_DIE_AFTER_BATCHES"    # test hook: os._exit(137) after N labeled batches (a kill -9)


def _label_fn(models_dir: str) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """The engine's batch-function factory: the process's LabelStage, with the kill test hook."""
    stage = get_stage(models_dir)
    die_after = int(os.environ.get(DIE_ENV, "0") or 0)
    if not die_after:
        return stage
    seen = 0

    def fn(batch: pa.RecordBatch) -> pa.RecordBatch:
        nonlocal seen
        seen += 1
        if seen > die_after:
            os._exit(137)      # as a kill -9: no cleanup, nothing committed
        return stage(batch)
    return fn


def _spark_input(inp: Path, work: Path) -> Path:
    """Spark reads Parquet: a JSONL input is converted once (keyed on its content) into
    work/input_docs/docs (stats.json beside it, as every committed output)."""
    if inp.suffix not in (".jsonl", ".json"):
        return inp
    out = work / "input_docs"

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:
        t = read_corpus(inp)
        (tmp / "docs").mkdir()
        pq.write_table(t, tmp / "docs" / "part-0.parquet")
        return {"docs": t.num_rows, "source": str(inp.resolve())}

    run_committed(out, job_key("jsonl-to-parquet", {}, inputs=[inp]), body)
    return out / "docs"


def label_docs(inp: Path, models_dir: Path, dest: Path, cfg: LabelConfig, runner: str) -> int:
    """Every document under `inp` with its labels, written to dest/lang=*/; returns the rows written."""
    factory = functools.partial(_label_fn, str(models_dir))
    if runner == "spark":
        from q3.engine.session import get_spark

        inp = _spark_input(inp, cfg.work())
        n_in = corpus_size(inp)[1]
        df = read_corpus(inp, spark=get_spark("q3-label"))
        if cfg.run.partitions:
            df = df.repartition(cfg.run.partitions)
        result = map_batches(factory, df, DOC_SCHEMA, runner="spark", batch_size=cfg.run.batch_size)
    else:
        n_in = None if inp.suffix in (".jsonl", ".json") else corpus_size(inp)[1]   # JSONL: rows as parsed
        result = map_batches(factory, scan_corpus(inp, cfg.run.batch_size), DOC_SCHEMA, runner="local",
                             batch_size=cfg.run.batch_size)
    return write_docs(result, dest, n_in, job="label apply")


def distributions(docs_dir: Path) -> dict[str, Any]:
    """Label distributions per language and per domain (read back from the written Parquet)."""
    # in (lang, id) order: float sums then add up the same whichever runner wrote the files
    t = read_corpus(docs_dir, ["lang", "id", "labels"]).sort_by([("lang", "ascending"), ("id", "ascending")])
    lab = t.column("labels").combine_chunks()
    langs = t.column("lang").to_pylist()
    cols = {f: pc.struct_field(lab, f).to_pylist() for f in
            ("edu_score", "quality_score", "reasoning_score", "domain", "safety", "has_code", "has_math")}
    per_lang: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    domains_by_lang: dict[str, Counter] = defaultdict(Counter)
    per_domain: Counter = Counter()
    safety: Counter = Counter()
    edu_hist: Counter = Counter()
    for i, lang in enumerate(langs):
        s = per_lang[lang]
        s["docs"] += 1
        for f in ("edu_score", "quality_score", "reasoning_score"):
            if cols[f][i] is not None:
                s[f] += cols[f][i]
        s["has_code"] += bool(cols["has_code"][i])
        s["has_math"] += bool(cols["has_math"][i])
        domains_by_lang[lang][cols["domain"][i]] += 1
        per_domain[cols["domain"][i]] += 1
        safety[cols["safety"][i]] += 1
        if cols["edu_score"][i] is not None:
            edu_hist[int(round(cols["edu_score"][i]))] += 1
    out_lang = {}
    for lang, s in sorted(per_lang.items()):
        n = s["docs"]
        out_lang[lang] = {"docs": int(n), "edu_mean": s["edu_score"] / n, "quality_mean": s["quality_score"] / n,
                          "reasoning_mean": s["reasoning_score"] / n, "has_code_frac": s["has_code"] / n,
                          "has_math_frac": s["has_math"] / n,
                          "top_domain": domains_by_lang[lang].most_common(1)[0][0],
                          "domains": dict(domains_by_lang[lang])}
    return {"docs": len(langs), "per_lang": out_lang, "per_domain": dict(per_domain.most_common()),
            "safety": dict(safety.most_common()), "edu_histogram": {str(k): v for k, v in sorted(edu_hist.items())}}


def print_distributions(d: dict[str, Any]) -> None:
    print_table(f"label distributions per language ({d['docs']} documents)",
                ["lang", "docs", "edu", "quality", "reasoning", "code %", "math %", "top domain"],
                [(lang, s["docs"], round(s["edu_mean"], 2), round(s["quality_mean"], 2),
                  round(s["reasoning_mean"], 2), round(100 * s["has_code_frac"], 1),
                  round(100 * s["has_math_frac"], 1), s["top_domain"]) for lang, s in d["per_lang"].items()])
    print_table("documents per domain", ["domain", "docs"], list(d["per_domain"].items()))
    print_table("safety categories", ["category", "docs"], list(d["safety"].items()))


def run_apply(cfg: LabelConfig) -> Path:
    t0 = time.time()
    work = cfg.work()
    models_dir = work / "models"
    if not is_committed(models_dir):
        raise InputMissing(f"no trained classifiers at {models_dir}: run `q3 label train` first")
    inp = require_path(cfg.input_path(), "input", "kept documents from `q3 data run` or a JSONL")
    versions = {f: e["version"] for f, e in json.loads((models_dir / "models.json").read_text())["outputs"].items()}
    # the key (q3.commit): classifier versions and rules; the content of the documents and of the
    # trained models (a retrain commits anew); the code. Not the runner: both write the same rows.
    jk = job_key("label-apply", {"versions": versions, "rules": RULES_VERSION}, inputs=[inp, models_dir])
    out = work / "labeled"

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:
        choice = choose_runner(cfg.runner, [inp], cfg.auto, job="label apply")
        n = label_docs(inp, models_dir, tmp / "docs", cfg, choice.runner)
        d = distributions(tmp / "docs")
        (tmp / "distributions.json").write_text(json.dumps(d, indent=2, ensure_ascii=False))
        meta["versions"] = versions
        return {"docs": n, "per_lang": {lang: s["docs"] for lang, s in d["per_lang"].items()},
                "runner": choice.runner, "runner_why": choice.why}

    stats = run_committed(out, jk, body)
    print_distributions(json.loads((out / "distributions.json").read_text()))
    if not stats.get("skipped"):
        log.info("labeled %d documents in %.1fs (%s) -> %s", stats["docs"], time.time() - t0, stats["runner"], out)
    return out


def read_labeled(out: Path) -> pa.Table:
    return read_corpus(out / "docs")


def cli(config: str | None, overrides: list[str]) -> int:
    """Apply classifiers + rule signals to every kept document (local or Spark: runner=auto)."""
    cfg = load_config(LabelConfig, "labeling", config, overrides)
    run_apply(cfg)
    return 0
