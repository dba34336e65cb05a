"""Judge stage: deterministic stratified sampling; judgements through q3/llm.py over real HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from labeling.config import LabelConfig
from labeling.judge import run_judge, stratified_sample
from labeling.rule_judge import MODEL, RuleJudgeServer
from q3.engine.io import read_corpus
from q3.errors import RunFailed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_fault_server import FaultServer  # noqa: E402


def test_stratified_sample_is_deterministic_and_covers_strata(sample_parquet):
    docs = read_corpus(sample_parquet)
    a = stratified_sample(docs, 60, seed=0, bounds=[1500, 6000])
    b = stratified_sample(docs, 60, seed=0, bounds=[1500, 6000])
    c = stratified_sample(docs, 60, seed=1, bounds=[1500, 6000])
    assert a == b and a != c and len(a) == 60
    langs = {docs["lang"][i].as_py() for i, _ in a}
    assert len(langs) >= 20                        # round robin: every language gets a turn
    assert len({i for i, _ in a}) == 60            # no document twice


def test_judge_with_rule_judge_and_invalid_answers_kept(sample_parquet, tmp_path):
    with RuleJudgeServer() as srv:
        cfg = LabelConfig(input=str(sample_parquet), output=str(tmp_path / "w"), dimensions=["edu", "safety"],
                          endpoint={"base_url": srv.base_url, "model": MODEL, "concurrency": 4},
                          judge={"sample_size": 30})
        out = run_judge(cfg)
    t = pq.read_table(out / "judgements.parquet").to_pylist()
    assert len(t) == 60 and all(r["ok"] for r in t)
    assert {r["dimension"] for r in t} == {"edu", "safety"}
    assert all(r["text"] and r["lang"] for r in t)

    # a server whose answers do not match the schema: a failed run (exit 1, nothing committed) ...
    with FaultServer(models=("test-model",)) as bad:
        cfg2 = cfg.model_copy(update={"output": str(tmp_path / "w2"),
                                      "endpoint": cfg.endpoint.model_copy(update={"base_url": bad.base_url,
                                                                                  "model": "test-model"})})
        with pytest.raises(RunFailed, match="0 of 60 judgements valid.*schema_mismatch=60"):
            run_judge(cfg2)
        assert not (tmp_path / "w2" / "judgements").exists()
        # ... unless allow_empty: then every row is kept, with the reason
        out2 = run_judge(cfg2.model_copy(update={"allow_empty": True}))
    t2 = pq.read_table(out2 / "judgements.parquet").to_pylist()
    assert len(t2) == 60 and not any(r["ok"] for r in t2)
    assert all(r["error"].startswith("schema_mismatch") for r in t2)
