"""q3/llm.py against malformed 200 answers, long Retry-After and client-side timeouts.

The peer is the real HTTP server of tests/llm_fault_server.py (stdlib http.server on 127.0.0.1):
it is the server that is faked, never the client under test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_fault_server import FaultServer, request_key  # noqa: E402

from q3.llm import ChatRequest, EndpointConfig, LLMClient, response_problem  # noqa: E402


def _cfg(server: FaultServer, tmp_path: Path, **kw) -> EndpointConfig:
    base = dict(base_url=server.base_url, model="test-model", api_key_env="Q3_TEST_LLM_KEY",
                concurrency=4, timeout_s=2.0, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05,
                cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return EndpointConfig(**base)


def test_malformed_200_is_retried_never_cached_and_fails_one_request(tmp_path):
    prompts = ["[faults:choices_str] a", "[faults:usage_list] b",
               "[faults:choices_str,usage_list,choices_str] c",     # malformed on all 3 attempts
               "d"]
    reqs = [ChatRequest.user(p) for p in prompts]
    with FaultServer() as server:
        client = LLMClient(_cfg(server, tmp_path))
        a, b, c, d = client.complete_many(reqs)
        # the batch survives: good answers after one retry, the hopeless one is an error result
        assert (a.ok, a.attempts, a.text) == (True, 2, "echo: " + prompts[0])
        assert (b.ok, b.attempts, b.text) == (True, 2, "echo: " + prompts[1])
        assert d.ok and d.attempts == 1
        assert c.error.startswith("gave_up after 3 attempts: malformed response body: choices[0] is a str")
        assert client.stats.malformed == 1 + 1 + 3 and client.stats.retries == 1 + 1 + 2
        assert client.stats.errors == 1 and client.stats.duplicate_sends == 0
        # the malformed answer was not cached: nothing on disk under its key
        assert not client.cache.path(c.key).exists() and client.cache.path(a.key).exists()

        # rerun: the good ones from the cache, the failed one goes to the server again (and now succeeds)
        sent_before = server.total      # (no reset: the server's per-request fault plan goes on)
        again = LLMClient(_cfg(server, tmp_path))
        ra, rb, rc, rd = again.complete_many(reqs)
        assert ra.cached and rb.cached and rd.cached and again.stats.cache_hits == 3
        assert server.total - sent_before == 1 and rc.ok and rc.text == "echo: " + prompts[2] and not rc.cached


def test_cached_entry_of_the_wrong_shape_is_a_miss(tmp_path):
    """A cache written by the old client (it cached `{"choices": ["x"]}`) must not fail every rerun."""
    with FaultServer() as server:
        client = LLMClient(_cfg(server, tmp_path))
        req = ChatRequest.user("hello")
        key = client.key(client.body(req))
        for bad in ({"choices": ["x"]}, {"choices": [{"message": {"content": "hi"}}], "usage": [1, 2]}):
            client.cache.put(key, bad)
            (res,) = LLMClient(_cfg(server, tmp_path)).complete_many([req])
            assert res.ok and res.text == "echo: hello" and not res.cached
            assert json.loads(client.cache.path(key).read_text())["choices"][0]["message"]["content"] == "echo: hello"
        assert server.total == 2


def test_response_problem_names_the_defect():
    ok = {"choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1}}
    assert response_problem(ok) is None
    assert response_problem({"choices": [{"text": "x"}]}, completions=True) is None
    cases = {"[]": "body is a JSON list", '{"choices": []}': "no choices", '{"choices": {"a": 1}}': "choices is a dict",
             '{"choices": ["x"]}': "choices[0] is a str", '{"choices": [{"message": "x"}]}': "message is not an object",
             '{"choices": [{"message": {"content": 5}}]}': "content is a int",
             '{"choices": [{"message": {"content": "x"}}], "usage": [1, 2]}': "usage is a list"}
    for body, why in cases.items():
        assert why in (response_problem(json.loads(body)) or ""), body
    assert "text is not a string" in response_problem({"choices": [{"message": {"content": "x"}}]}, completions=True)


def test_retry_after_is_honoured_but_capped_at_backoff_max(tmp_path):
    with FaultServer(retry_after=0.3) as server:
        client = LLMClient(_cfg(server, tmp_path, backoff_max_s=0.5))
        short, hour = ChatRequest.user("[faults:429] s"), ChatRequest.user("[faults:429long] h")
        t0 = time.monotonic()
        rs, rh = client.complete_many([short, hour])
        wall = time.monotonic() - t0
        assert rs.ok and rh.ok and rh.attempts == 2
        ts, th = (server.times[request_key(client.body(r))] for r in (short, hour))
        assert ts[1] - ts[0] >= 0.28            # Retry-After: 0.3 honoured (backoff alone: ~0.01 s)
        assert 0.45 <= th[1] - th[0] < 2.0      # Retry-After: 3600 capped at backoff_max_s = 0.5
        assert wall < 5


def test_duplicate_sends_after_client_side_timeouts(tmp_path):
    """A timed-out attempt is still processed by the server: the resend is a duplicate send."""
    # margins wide enough for a loaded machine: a normal answer must never reach the client timeout
    with FaultServer(slow_s=2.5) as server:
        client = LLMClient(_cfg(server, tmp_path, timeout_s=1.0, max_retries=3))
        reqs = [ChatRequest.user(p) for p in
                ("[faults:slow] a", "[faults:slow,slow] b", "[faults:drop] c", "[faults:500] d", "e")]
        results = client.complete_many(reqs)
        assert all(r.ok for r in results), [r.error for r in results]
        # slow: 1 + 2 resends after client-side timeouts; drop: connection lost after sending; a 500 is
        # a known outcome (the server said it failed), so its resend is no duplicate
        assert client.stats.duplicate_sends == 4
        assert client.stats.retries == 5 and client.stats.malformed == 0
        # the server really did the work of the timed-out attempts: 3 late answers nobody read
        deadline = time.monotonic() + 10
        while sum(server.late.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(server.late.values()) == 3

