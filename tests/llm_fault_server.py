"""A real OpenAI-compatible chat-completions server on 127.0.0.1 that misbehaves on request.

A test peer for q3/llm.py (not a mock of our code): it speaks HTTP, `/v1/models` and
`/v1/chat/completions`, and injects faults chosen by markers in the last user message:

    "[faults:slow,500,429,malformed,drop] classify this"

attempt i of a request (requests are identified by the sha256 of their canonical JSON body) gets
fault i of the list; later attempts succeed. Faults:
    slow       sleep `slow_s` before answering (the client should time out and retry)
    500 / 503  a server error                     429  Too Many Requests with Retry-After
    malformed  HTTP 200 with a truncated JSON body
    choices_str  HTTP 200, valid JSON of the wrong shape: `"choices": ["x"]`
    usage_list   HTTP 200, a normal completion but `"usage": [1, 2]`
    429long    429 with `Retry-After: 3600` (a client must cap its wait)
    drop       headers + half the body, then the connection is closed mid-response
Other markers: `[delay:0.2]` (sleep before every answer), `[bad_json]` (content is not JSON),
`[schema_bad]` (JSON that violates any schema with required keys), `[refuse]` (a refusal).

Counters (per request key): `attempts`, `ok` (normal 200s sent), `late` (answers to slow attempts),
`max_inflight`, `total`. `responder(body) -> str` makes the content of normal answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_FAULTS = re.compile(r"\[faults:([a-z0-9_,]+)\]")
_DELAY = re.compile(r"\[delay:([0-9.]+)\]")


def request_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def default_responder(body: dict[str, Any]) -> str:
    user = last_user(body)
    if "[bad_json]" in user:
        return "I think the answer is five"
    if "[schema_bad]" in user:
        return json.dumps({"unexpected": True})
    if body.get("response_format", {}).get("type") == "json_schema":
        return json.dumps({"answer": request_key(body)[:8]})
    return "echo: " + user


class FaultServer:
    def __init__(self, models: tuple[str, ...] = ("test-model",),
                 responder: Callable[[dict[str, Any]], str] = default_responder,
                 api_key: str | None = None, slow_s: float = 2.0, retry_after: float = 1.0):
        self.models, self.responder, self.api_key = models, responder, api_key
        self.slow_s, self.retry_after = slow_s, retry_after
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.late: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.inflight = 0
        self.max_inflight = 0
        self.total = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset_counts(self) -> None:
        with self.lock:
            self.attempts.clear()
            self.ok.clear()
            self.late.clear()
            self.times.clear()
            self.max_inflight = self.total = 0

    # ---------------------------------------------------------------------------------- handler
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"   # one request per connection: drops stay isolated

            def log_message(self, *a: Any) -> None:  # keep test output clean
                pass

            def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if srv.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {srv.api_key}":
                    return True
                self._json(401, {"error": {"message": "Incorrect API key provided", "type": "auth"}})
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "test"} for m in srv.models]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                with srv.lock:
                    srv.total += 1
                if not self._authorised():
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if body.get("model") not in srv.models:
                    self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                               "type": "NotFoundError"}})
                    return
                key = request_key(body)
                user = last_user(body)
                with srv.lock:
                    attempt = srv.attempts[key]
                    srv.attempts[key] += 1
                    srv.times[key].append(time.monotonic())
                    srv.inflight += 1
                    srv.max_inflight = max(srv.max_inflight, srv.inflight)
                try:
                    self._answer(body, key, user, attempt)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with srv.lock:
                        srv.inflight -= 1

            def _answer(self, body: dict[str, Any], key: str, user: str, attempt: int) -> None:
                m = _FAULTS.search(user)
                faults = m.group(1).split(",") if m else []
                fault = faults[attempt] if attempt < len(faults) else None
                d = _DELAY.search(user)
                if d:
                    time.sleep(float(d.group(1)))
                if fault == "slow":
                    time.sleep(srv.slow_s)
                    with srv.lock:
                        srv.late[key] += 1
                    self._json(200, self._completion(body))
                elif fault in ("500", "502", "503"):
                    self._json(int(fault), {"error": {"message": "internal error (injected)"}})
                elif fault == "429":
                    self._json(429, {"error": {"message": "rate limited (injected)"}},
                               {"Retry-After": str(srv.retry_after)})
                elif fault == "429long":
                    self._json(429, {"error": {"message": "rate limited for an hour (injected)"}},
                               {"Retry-After": "3600"})
                elif fault == "choices_str":
                    self._json(200, {**self._completion(body), "choices": ["x"]})
                elif fault == "usage_list":
                    self._json(200, {**self._completion(body), "usage": [1, 2]})
                elif fault == "malformed":
                    data = json.dumps(self._completion(body)).encode()[:25]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif fault == "drop":
                    data = json.dumps(self._completion(body)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                else:
                    resp = self._completion(body)
                    with srv.lock:
                        srv.ok[key] += 1
                    self._json(200, resp)

            def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
                user = last_user(body)
                content = srv.responder(body)
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if "[refuse]" in user:
                    message = {"role": "assistant", "content": None, "refusal": "I cannot help with that."}
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                return {
                    "id": "chatcmpl-" + request_key(body)[:12], "object": "chat.completion",
                    "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len((content or "").split()),
                              "total_tokens": prompt_tokens + len((content or "").split())},
                }

        return Handler
