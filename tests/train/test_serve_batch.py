"""`q3 serve` batching: concurrent requests decoded together in one engine batch, over real HTTP on
127.0.0.1 (httpx) against a tiny exported Qwen3 served in-process. The scheduler is held busy by a
real long request so that the others queue up (watched through /health), then released."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from tiny_export import tiny_checkpoint_and_export

from train.generate import load_lm
from train.serve import ChatService, ServeConfig, make_server

WORDS = ["cat", "dog", "sun", "tree", "red", "blue", "one", "two", "fish", "bird", "rain", "snow"]
COMMON = {"temperature": 1.0, "top_p": 0.95, "top_k": 20}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    hf = tiny_checkpoint_and_export(tmp_path_factory.mktemp("serve_batch"), "tiny_dense")[3]
    lm, tok, _ = load_lm(hf)
    service = ChatService(lm, tok, "q3-tiny", ServeConfig(load=str(hf), max_batch_requests=8))
    server = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.server_address[1]}", timeout=120) as c:
        yield service, c
    server.shutdown()
    server.server_close()


def messages(word: str) -> list[dict]:
    return [{"role": "user", "content": f"Say {word} please /no_think"}]


@pytest.fixture(scope="module")
def words(served) -> list[str]:
    """Six words whose prompts have one token length (an HF export batches equal lengths only)."""
    service = served[0]
    by_len: dict[int, list[str]] = {}
    for w in WORDS:
        by_len.setdefault(len(service.parse({"messages": messages(w)}).prompt_ids), []).append(w)
    same = max(by_len.values(), key=len)
    assert len(same) >= 6
    return same[:6]


def health(c: httpx.Client) -> dict:
    return c.get("/health").json()


def wait_for(c: httpx.Client, cond) -> dict:
    for _ in range(3000):                           # bounded: 3000 polls
        h = health(c)
        if cond(h):
            return h
        time.sleep(0.01)
    return health(c)


@contextmanager
def scheduler_held(c: httpx.Client) -> Iterator[None]:
    """A real streamed request of 4,000 tokens keeps the scheduler busy; leaving the block closes
    it (the client goes away, its generation is cancelled) and the scheduler is free again."""
    url = str(c.base_url) + "/v1/chat/completions"
    body = {"messages": messages("long"), "max_tokens": 4000, "seed": 0, "stream": True, "temperature": 0.5}
    with httpx.Client(timeout=60) as h, h.stream("POST", url, json=body) as r:
        assert r.status_code == 200
        h1 = wait_for(c, lambda x: x["running"] == 1)
        assert h1["running"] == 1 and h1["queued"] == 0
        yield


def queue_while_held(c: httpx.Client, threads: list[threading.Thread]) -> dict:
    """Start the client threads while the scheduler is busy, wait until all are queued, release the
    scheduler so they go as one batch, wait for the clients; returns /health from before release."""
    with scheduler_held(c):
        for t in threads:
            t.start()
        before = wait_for(c, lambda h: h["queued"] == len(threads))
        assert before["queued"] == len(threads)
    for t in threads:
        t.join(timeout=300)
    return before


def ask(c: httpx.Client, word: str, seed: int, **kw) -> dict:
    r = c.post("/v1/chat/completions", json={"messages": messages(word), "seed": seed, **COMMON, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def answer(reply: dict) -> tuple:
    ch = reply["choices"][0]
    return ch["message"]["content"], ch["finish_reason"], reply["usage"]["completion_tokens"]


def test_concurrent_requests_are_batched_and_answered_as_alone(served, words):
    service, c = served
    jobs = [(w, seed, 6 + seed % 3) for seed, w in enumerate(words)]       # own seeds and max_tokens
    alone = {w: answer(ask(c, w, seed, max_tokens=mt)) for w, seed, mt in jobs}
    before = health(c)
    got: dict[str, tuple] = {}

    def client(w: str, seed: int, mt: int) -> None:
        with httpx.Client(base_url=c.base_url, timeout=120) as own:
            got[w] = answer(ask(own, w, seed, max_tokens=mt))

    queue_while_held(c, [threading.Thread(target=client, args=job) for job in jobs])
    assert got == alone                                # same seed, same tokens, batched or not
    after = wait_for(c, lambda h: h["running"] == 0)
    assert after["batches"] - before["batches"] == 2   # the long request, then all six at once
    assert after["batched_requests"] - before["batched_requests"] == 7
    assert after["largest_batch"] >= 6
    assert after["decode_batches"] - before["decode_batches"] == 2     # one KV-cached decode for the six


def test_client_leaving_mid_batch_does_not_disturb_the_others(served, words):
    """Five short requests and one streamed 4,000-token request share a batch; that client leaves
    after three chunks: the five answer as alone, the leaver's rows stop (far fewer than 4,000
    tokens are generated) and the server is free for the next request."""
    service, c = served
    short = [(w, 10 + seed, 24) for seed, w in enumerate(words[:5])]
    alone = {w: answer(ask(c, w, seed, max_tokens=mt)) for w, seed, mt in short}
    got: dict[str, tuple] = {}
    left = threading.Event()

    def client(w: str, seed: int, mt: int) -> None:
        with httpx.Client(base_url=c.base_url, timeout=120) as own:
            got[w] = answer(ask(own, w, seed, max_tokens=mt))

    def leaver() -> None:
        body = {"messages": messages(words[5]), "seed": 3, "max_tokens": 4000, "stream": True, **COMMON}
        with httpx.Client(timeout=120) as h, \
                h.stream("POST", str(c.base_url) + "/v1/chat/completions", json=body) as r:
            n = 0
            for line in r.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["choices"][0]["delta"].get("content"):
                    n += 1
                    if n == 3:
                        break
        left.set()

    threads = [threading.Thread(target=client, args=job) for job in short] + [threading.Thread(target=leaver)]
    before = queue_while_held(c, threads)
    assert left.is_set() and got == alone
    after = wait_for(c, lambda h: h["running"] == 0 and h["queued"] == 0)
    assert after["batches"] == before["batches"] + 1 and after["largest_batch"] >= 6    # all six at once
    assert after["generated_tokens"] - before["generated_tokens"] < 1000           # not 4,000 for the leaver
    assert answer(ask(c, words[0], 1, max_tokens=2))[2] <= 2


def test_logprobs_stream_token_by_token(served, words):
    """Streamed logprob entries go out as tokens are produced: three of them arrive long before a
    4,000-token generation could finish, and leaving stops it."""
    service, c = served
    before = health(c)
    body = {"messages": messages(words[0]), "seed": 5, "max_tokens": 4000, "stream": True, "logprobs": True,
            "top_logprobs": 2, **COMMON}
    entries = []
    with httpx.Client(timeout=120) as h, h.stream("POST", str(c.base_url) + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                ch = json.loads(line[5:])["choices"][0]
                entries += (ch.get("logprobs") or {}).get("content") or []
                if len(entries) >= 3:
                    break
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= e["top_logprobs"][0]["logprob"] + 1e-6
               for e in entries)
    after = wait_for(c, lambda x: x["running"] == 0)
    assert after["generated_tokens"] - before["generated_tokens"] < 1000


def test_different_settings_are_not_mixed(served, words):
    """A different temperature (or n, or top_logprobs) cannot share an engine call: answered
    correctly, in separate batches."""
    service, c = served
    alone = [answer(ask(c, words[0], 1, max_tokens=4)),
             answer(ask(c, words[1], 2, max_tokens=4, temperature=0.3)),
             answer(ask(c, words[2], 3, max_tokens=4, n=2))]
    got: list = [None] * 3

    def client(k: int, kw: dict) -> None:
        with httpx.Client(base_url=c.base_url, timeout=120) as own:
            got[k] = answer(ask(own, words[k], k + 1, max_tokens=4, **kw))

    threads = [threading.Thread(target=client, args=(k, kw))
               for k, kw in enumerate([{}, {"temperature": 0.3}, {"n": 2}])]
    before = queue_while_held(c, threads)
    assert got == alone
    after = wait_for(c, lambda h: h["running"] == 0)
    assert after["batches"] - before["batches"] == 3      # one batch each


def test_shutdown_cancels_a_running_batch(served, words):
    """Last in this module (it stops the service): `stop()` (what SIGTERM calls) ends every stream
    of a running batch without [DONE], frees the scheduler and refuses new requests (503)."""
    service, c = served
    lines: dict[int, list[str]] = {}

    def streamer(k: int) -> None:
        body = {"messages": messages(words[k]), "seed": k, "max_tokens": 4000, "stream": True, **COMMON}
        with httpx.Client(timeout=120) as h, \
                h.stream("POST", str(c.base_url) + "/v1/chat/completions", json=body) as r:
            lines[k] = list(r.iter_lines())

    threads = [threading.Thread(target=streamer, args=(k,)) for k in range(2)]
    with scheduler_held(c):
        for t in threads:
            t.start()
        assert wait_for(c, lambda h: h["queued"] == 2)["queued"] == 2
    before = wait_for(c, lambda h: h["running"] == 2)
    assert before["running"] == 2
    service.stop()
    for t in threads:
        t.join(timeout=300)
    assert sorted(lines) == [0, 1] and all("data: [DONE]" not in v for v in lines.values())
    after = wait_for(c, lambda h: h["running"] == 0)
    assert after["running"] == 0 and after["generated_tokens"] - before["generated_tokens"] < 4000
    assert c.post("/v1/chat/completions", json={"messages": messages("x"), "max_tokens": 1}).status_code == 503
