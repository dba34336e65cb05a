"""q3/llm.py against a real OpenAI-compatible HTTP server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_fault_server import FaultServer, request_key  # noqa: E402

from q3.llm import (  # noqa: E402
    ChatRequest,
    EndpointConfig,
    LLMAuthError,
    LLMClient,
    LLMConfigError,
    LLMModelError,
    validate_schema,
)

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}},
          "required": ["answer"], "additionalProperties": False}


def _cfg(server: FaultServer, tmp_path: Path, **kw) -> EndpointConfig:
    base = dict(base_url=server.base_url, model="test-model", api_key_env="Q3_TEST_LLM_KEY",
                concurrency=4, timeout_s=1.5, max_retries=4, backoff_base_s=0.05, backoff_max_s=0.2,
                cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return EndpointConfig(**base)


@pytest.fixture
def server():
    with FaultServer(slow_s=4.0, retry_after=0.4) as s:
        yield s


FAULT_PLANS = ["", "slow", "500", "429", "malformed", "drop", "500,503", "drop,malformed,500",
               "slow,429", "429,drop", "", "malformed"]


def test_faults_no_request_lost_none_sent_twice_then_cache(server, tmp_path):
    reqs = [ChatRequest.user(f"[faults:{plan}] doc {i}" if plan else f"doc {i}", meta={"i": i})
            for i, plan in enumerate(FAULT_PLANS)]
    # backoff_max_s above the server's Retry-After (0.4 s): waits are capped at backoff_max_s
    client = LLMClient(_cfg(server, tmp_path, backoff_max_s=0.5))
    results = client.complete_many(reqs)

    # every request answered, in order, with its own answer
    assert [r.meta["i"] for r in results] == list(range(len(reqs)))
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.text for r in results] == ["echo: " + r.messages[-1]["content"] for r in reqs]
    # exactly one successful answer sent per request: nothing lost, nothing sent twice after success
    keys = {request_key(client.body(r)) for r in reqs}
    assert set(server.ok) == keys and all(server.ok[k] == 1 for k in keys)
    # each faulty request took exactly (number of faults + 1) attempts
    for r, plan in zip(reqs, FAULT_PLANS, strict=True):
        k = request_key(client.body(r))
        assert server.attempts[k] == (len(plan.split(",")) if plan else 0) + 1
    assert client.stats.retries == sum(len(p.split(",")) for p in FAULT_PLANS if p)
    joined = ",".join(FAULT_PLANS).split(",")
    assert client.stats.malformed == joined.count("malformed")
    # resends after an unknown outcome (client timeout, connection lost after sending)
    assert client.stats.duplicate_sends == joined.count("slow") + joined.count("drop")
    # Retry-After was honoured: the retry of a 429 came no sooner than 0.4 s later
    k429 = request_key(client.body(reqs[3]))
    t = server.times[k429]
    assert t[1] - t[0] >= 0.38
    assert client.stats.prompt_tokens > 0 and client.stats.completion_tokens > 0

    # rerun: everything from the cache, zero calls to the server
    server.reset_counts()
    client2 = LLMClient(_cfg(server, tmp_path))
    again = client2.complete_many(reqs)
    assert server.total == 0
    assert all(r.cached for r in again) and client2.stats.cache_hits == len(reqs)
    assert [r.text for r in again] == [r.text for r in results]


def test_concurrency_limit_respected(server, tmp_path):
    reqs = [ChatRequest.user(f"[delay:0.15] item {i}") for i in range(16)]
    client = LLMClient(_cfg(server, tmp_path, concurrency=3, timeout_s=5))
    results = client.complete_many(reqs)
    assert all(r.ok for r in results)
    assert server.max_inflight == 3
    assert server.total == 16


def test_progress_lines_while_requests_run(server, tmp_path, caplog, monkeypatch):
    """A long batch logs done/total and the rate (stderr is not a terminal here, as in a log file)."""
    monkeypatch.setenv("Q3_PROGRESS", "1")
    caplog.set_level("INFO", logger="q3.llm")
    client = LLMClient(_cfg(server, tmp_path, concurrency=2, timeout_s=5))
    client.progress_interval_s = 0.2
    reqs = [ChatRequest.user(f"[delay:0.1] item {i}") for i in range(20)]
    assert all(r.ok for r in client.complete_many(reqs))
    lines = [r.getMessage() for r in caplog.records if r.name == "q3.llm"]
    assert 3 <= len(lines) <= 21, lines
    assert lines[-1].startswith("LLM requests to test-model: 20/20 req (100%)") and "req/s" in lines[-1]
    done = [int(x.split(": ")[1].split("/")[0]) for x in lines]
    assert done == sorted(done) and done[0] < 20


def test_duplicate_requests_in_a_batch_sent_once(server, tmp_path):
    reqs = [ChatRequest.user("same", meta={"i": i}) for i in range(5)]
    results = LLMClient(_cfg(server, tmp_path)).complete_many(reqs)
    assert server.total == 1
    assert [r.meta["i"] for r in results] == list(range(5))


def test_structured_outputs_invalid_kept_as_results(server, tmp_path):
    reqs = [ChatRequest.user(p, schema=SCHEMA) for p in ("good", "[bad_json] x", "[schema_bad] x", "[refuse] x")]
    client = LLMClient(_cfg(server, tmp_path))
    good, bad_json, bad_schema, refused = client.complete_many(reqs)
    assert good.ok and isinstance(good.data["answer"], str)
    assert bad_json.error.startswith("invalid_json") and bad_json.data is None
    assert bad_schema.error.startswith("schema_mismatch") and "answer" in bad_schema.error
    assert refused.error.startswith("refused")
    # the request carried response_format json_schema
    assert client.body(reqs[0])["response_format"]["json_schema"]["schema"] == SCHEMA
    # one attempt each: invalid content is an answer, not a transient fault
    assert server.total == 4


def test_retries_exhausted_is_a_result_not_an_exception(server, tmp_path):
    r, ok = LLMClient(_cfg(server, tmp_path, max_retries=2)).complete_many(
        [ChatRequest.user("[faults:500,500,500,500] x"), ChatRequest.user("fine")])
    assert not r.ok and r.error.startswith("gave_up after 3 attempts") and "500" in r.error
    assert ok.ok
    assert server.attempts[request_key(json.loads(json.dumps(
        LLMClient(_cfg(server, tmp_path)).body(ChatRequest.user("[faults:500,500,500,500] x")))))] == 3


def test_config_errors_are_clear_and_not_retried(server, tmp_path, monkeypatch):
    monkeypatch.delenv("Q3_LLM_BASE_URL", raising=False)
    with pytest.raises(LLMConfigError, match="no LLM endpoint configured"):
        LLMClient(EndpointConfig(model="m")).complete_many([ChatRequest.user("x")])

    with pytest.raises(LLMModelError, match=r"'nope' is not served.*available models: test-model"):
        LLMClient(_cfg(server, tmp_path, model="nope")).complete_many([ChatRequest.user("x")])
    assert server.total == 1

    with FaultServer(api_key="sekrit") as locked:
        monkeypatch.delenv("Q3_TEST_LLM_KEY", raising=False)
        with pytest.raises(LLMAuthError, match=r"no API key sent.*\$Q3_TEST_LLM_KEY"):
            LLMClient(_cfg(locked, tmp_path)).complete_many([ChatRequest.user("x")])
        monkeypatch.setenv("Q3_TEST_LLM_KEY", "wrong")
        with pytest.raises(LLMAuthError, match="rejected"):
            LLMClient(_cfg(locked, tmp_path)).complete_many([ChatRequest.user("x")])
        assert locked.total == 2          # one attempt each, no retries
        monkeypatch.setenv("Q3_TEST_LLM_KEY", "sekrit")
        client = LLMClient(_cfg(locked, tmp_path))
        assert client.list_models() == ["test-model"]
        assert client.complete_many([ChatRequest.user("x")])[0].ok


def test_cost_accounting(server, tmp_path):
    client = LLMClient(_cfg(server, tmp_path, price_prompt_per_1k=2.0, price_completion_per_1k=10.0))
    res = client.complete_many([ChatRequest.user("one two three"), ChatRequest.user("four five")])
    expect = sum(r.usage["prompt_tokens"] * 2.0 / 1000 + r.usage["completion_tokens"] * 10.0 / 1000 for r in res)
    assert client.stats.cost == pytest.approx(expect) and expect > 0
    again = LLMClient(_cfg(server, tmp_path, price_prompt_per_1k=2.0, price_completion_per_1k=10.0))
    again.complete_many([ChatRequest.user("one two three")])
    assert again.stats.cost == 0 and again.stats.cache_hits == 1


def test_validate_schema():
    s = {"type": "object", "required": ["score", "domain"], "additionalProperties": False,
         "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 5},
                        "domain": {"type": "string", "enum": ["a", "b"]},
                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}}}
    assert validate_schema({"score": 3, "domain": "a", "tags": ["x"]}, s) == []
    errs = validate_schema({"score": 7, "domain": "c", "tags": ["x", 1, "y"], "z": 1}, s)
    joined = " | ".join(errs)
    for frag in ("$.score: 7 is greater than the maximum of 5", "$.domain: 'c' is not one of ['a', 'b']",
                 "$.tags: ['x', 1, 'y'] is too long", "$.tags[1]: 1 is not of type 'string'", "'z' was unexpected"):
        assert frag in joined, joined
    assert validate_schema({"score": True, "domain": "a"}, s)  # bools are not integers
    assert validate_schema({"score": 3.0, "domain": "a"}, s) == []   # an integral float is an integer
