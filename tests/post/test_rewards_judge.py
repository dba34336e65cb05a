"""The LLM-judge reward over real HTTP: `q3 serve` on a free port with a tiny random Qwen3 (its
free-text verdicts are garbage: the fault path must give the default score with a reason; with
`schema: true` the server's constrained decoding forces a well-formed verdict, which is parsed),
an unreachable endpoint, and the verdict parser."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from q3.config import ConfigError
from train.post.rewards import RewardInput, build_reward
from train.post.rewards.judge import parse_verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))   # tests/train/tiny_export.py

MODEL = "q3-tiny"
Q = [{"role": "user", "content": "What is 6 * 7?"}]


def items(n: int) -> list[RewardInput]:
    return [RewardInput(Q, f"<think>\nmultiply\n</think>\n\n{40 + i}", {"reference": "42"}) for i in range(n)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiny_export import random_model

    from train.hf_export import save_megatron
    from train.serve import background

    model, cfg = random_model("tiny_dense")
    ckpt = tmp_path_factory.mktemp("judge") / "ckpt"
    save_megatron(model, cfg, ckpt)
    with background(ckpt, f"served_model_name={MODEL}") as url:
        yield url


def judge(url: str, **kw):
    return build_reward({"type": "judge", "endpoint": {"base_url": url, "model": MODEL, "max_retries": 0,
                                                       "timeout_s": 120, "api_key_env": None}, **kw})


def generated(url: str) -> int:
    return httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()["generated_tokens"]


def test_judge_against_q3_serve(server):
    before = generated(server)
    free = judge(server, max_tokens=12, default_score=0.25)
    batch = items(3) + [RewardInput(Q, "42", {})]                  # the last has no reference
    res = free.score(batch)
    assert free.client.stats.sent == 3                               # three HTTP requests, no reference: none
    assert generated(server) > before                                # the server really generated
    assert res[3].score == 0.25 and res[3].details["reason"] == "no_reference"
    for r in res[:3]:                                                # a random model's free text: not a verdict
        assert r.score == 0.25 and r.details["reason"] == "unparsable", r.details
        assert r.details["verdict"] and r.details["error"]
    assert free.counters == {"unparsable": 3, "no_reference": 1}

    forced = judge(server, schema=True, verdict="score")            # constrained decoding: always well formed
    res = forced.score(items(3))
    for r in res:
        assert r.details["reason"] == "ok", r.details
        assert 0.0 <= r.score <= 1.0 and (r.score * 10) == int(r.score * 10)
        assert parse_verdict(r.details["verdict"], "score") == (r.score, "ok")
    assert forced.counters == {"ok": 3}

    yes_no = judge(server, schema=True, verdict="yes_no", name="equiv")
    res = yes_no.score(items(2))
    assert all(r.details["reason"] == "ok" and r.score in (0.0, 1.0) for r in res)
    assert all('"verdict"' in r.details["verdict"] for r in res)


def test_unreachable_endpoint_gives_default_scores_fast():
    with socket.socket() as s:                                        # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = build_reward({"type": "judge", "default_score": 0.1, "endpoint": {
        "base_url": f"http://127.0.0.1:{port}/v1", "model": MODEL, "max_retries": 1, "backoff_base_s": 0.01,
        "timeout_s": 5}})
    t = time.perf_counter()
    res = r.score(items(4))
    assert time.perf_counter() - t < 5
    assert [x.score for x in res] == [0.1] * 4
    assert all(x.details["reason"] == "endpoint_error" and "connection error" in x.details["error"] for x in res)
    assert r.counters == {"endpoint_error": 4}


def test_judge_config_errors(monkeypatch):
    monkeypatch.delenv("Q3_LLM_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="no judge endpoint"):
        build_reward({"type": "judge"})
    with pytest.raises(ConfigError, match="prompt must use only"):
        build_reward({"type": "judge", "prompt": "{question} {gold}", "endpoint": {"base_url": "http://x/v1", "model": "m"}})


@pytest.mark.parametrize("text,verdict,want", [
    ('{"score": 7}', "score", 0.7),
    ('Sure.\n```json\n{"score": 10}\n```', "score", 1.0),
    ('{"score": 11}', "score", None),
    ('{"score": true}', "score", None),
    ("7/10", "score", None),
    ("", "score", None),
    ("[[YES]]", "yes_no", 1.0),
    ("The answer differs. [[no]]", "yes_no", 0.0),
    ("[[YES]] or [[NO]]", "yes_no", None),
    ('{"verdict": "NO"}', "yes_no", 0.0),
    ("yes", "yes_no", None),
])
def test_parse_verdict(text, verdict, want):
    score, why = parse_verdict(text, verdict)
    assert score == want and (why == "ok") == (want is not None)
