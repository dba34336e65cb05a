"""judge (rule-based judge over real HTTP) -> train classifiers -> apply in Spark local mode.

The judge here is labeling/rule_judge.py: a deterministic rubric program, NOT an LLM. The
agreement figures therefore measure how well the classifiers reproduce that rubric from text.
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from labeling.apply import run_apply
from labeling.classifier import run_train
from labeling.config import LabelConfig
from labeling.judge import run_judge
from labeling.rule_judge import MODEL, RuleJudgeServer
from q3.atomic import read_marker


@pytest.mark.spark
def test_judge_train_apply_in_spark_on_real_sample(spark, sample_parquet, tmp_path):
    work = tmp_path / "labeling"
    with RuleJudgeServer() as srv:
        cfg = LabelConfig(input=str(sample_parquet), output=str(work),
                          dimensions=["edu", "domain", "safety", "code", "math"],
                          endpoint={"base_url": srv.base_url, "model": MODEL, "concurrency": 4},
                          judge={"sample_size": 240}, runner="spark", run={"partitions": 2})
        run_judge(cfg)
    models = run_train(cfg)
    metrics = json.loads((models / "metrics.json").read_text())
    print(json.dumps({k: v["overall"] for k, v in metrics.items()}, indent=1))
    assert set(metrics) == {"edu_score", "domain", "safety", "safety_severity"}
    # recorded, overall and per language, and better than chance on the rubric
    assert metrics["edu_score"]["overall"]["spearman"] > 0.2
    assert metrics["domain"]["overall"]["accuracy"] > 0.6
    assert len(metrics["edu_score"]["per_lang"]) >= 15
    assert read_marker(models)["metrics"]["edu_score"]["n"] > 20

    out = run_apply(cfg)
    docs = pq.read_table(str(out / "docs"))
    n_in = pq.read_table(str(sample_parquet)).num_rows
    assert docs.num_rows == n_in                     # every kept document labelled, none lost
    labels = docs.column("labels").combine_chunks()
    for f in ("edu_score", "domain", "safety", "safety_severity", "has_code", "has_math"):
        assert pc.struct_field(labels, f).null_count == 0, f
    edu = pc.struct_field(labels, "edu_score")
    assert pc.min(edu).as_py() >= 0 and pc.max(edu).as_py() <= 5
    versions = dict(labels[0].as_py()["versions"])
    manifest = json.loads((models / "models.json").read_text())["outputs"]
    assert versions["edu_score"] == manifest["edu_score"]["version"] and versions["edu_score"].startswith("fasttext:")
    assert versions["has_code"].startswith("rules:")
    # code presence from rules: Python sources yes, most man pages no
    by_lang = json.loads((out / "distributions.json").read_text())["per_lang"]
    assert by_lang["code_Python"]["has_code_frac"] > 0.8
    assert by_lang["deu_Latn"]["has_code_frac"] < 0.2
    from labeling.dimensions import load_dimensions
    taxonomy = set(load_dimensions(names=["domain"])[0].class_labels(load_dimensions(names=["domain"])[0].outputs[0]))
    assert set(json.loads((out / "distributions.json").read_text())["per_domain"]) <= taxonomy

    # rerun: nothing to do (same key), output untouched
    before = read_marker(out)
    run_apply(cfg)
    assert read_marker(out) == before


def test_linear_head_and_local_runner(sample_parquet, tmp_path):
    with RuleJudgeServer() as srv:
        cfg = LabelConfig(input=str(sample_parquet), output=str(tmp_path / "w"), dimensions=["reasoning", "code"],
                          endpoint={"base_url": srv.base_url, "model": MODEL, "concurrency": 4},
                          judge={"sample_size": 160}, train={"classifier": "linear"}, runner="local")
        run_judge(cfg)
    models = run_train(cfg)
    m = json.loads((models / "metrics.json").read_text())["reasoning_score"]
    assert m["type"] == "linear" and m["version"].startswith("linear:")
    assert m["overall"]["spearman"] is not None and m["overall"]["spearman"] > 0.2
    out = run_apply(cfg)
    docs = pq.read_table(str(out / "docs"))
    assert docs.num_rows == pq.read_table(str(sample_parquet)).num_rows
    assert pc.struct_field(docs.column("labels").combine_chunks(), "reasoning_score").null_count == 0
