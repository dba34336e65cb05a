"""`q3 serve` driven by the official `openai` client (and raw sockets for broken clients) against a
real server subprocess on 127.0.0.1 serving a tiny exported Qwen3: streaming, logprobs, structured
output, cancellation of abandoned work, request limits, SIGTERM."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from conftest import child_env
from tiny_export import tiny_checkpoint_and_export

from train.generate import load_lm
from train.sampling import THINKING_BUDGET_TEXT
from train.serve import ChatService, ServeConfig, make_server
from train.serve_stream import TokenBytes

ROOT = Path(__file__).resolve().parents[2]
MODEL = "q3-tiny"
HI = [{"role": "user", "content": "Hello there! /no_think"}]


class Server:
    def __init__(self, hf_dir: Path, tmp: Path, log):
        port_file = tmp / "port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "q3.cli", "serve", f"load={hf_dir}", "port=0", f"port_file={port_file}",
             f"served_model_name={MODEL}", "read_timeout_s=2"],
            cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 180
        while not port_file.exists():
            assert self.proc.poll() is None, (tmp / "serve.log").read_text()[-2000:]
            assert time.time() < deadline, "q3 serve did not start"
            time.sleep(0.2)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=kw.pop("timeout", 120))

    def raw(self, request: bytes) -> bytes:
        """Send bytes on a fresh socket, return the response's status line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            s.sendall(request)
            return s.recv(65536).split(b"\r\n", 1)[0]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tiny_checkpoint_and_export(tmp_path_factory.mktemp("serve_openai"), "tiny_dense")[3]


