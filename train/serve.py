"""`q3 serve`: an OpenAI-compatible chat-completions server on our own checkpoint or HF export.

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health. Standard library HTTP
(ThreadingHTTPServer); one model, requests served one at a time under a lock (CPU, tiny models).
Honours temperature, top_p, top_k, presence_penalty, max_tokens (or max_completion_tokens), seed,
n, `response_format: {"type": "json_schema", ...}` (constrained decoding: the output always parses
and follows simple schemas), `chat_template_kwargs: {"enable_thinking": false}` (vLLM style) and
the /think, /no_think flags; an extension field `thinking_budget` caps thinking tokens.

    q3 serve load=runs/export port=0 port_file=/tmp/q3.port &     # port=0: a free port
    curl -s localhost:$(cat /tmp/q3.port)/v1/chat/completions -d '{"messages":[...]}'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from q3.config import Q3Config, load_config
from q3.log import get_logger
from train.generate import LM, SchemaError, Tokenizer, chat, load_lm

log = get_logger("train.serve")


class ServeConfig(Q3Config):
    load: str                          # HF export folder or megatron dist checkpoint
    model: str | None = None           # conf/model name for checkpoints without a sidecar
    host: str = "127.0.0.1"
    port: int = 8000                   # 0: pick a free port (written to port_file and stdout)
    port_file: str | None = None
    served_model_name: str | None = None
    default_max_tokens: int = 256      # when a request gives none (the presets' 32,768 is for big models)
    max_tokens_limit: int = 4096
    max_n: int = 16
    thinking_budget: int | None = None  # default budget of thinking tokens (None: unlimited)


class BadRequest(ValueError):
    pass


def _num(body: dict, key: str, typ, lo=None, hi=None):
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ is int and int(v) != v):
        raise BadRequest(f"{key} must be a {typ.__name__}, got {v!r}")
    v = typ(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadRequest(f"{key} must be in [{lo}, {hi}], got {v}")
    return v


def _text(content) -> str:
    """Message content as text: a string, or OpenAI content parts [{"type": "text", "text": ...}]."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise BadRequest("message content must be a string or a list of text parts")


class ChatService:
    """Turns OpenAI chat-completion requests into `train.generate.chat` calls."""

    def __init__(self, lm: LM, tok: Tokenizer, name: str, cfg: ServeConfig):
        self.lm, self.tok, self.name, self.cfg = lm, tok, name, cfg
        self.lock = threading.Lock()

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "q3"}]}

    def complete(self, body: dict) -> dict:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "tool") for m in msgs):
            raise BadRequest("messages must be a non-empty list of {role, content}")
        msgs = [{**m, "content": _text(m.get("content"))} for m in msgs]
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by q3 serve")
        max_tokens = _num(body, "max_completion_tokens", int, 1, self.cfg.max_tokens_limit) or \
            _num(body, "max_tokens", int, 1, self.cfg.max_tokens_limit) or self.cfg.default_max_tokens
        n = _num(body, "n", int, 1, self.cfg.max_n) or 1
        schema = None
        rf = body.get("response_format")
        if rf is not None:
            kind = rf.get("type") if isinstance(rf, dict) else None
            if kind == "json_schema":
                schema = (rf.get("json_schema") or {}).get("schema")
                if not isinstance(schema, dict):
                    raise BadRequest("response_format.json_schema.schema must be an object")
            elif kind == "json_object":
                schema = {"type": "object", "properties": {}}
            elif kind != "text":
                raise BadRequest(f"unsupported response_format type {kind!r}")
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking")
        kw = dict(temperature=_num(body, "temperature", float, 0, 2), top_p=_num(body, "top_p", float, 0, 1),
                  top_k=_num(body, "top_k", int, -1), presence_penalty=_num(body, "presence_penalty", float, -2, 2),
                  thinking_budget=_num(body, "thinking_budget", int, 0) or self.cfg.thinking_budget)
        if kw["top_k"] == -1:
            kw["top_k"] = 0                      # vLLM convention: -1 disables top-k
        seed = _num(body, "seed", int)
        messages = [{"role": m["role"], "content": m.get("content") or ""} for m in msgs]
        try:
            with self.lock:
                outs = chat(self.lm, self.tok, messages, n=n, seed=seed, thinking=thinking,
                            json_schema=schema, max_tokens=max_tokens, **kw)
        except SchemaError as e:
            raise BadRequest(str(e)) from None
        choices = []
        for i, o in enumerate(outs):
            msg = {"role": "assistant", "content": o.content}
            if o.reasoning is not None:
                msg["reasoning_content"] = o.reasoning
            choices.append({"index": i, "message": msg, "finish_reason": o.finish_reason, "logprobs": None})
        completion = sum(len(o.token_ids) for o in outs)
        prompt = outs[0].prompt_tokens
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}


def make_handler(service: ChatService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):          # route access logs through our logger
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, typ: str = "invalid_request_error") -> None:
            self._send(code, {"error": {"message": message, "type": typ, "code": code}})

        def do_GET(self):
            path = self.path.split("?")[0].rstrip("/")
            if path == "/health":
                self._send(200, {"status": "ok", "model": service.name})
            elif path == "/v1/models":
                self._send(200, service.models())
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self):
            path = self.path.split("?")[0].rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if path != "/v1/chat/completions":
                self._error(404, f"no route {self.path}", "not_found")
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("request body must be a JSON object")
                self._send(200, service.complete(body))
            except (json.JSONDecodeError, BadRequest) as e:
                self._error(400, str(e))
            except Exception as e:                  # keep serving; report the failure to the client
                log.exception("request failed")
                self._error(500, f"{type(e).__name__}: {e}", "server_error")

    return Handler


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    return server


def main(config: str | None, overrides: list[str]) -> int:
    """q3 serve load=DIR [port=8000|0] [port_file=FILE] [host=127.0.0.1] [served_model_name=NAME]"""
    cfg = load_config(ServeConfig, "serve", config, overrides)
    lm, tok, name = load_lm(cfg.load, cfg.model)
    service = ChatService(lm, tok, cfg.served_model_name or name, cfg)
    server = make_server(service, cfg.host, cfg.port)
    host, port = server.server_address[:2]
    if cfg.port_file:
        tmp = Path(cfg.port_file).with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(cfg.port_file)              # atomic: readers never see a partial file
    print(f"q3 serve: model {service.name} at http://{host}:{port}/v1 (stop with SIGTERM or Ctrl-C)", flush=True)

    def _stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@contextmanager
def background(load: str | Path, *overrides: str, startup_timeout: float = 300) -> Iterator[str]:
    """Run `q3 serve load=... port=0` in a child process; yield its base URL
    (http://127.0.0.1:PORT/v1) once the model is loaded; SIGTERM it on exit.

        with background("runs/export", "served_model_name=q3-tiny") as base_url:
            httpx.post(f"{base_url}/chat/completions", json={...})
    """
    with tempfile.TemporaryDirectory() as d:
        port_file = Path(d) / "port"
        cmd = [sys.executable, "-m", "q3.cli", "serve", f"load={load}", "port=0", f"port_file={port_file}",
               *overrides]
        root = str(Path(__file__).resolve().parents[1])
        # a parent that is itself a (1-rank) torch.distributed job must not hand down its rendezvous
        env = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + startup_timeout
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"q3 serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
                if time.time() > deadline:
                    raise TimeoutError(f"q3 serve did not start within {startup_timeout}s")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()
