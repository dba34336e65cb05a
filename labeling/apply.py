"""`q3 label run`: apply the trained classifiers + rule signals to every kept document (Spark).

The work is one stage function over Arrow batches, `LabelStage` (models loaded once per process:
per Spark Python worker, which Spark reuses across tasks), run by Spark `mapInArrow` or by the
local runner (same function). It fills the `labels` struct (q3.schemas.LABELS_TYPE) of every row:
classifier outputs (edu_score, domain, quality_score, safety, safety_severity, reasoning_score),
rule outputs (has_code, has_math; raw signals in `extra`), and `versions` (model file hashes,
rule version). Rows are never dropped: same rows, same order.

Output: <output>/labeled/docs/lang=*/part-*.parquet + distributions.json, committed atomically
with a key of (config, model versions, input); a rerun with the same key does nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from labeling.classifier import Predictor
from labeling.config import LabelConfig
from labeling.dimensions import LABEL_FIELDS
from labeling.io import as_parquet
from labeling.rules import apply_rules
from q3.atomic import is_committed
from q3.commit import commit, job_key, reuse_if_committed
from q3.config import load_config
from q3.errors import InputMissing
from q3.log import get_logger, print_table

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


def _order(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([batch.column(n) for n in names], names=names)


def label_spark(inp: Path, models_dir: Path, dest: Path, cfg: LabelConfig) -> None:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    from q3.engine.session import get_spark

    spark = get_spark("q3-label")
    df = spark.read.parquet(str(inp))
    if cfg.run.partitions:
        df = df.repartition(cfg.run.partitions)
    labels_field = StructField("labels", from_arrow_type(_labels_type()), True)
    fields = [labels_field if f.name == "labels" else f for f in df.schema.fields]
    if "labels" not in df.columns:
        fields.append(labels_field)
    out_schema = StructType(fields)
    names = [f.name for f in fields]
    mdir = str(models_dir)

    def fn(batches):
        stage = get_stage(mdir)
        for b in batches:
            yield _order(stage(b), names)

    df.mapInArrow(fn, out_schema).write.mode("overwrite").partitionBy("lang").parquet(str(dest))


def label_local(inp: Path, models_dir: Path, dest: Path, cfg: LabelConfig) -> None:
    stage = get_stage(str(models_dir))
    dataset = ds.dataset(str(inp), format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    batches = (stage(b) for b in dataset.to_batches(batch_size=cfg.run.batch_size))
    first = next(batches, None)
    if first is None:
        return
    table = pa.Table.from_batches([first, *batches])
    ds.write_dataset(table, str(dest), format="parquet", partitioning=["lang"], partitioning_flavor="hive",
                     existing_data_behavior="overwrite_or_ignore")


def distributions(docs_dir: Path) -> dict[str, Any]:
    """Label distributions per language and per domain (read back from the written Parquet)."""
    t = ds.dataset(str(docs_dir), format="parquet", partitioning="hive",
                   ignore_prefixes=[".", "_"]).to_table(columns=["lang", "labels"])
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
    inp = as_parquet(cfg.input_path(), work)
    versions = {f: e["version"] for f, e in json.loads((models_dir / "models.json").read_text())["outputs"].items()}
    # the key (q3.commit): run settings, classifier versions and rules; the content of the documents
    # and of the trained models (a retrain commits anew); the code
    jk = job_key("label-apply", {"run": {**cfg.run.model_dump(), "runner": cfg.runner}, "versions": versions,
                                 "rules": RULES_VERSION}, inputs=[inp, models_dir])
    out = work / "labeled"
    if reuse_if_committed(out, jk) is not None:
        d = json.loads((out / "distributions.json").read_text())
        print_distributions(d)
        return out
    meta: dict[str, Any] = {"key": jk.id, "versions": versions, "runner": cfg.runner}
    with commit(out, jk, meta) as tmp:
        runner = label_spark if cfg.runner == "spark" else label_local
        runner(inp, models_dir, tmp / "docs", cfg)
        d = distributions(tmp / "docs")
        (tmp / "distributions.json").write_text(json.dumps(d, indent=2, ensure_ascii=False))
        meta.update({"docs": d["docs"], "seconds": round(time.time() - t0, 1)})
    print_distributions(d)
    log.info("labeled %d documents in %.1fs (%s) -> %s", d["docs"], time.time() - t0, cfg.runner, out)
    return out


def read_labeled(out: Path) -> pa.Table:
    return pq.read_table(str(out / "docs"))


def cli(config: str | None, overrides: list[str]) -> int:
    """Apply classifiers + rule signals to every kept document (Spark)."""
    cfg = load_config(LabelConfig, "labeling", config, overrides)
    run_apply(cfg)
    return 0