@pytest.fixture(scope="module")
def server(hf_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    with open(tmp / "serve.log", "w") as log:           # a file, not a pipe nobody drains
        srv = Server(hf_dir, tmp, log)
        yield srv
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(timeout=60)
    assert "Traceback" not in (tmp / "serve.log").read_text()


def _collect(stream) -> tuple[dict[int, str], dict[int, list], dict[int, str], object, list]:
    """(content per choice, logprob entries per choice, finish reasons, usage, chunks)."""
    text, lps, finish, usage, chunks = {}, {}, {}, None, []
    for chunk in stream:
        chunks.append(chunk)
        assert chunk.object == "chat.completion.chunk" and chunk.model == MODEL
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            text[ch.index] = text.get(ch.index, "") + (ch.delta.content or "")
            if ch.logprobs and ch.logprobs.content:
                lps.setdefault(ch.index, []).extend(ch.logprobs.content)
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    return text, lps, finish, usage, chunks


def test_stream_concatenates_to_the_unstreamed_reply(server):
    c = server.client()
    kw = dict(model=MODEL, messages=HI, max_tokens=6, seed=11, n=2, temperature=1.0)
    full = c.chat.completions.create(**kw)
    text, _, finish, usage, chunks = _collect(
        c.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert text == {i: ch.message.content for i, ch in enumerate(full.choices)}
    assert finish == {i: ch.finish_reason for i, ch in enumerate(full.choices)}
    assert usage.model_dump() == full.usage.model_dump()
    first = [ch for ch in chunks if ch.choices][0].choices[0]
    assert first.delta.role == "assistant" and first.delta.content == ""
    assert len({ch.id for ch in chunks}) == 1 and chunks[-1].choices == []     # the usage chunk is last
    assert sum(1 for ch in chunks for x in ch.choices if x.delta.content) >= 2  # really token by token


def test_logprobs_are_the_models(server, hf_dir):
    c = server.client()
    kw = dict(model=MODEL, messages=HI, max_tokens=5, seed=2, logprobs=True, top_logprobs=3)
    full = c.chat.completions.create(**kw)
    entries = full.choices[0].logprobs.content
    assert len(entries) == full.usage.completion_tokens
    text = b"".join(bytes(e.bytes) for e in entries).decode()
    assert text.strip() == full.choices[0].message.content
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and e.logprob <= tops[0] + 1e-6
    # the first token's log-probability, computed here from the exported model
    lm, tok, _ = load_lm(hf_dir)
    prompt = tok.encode(tok.render(HI, thinking=False))
    # normalised over the model's whole (padded) vocabulary, as the trainer's loss is; real ids only
    lp = torch.log_softmax(lm.next_logits(prompt), -1)[: tok.vocab_size]
    token_bytes = TokenBytes(tok)
    near = torch.nonzero((lp - entries[0].logprob).abs() < 1e-3).flatten().tolist()
    assert any(token_bytes(i) == bytes(entries[0].bytes) for i in near)
    assert torch.allclose(lp.topk(3).values, torch.tensor([t.logprob for t in entries[0].top_logprobs]),
                          atol=1e-3)
    # streamed: the same entries, chunk by chunk
    _, lps, _, _, _ = _collect(c.chat.completions.create(**kw, stream=True))
    assert [e.model_dump() for e in lps[0]] == [e.model_dump() for e in entries]


def test_json_schema_with_the_client(server):
    schema = {"type": "object", "properties": {"label": {"enum": ["yes", "no"]},
                                               "score": {"type": "integer", "minimum": 0, "maximum": 9}}}
    kw = dict(model=MODEL, seed=0, messages=[{"role": "user", "content": "Is this code? print(1)"}],
              response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": schema}})
    c = server.client()
    obj = json.loads(c.chat.completions.create(**kw).choices[0].message.content)
    assert obj["label"] in ("yes", "no") and 0 <= obj["score"] <= 9
    text, lps, _, _, _ = _collect(c.chat.completions.create(**kw, stream=True, logprobs=True))
    assert json.loads(text[0]) == obj and len(lps[0]) >= 4


def test_abandoned_work_is_cancelled(server):
    """A client that leaves mid-stream (or mid-request) frees the model: the next request is
    answered although the abandoned ones asked for ~4,000 tokens (minutes of CPU)."""
    body = {"model": MODEL, "messages": HI, "max_tokens": 4000, "seed": 0, "stream": True}
    with httpx.Client(timeout=60) as h, h.stream("POST", f"{server.url}/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data:")]
        assert len(got) >= 2
    # non-streamed, socket closed while generating
    raw = json.dumps({**body, "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
    quick = server.client(timeout=60).chat.completions.create(model=MODEL, messages=HI, max_tokens=2)
    assert quick.usage.completion_tokens <= 2


def test_concurrent_requests_get_their_own_answers(server):
    c = server.client()
    ask = lambda seed: c.chat.completions.create(model=MODEL, messages=HI, max_tokens=3,  # noqa: E731
                                                 seed=seed).choices[0].message.content
    expected = {seed: ask(seed) for seed in range(4)}
    got: dict[int, str] = {}
    threads = [threading.Thread(target=lambda s=s: got.__setitem__(s, ask(s))) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert got == expected


def test_broken_requests_get_4xx_not_a_hang(server):
    body = b'{"messages": [{"role": "user", "content": "x"}]}'
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n"
    # a body shorter than its Content-Length: answered after read_timeout_s=2, not never
    assert server.raw(head % b"100" + body).startswith(b"HTTP/1.1 408")
    assert server.raw(head % b"-5" + body).startswith(b"HTTP/1.1 400")
    assert server.raw(head % b"many" + body).startswith(b"HTTP/1.1 400")
    nested = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for raw in (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', nested,
                b'{"messages": [{"role": "user", "content": "x"}], "seed": 1e999}'):
        assert server.raw(head % str(len(raw)).encode() + raw).startswith(b"HTTP/1.1 400")
    c = server.client()
    bad = [dict(seed=2**70), dict(temperature=3), dict(top_logprobs=21, logprobs=True), dict(top_logprobs=2),
           dict(response_format={"type": "json_schema", "json_schema": "not an object"}),
           dict(response_format={"type": "json_schema", "json_schema": {"schema": [1]}}),
           dict(extra_body={"chat_template_kwargs": "no"}), dict(stream_options={"include_usage": True},
                                                                  extra_body={"stream": "yes"}),
           dict(max_tokens=4096)]                              # prompt + 4096 > the 4096-token context
    for kw in bad:
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model=MODEL, messages=HI, **{"max_tokens": 2, **kw})
    with pytest.raises(openai.BadRequestError, match="maximum context length is 4096"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello " * 5000}])
    assert c.chat.completions.create(model=MODEL, messages=HI, max_tokens=1).usage.completion_tokens == 1


def test_sigterm_during_generation_exits_0(server):
    """Last in this module: it stops the module's server."""
    body = {"model": MODEL, "messages": HI, "max_tokens": 4000, "stream": True}
    seen: list[str] = []
    with httpx.Client(timeout=60) as h, h.stream("POST", f"{server.url}/chat/completions", json=body) as r:
        for line in r.iter_lines():
            seen.append(line)
            if sum(x.startswith("data:") for x in seen) == 3:        # generation is under way
                server.proc.send_signal(signal.SIGTERM)
            if len(seen) > 20_000:
                break
    assert server.proc.wait(timeout=60) == 0
    assert "data: [DONE]" not in seen and len(seen) < 20_000      # cut short, not run to 4,000 tokens


@pytest.fixture(scope="module")
def thinking_server(hf_dir, tmp_path_factory):
    """In-process server on a copy of the export whose chat template opens the think block in the
    prompt (as Qwen3-2507 thinking models do): the reply starts inside <think>."""
    d = tmp_path_factory.mktemp("thinking_hf")
    shutil.copytree(hf_dir, d, dirs_exist_ok=True)
    cfg_file = d / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    no_think = "{{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}"
    assert no_think in cfg["chat_template"]
    cfg["chat_template"] = cfg["chat_template"].replace(no_think, no_think.replace(
        "{%- endif %}", "{%- else %}{{- '<think>' }}{%- endif %}"))
    cfg_file.write_text(json.dumps(cfg))
    lm, tok, _ = load_lm(d)
    srv = make_server(ChatService(lm, tok, MODEL, ServeConfig(load=str(d))), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key="unused",
                        max_retries=0, timeout=120)
    srv.shutdown()
    srv.server_close()


def test_reasoning_streams_as_reasoning_content(thinking_server):
    """Thinking budget 3: three thought tokens, the forced budget sentence closing </think>, then the
    answer. Streamed reasoning_content/content deltas add up to the unstreamed message."""
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Why is the sky blue?"}], max_tokens=40,
              seed=4, logprobs=True, extra_body={"thinking_budget": 3})
    full = thinking_server.chat.completions.create(**kw).choices[0]
    reasoning = full.message.model_extra["reasoning_content"]
    assert reasoning.endswith(THINKING_BUDGET_TEXT.split("\n</think>")[0].strip())
    assert len(full.logprobs.content) == 40 and full.message.content
    pieces = {"reasoning_content": "", "content": ""}
    order = []
    for chunk in thinking_server.chat.completions.create(**{**kw, "logprobs": False}, stream=True):
        for ch in chunk.choices:
            for key in pieces:
                piece = (ch.delta.model_extra or {}).get(key) if key != "content" else ch.delta.content
                if piece:
                    pieces[key] += piece
                    order.append(key)
    assert pieces == {"reasoning_content": reasoning, "content": full.message.content}
    assert order[0] == "reasoning_content" and order.count("reasoning_content") >= 4   # token by token
    assert "<think>" not in reasoning + full.message.content and "</think>" not in reasoning
