"""`q3 serve`: real HTTP on 127.0.0.1 from a real client (httpx) against a tiny exported Qwen3."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import child_env
from tiny_export import tiny_checkpoint_and_export

from train.generate import load_lm
from train.serve import ChatService, ServeConfig, make_server

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {
    "quality": {"enum": ["low", "medium", "high"]},
    "educational_value": {"type": "integer", "minimum": 0, "maximum": 5},
    "is_code": {"type": "boolean"}}, "required": ["quality", "educational_value", "is_code"]}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tiny_checkpoint_and_export(tmp_path_factory.mktemp("serve"), "tiny_dense")[3]


@pytest.fixture(scope="module")
def client(hf_dir):
    lm, tok, name = load_lm(hf_dir)
    server = make_server(ChatService(lm, tok, "q3-tiny", ServeConfig(load=str(hf_dir))), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.server_address[1]}", timeout=120) as c:
        yield c
    server.shutdown()
    server.server_close()


def test_health_and_models(client):
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "q3-tiny"
    assert client.get("/nope").status_code == 404


def test_chat_completion_usage(client):
    body = {"model": "q3-tiny", "messages": [{"role": "user", "content": "Hello! /no_think"}],
            "max_tokens": 4, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "presence_penalty": 1.5, "seed": 3}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "q3-tiny"
    ch = out["choices"][0]
    assert ch["message"]["role"] == "assistant" and isinstance(ch["message"]["content"], str)
    assert ch["finish_reason"] in ("stop", "length")
    u = out["usage"]
    # the rendered no-think prompt: 4 template tokens + message + empty think block
    assert u["prompt_tokens"] > 10 and 1 <= u["completion_tokens"] <= 4
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    again = client.post("/v1/chat/completions", json=body).json()
    assert again["choices"][0]["message"] == ch["message"]          # seed makes it reproducible


def test_n_choices(client):
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Tell me a word. /no_think"}], "n": 3, "max_tokens": 3,
        "seed": 1})
    out = r.json()
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in out["choices"]}) > 1
    assert out["usage"]["completion_tokens"] <= 9


def test_json_schema_response_parses(client):
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "system", "content": "You label documents."},
                     {"role": "user", "content": "Document: def f(x): return x"}],
        "n": 2, "seed": 0, "temperature": 1.0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "labels", "schema": SCHEMA}}})
    assert r.status_code == 200, r.text
    for ch in r.json()["choices"]:
        obj = json.loads(ch["message"]["content"])
        assert set(obj) == {"quality", "educational_value", "is_code"}
        assert obj["quality"] in ("low", "medium", "high") and 0 <= obj["educational_value"] <= 5
        assert isinstance(obj["is_code"], bool)


def test_bad_requests_are_400(client):
    post = lambda body: client.post("/v1/chat/completions", json=body)   # noqa: E731
    assert post({"messages": []}).status_code == 400
    assert post({"messages": [{"role": "user", "content": "x"}], "n": 0}).status_code == 400
    assert post({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}).status_code == 400
    r = post({"messages": [{"role": "user", "content": "x"}],
              "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/x"}}}})
    assert r.status_code == 400 and "unsupported" in r.json()["error"]["message"]
    assert client.post("/v1/chat/completions", content=b"{not json").status_code == 400
    assert post({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).status_code == 400
    parts = post({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi /no_think"}]}],
                  "max_tokens": 1, "seed": 0})
    assert parts.status_code == 200 and parts.json()["usage"]["completion_tokens"] == 1


def test_q3_serve_in_background(hf_dir, tmp_path):
    """The documented way: start `q3 serve` on a free port in the background, query, SIGTERM."""
    port_file = tmp_path / "port"
    env = child_env()
    proc = subprocess.Popen([sys.executable, "-m", "q3.cli", "serve", f"load={hf_dir}", "port=0",
                             f"port_file={port_file}", "served_model_name=bg"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while not port_file.exists():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        assert httpx.get(f"{base}/health", timeout=30).json()["model"] == "bg"
        r = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "hi /no_think"}], "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()


@pytest.mark.slow
def test_background_helper_on_megatron_checkpoint(tmp_path):
    """`train.serve.background` (what labeling/synth/demo use) serving a megatron checkpoint."""
    from train.serve import background

    ckpt = tiny_checkpoint_and_export(tmp_path, "tiny_moe")[2]
    with background(ckpt, "served_model_name=moe") as base:
        card = httpx.get(f"{base}/models", timeout=30).json()["data"][0]
        assert card["id"] == "moe" and card["max_model_len"] == 4096      # megatron's max_sequence_length
        r = httpx.post(f"{base}/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "Is this code? print(1)"}], "seed": 0,
            "response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}})
        assert set(json.loads(r.json()["choices"][0]["message"]["content"])) == set(SCHEMA["properties"])


def test_scheduler_batches_in_arrival_order():
    """The scheduler on a plain run function (no model): while a batch runs, arrivals queue; then the
    oldest and every queued work with its key (up to max_batch) run together, in arrival order;
    key None runs alone; a work withdrawn while queued never runs; beyond max_waiting: Busy."""
    from train.serve_batch import Busy, Scheduler, Work, wait

    ran: list[list[str]] = []
    gate = threading.Event()

    def run(batch: list[Work]) -> None:
        if batch[0].payload == "first":
            gate.wait(60)                                # hold the scheduler until all are queued
        ran.append([w.payload for w in batch])
        for w in batch:
            w.token(0, 1)
            w.finish(w.payload.upper())

    sched = Scheduler(run, max_batch=3, max_waiting=6, cancelled_result=lambda w: "cancelled")
    first = sched.submit(Work("first", "a"))
    for _ in range(2000):                                # until it runs (bounded)
        if sched.stats()["running"] == 1:
            break
        time.sleep(0.005)
    works = {p: sched.submit(Work(p, k)) for p, k in
             [("a1", "a"), ("b1", "b"), ("a2", "a"), ("x", None), ("a3", "a"), ("a4", "a")]}
    with pytest.raises(Busy):
        sched.submit(Work("too many", "a"))
    assert sched.withdraw(works["a3"]) and not sched.withdraw(first)
    gate.set()
    tokens: list[tuple] = []
    got = {p: wait(w, lambda *t: tokens.append(t), lambda: False, lambda: False) for p, w in works.items()}
    assert wait(first, None, lambda: False, lambda: False) == "FIRST"
    assert ran == [["first"], ["a1", "a2", "a4"], ["b1"], ["x"]]
    assert got == {"a1": "A1", "b1": "B1", "a2": "A2", "x": "X", "a3": "cancelled", "a4": "A4"}
    assert len(tokens) == 5
    st = sched.stats()
    assert (st["batches"], st["batched_requests"], st["largest_batch"], st["queued"]) == (4, 6, 3, 0)
