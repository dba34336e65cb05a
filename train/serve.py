"""`q3 serve`: an OpenAI-compatible chat-completions server on our own checkpoint or HF export.

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health. Standard library HTTP
(ThreadingHTTPServer); one model, owned by a scheduler thread (train/serve_batch.py): requests that
arrive while it is busy are decoded together in one KV-cached engine batch when their sampling
settings match (up to `max_batch_requests`; each keeps its own seed, so its answer does not depend
on the batch), otherwise served in arrival order. Honours temperature, top_p, top_k, presence_penalty, max_tokens (or
max_completion_tokens), seed, n, stream (server-sent events, `stream_options.include_usage`),
logprobs/top_logprobs, `response_format: {"type": "json_schema", ...}` (constrained decoding: the
output always parses and follows simple schemas), `chat_template_kwargs: {"enable_thinking": false}`
(vLLM style) and the /think, /no_think flags; an extension field `thinking_budget` caps thinking.
Thinking text is returned as `reasoning_content` (vLLM's reasoning-parser shape), streamed too.

Abandoned work is cancelled: a client that disconnects (while queued, generating or streaming)
stops its generation; SIGTERM cancels running generations and exits 0. Sockets have a read
timeout; malformed or out-of-range requests get 400 with a one-line reason, never a 500.

    q3 serve load=runs/export port=0 port_file=/tmp/q3.port &     # port=0: a free port
    curl -s localhost:$(cat /tmp/q3.port)/v1/chat/completions -d '{"messages":[...]}'
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import torch
from pydantic import Field

from q3.config import Q3Config, load_config
from q3.log import get_logger
from q3.proc import stop
from q3.tokenizer import THINK_ID
from train.generate import LM, Completion, SchemaError, Tokenizer, chat, completion, load_lm, thinking_mode
from train.rollout import Rollout
from train.sampling import preset_for
from train.serve_batch import Busy, Scheduler, Work, wait
from train.serve_limits import (
    BadRequest,
    DeadlineReader,
    max_token_bytes,
    min_prompt_tokens,
    schema_max_tokens,
    short,
)
from train.serve_stream import ReasoningSplit, TokenBytes, TokenText, logprob_entry

log = get_logger("train.serve")
MAX_JSON_DEPTH = 64                  # request bodies nested deeper are refused (400)
MAX_TOP_LOGPROBS = 20                # OpenAI's limit
STOP_TIMEOUT_S = 30.0                # SIGTERM: running generations get this long to end (they end within a token)


class ServeConfig(Q3Config):
    load: str                          # HF export folder or megatron dist checkpoint
    model: str | None = None           # conf/model name for checkpoints without a sidecar
    host: str = "127.0.0.1"
    port: int = 8000                   # 0: pick a free port (written to port_file and stdout)
    port_file: str | None = None
    served_model_name: str | None = None
    default_max_tokens: int = 256      # when a request gives none (capped by the context left)
    max_tokens_limit: int = 4096
    max_n: int = 16
    thinking_budget: int | None = None  # default budget of thinking tokens (None: unlimited)
    max_model_len: int | None = Field(None, ge=2)   # context limit (None: the model's max positions)
    read_timeout_s: float = Field(30.0, gt=0)       # idle connection closed; whole request (headers+body) due within it
    max_body_bytes: int = Field(8 << 20, ge=1024)
    max_waiting: int = Field(64, ge=1)              # queued requests beyond this get 503
    max_batch_requests: int = Field(8, ge=1)        # requests decoded together in one engine batch
    batch_window_s: float = Field(0.01, ge=0)       # an idle scheduler waits this long for more requests


def _num(body: dict, key: str, typ, lo, hi):
    """body[key] as `typ` within [lo, hi], None when absent. The range is checked before the
    conversion: float(10**400) raises OverflowError."""
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            isinstance(v, float) and (not math.isfinite(v) or typ is int and not v.is_integer()):
        raise BadRequest(f"{key} must be {'a finite number' if typ is float else 'an integer'}, got {short(v)}")
    if not lo <= v <= hi:
        raise BadRequest(f"{key} must be in [{lo}, {hi}], got {short(v)}")
    return typ(v)


def _flag(body: dict, key: str) -> bool:
    v = body.get(key)
    if v is not None and not isinstance(v, bool):
        raise BadRequest(f"{key} must be true or false, got {v!r}")
    return bool(v)


def _obj(body: dict, key: str) -> dict:
    v = body.get(key)
    if v is not None and not isinstance(v, dict):
        raise BadRequest(f"{key} must be an object, got {type(v).__name__}")
    return v or {}


def _text(content) -> str:
    """Message content as text: a string, or OpenAI content parts [{"type": "text", "text": ...}]."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise BadRequest("message content must be a string or a list of text parts")


def _depth_ok(obj, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack += [(v, d + 1) for v in o.values()]
        elif isinstance(o, list):
            stack += [(v, d + 1) for v in o]
    return True


def parse_body(raw: bytes) -> dict:
    """The request JSON object; 400 for bad JSON, NaN/Infinity, nesting deeper than MAX_JSON_DEPTH."""
    def no_constant(name):
        raise BadRequest(f"invalid number {name} in request body")
    try:
        body = json.loads(raw or b"{}", parse_constant=no_constant)
    except RecursionError:
        raise BadRequest(f"request body nested deeper than {MAX_JSON_DEPTH} levels") from None
    except BadRequest:
        raise
    except ValueError as e:                  # JSONDecodeError, UnicodeDecodeError, an int over 4300 digits
        raise BadRequest(f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if not _depth_ok(body):
        raise BadRequest(f"request body nested deeper than {MAX_JSON_DEPTH} levels")
    return body


def model_max_len(lm: LM) -> int | None:
    """The context the model was built for: HF config max_position_embeddings, megatron's
    max_sequence_length."""
    m = getattr(lm, "model", None)
    v = getattr(getattr(m, "config", None), "max_position_embeddings", None) or \
        getattr(m, "max_sequence_length", None)
    return int(v) if isinstance(v, int) and v > 0 else None


@dataclass
class Request:
    """A validated chat-completions request."""
    messages: list[dict]
    prompt_ids: list[int]
    n: int
    seed: int | None
    thinking: bool
    schema: dict | None
    sampling: dict                    # overrides of the preset (None = preset value)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(eq=False)                  # hashed by identity (a set of jobs in flight)
class Job:
    """One request in flight: its cancel event and how to tell that its client went away."""
    peer_gone: Callable[[], bool]
    cancel: threading.Event = field(default_factory=threading.Event)

    def abandoned(self) -> bool:
        if not self.cancel.is_set() and self.peer_gone():
            self.cancel.set()
        return self.cancel.is_set()


class ChatService:
    """Turns OpenAI chat-completion requests into batched `RolloutEngine.generate` calls (free
    generation) or `train.generate.chat` calls (constrained JSON), run by the scheduler thread."""

    def __init__(self, lm: LM, tok: Tokenizer, name: str, cfg: ServeConfig):
        self.lm, self.tok, self.name, self.cfg = lm, tok, name, cfg
        self.scheduler = Scheduler(self._run_batch, cfg.max_batch_requests, cfg.max_waiting,
                                   cancelled_result=lambda w: [],
                                   window_s=cfg.batch_window_s if cfg.max_batch_requests > 1 else 0.0)
        self.token_bytes = TokenBytes(tok)
        self.max_len = cfg.max_model_len or model_max_len(lm)
        self.bytes_per_token = max_token_bytes(tok.tk.get_vocab(with_added_tokens=True),
                                               {t.content for t in tok.tk.get_added_tokens_decoder().values()})
        self.stopping = threading.Event()
        self.generated_tokens = 0            # by the engine, over all requests (scheduler thread)
        self.jobs: set[Job] = set()
        self.jobs_lock = threading.Lock()

    def health(self) -> dict:
        return {"status": "ok", "model": self.name, **self.scheduler.stats(),
                "decode_batches": getattr(self.lm.engine, "decode_batches", None),
                "generated_tokens": self.generated_tokens}

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "q3",
                                            "max_model_len": self.max_len}]}

    # ------------------------------------------------------------------ request validation

    def parse(self, body: dict) -> Request:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "tool") for m in msgs):
            raise BadRequest("messages must be a non-empty list of {role, content}")
        messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in msgs]
        limit = self.cfg.max_tokens_limit
        max_tokens = _num(body, "max_completion_tokens", int, 1, limit) or _num(body, "max_tokens", int, 1, limit)
        n = _num(body, "n", int, 1, self.cfg.max_n) or 1
        schema = None
        rf = body.get("response_format")
        if rf is not None:
            kind = rf.get("type") if isinstance(rf, dict) else None
            if kind == "json_schema":
                js = rf.get("json_schema")
                schema = js.get("schema") if isinstance(js, dict) else None
                if not isinstance(schema, dict):
                    raise BadRequest("response_format.json_schema.schema must be an object")
            elif kind == "json_object":
                schema = {"type": "object", "properties": {}}
            elif kind != "text":
                raise BadRequest(f"unsupported response_format type {kind!r}")
        thinking = _obj(body, "chat_template_kwargs").get("enable_thinking")
        if thinking is not None and not isinstance(thinking, bool):
            raise BadRequest("chat_template_kwargs.enable_thinking must be true or false")
        if thinking is None:
            thinking = thinking_mode(messages)
        if schema is not None:
            thinking = False                     # as train.generate.chat: structured answers skip thinking
        sampling = dict(temperature=_num(body, "temperature", float, 0, 2), top_p=_num(body, "top_p", float, 0, 1),
                        top_k=_num(body, "top_k", int, -1, self.tok.vocab_size),
                        presence_penalty=_num(body, "presence_penalty", float, -2, 2),
                        thinking_budget=_num(body, "thinking_budget", int, 0, 2**31) or self.cfg.thinking_budget)
        if sampling["top_k"] == -1:
            sampling["top_k"] = 0                # vLLM convention: -1 disables top-k
        seed = _num(body, "seed", int, -2**63, 2**63 - 1)     # int64, as OpenAI and vLLM take it
        logprobs = _flag(body, "logprobs")
        top = _num(body, "top_logprobs", int, 0, MAX_TOP_LOGPROBS) or 0
        if top and not logprobs:
            raise BadRequest("top_logprobs requires logprobs=true")
        stream = _flag(body, "stream")
        include_usage = bool(_obj(body, "stream_options").get("include_usage"))
        at_least = min_prompt_tokens(messages, self.bytes_per_token)
        if self.max_len is not None and at_least >= self.max_len:    # refused without tokenizing megabytes
            raise BadRequest(f"this model's maximum context length is {self.max_len} tokens; the messages have "
                             f"at least {at_least} tokens")
        prompt_ids = self.tok.encode(self.tok.render(messages, thinking))
        sampling["max_tokens"] = self._check_length(len(prompt_ids), max_tokens)
        if schema is not None:                   # the constrained decoder ignores max_tokens: bound it here
            most = schema_max_tokens(schema, self.tok.encode)
            room = min(self.cfg.max_tokens_limit, self.max_len - len(prompt_ids) if self.max_len else 2**62)
            if most > room:
                raise BadRequest(f"response_format schema allows replies of up to {short(most)} tokens; at most "
                                 f"{room} fit (context {self.max_len}, {len(prompt_ids)} in the messages, "
                                 f"max_tokens_limit {self.cfg.max_tokens_limit})")
        return Request(messages, prompt_ids, n, seed, thinking, schema, sampling, stream, include_usage,
                       logprobs, top)

    def _check_length(self, prompt: int, max_tokens: int | None) -> int:
        """max_tokens to use; 400 (before any work) when the prompt or the request exceeds the context."""
        ctx = self.max_len
        if ctx is None:
            return max_tokens or self.cfg.default_max_tokens
        if prompt >= ctx:
            raise BadRequest(f"this model's maximum context length is {ctx} tokens; the messages have "
                             f"{prompt} tokens (no room to generate)")
        if max_tokens is not None and prompt + max_tokens > ctx:
            raise BadRequest(f"this model's maximum context length is {ctx} tokens; the request asks for "
                             f"{prompt + max_tokens} ({prompt} in the messages, {max_tokens} to generate)")
        return max_tokens or min(self.cfg.default_max_tokens, ctx - prompt)

    # ------------------------------------------------------------------ generation

    @contextmanager
    def job(self, peer_gone: Callable[[], bool] = lambda: False) -> Iterator[Job]:
        """A request's life: registered while it lasts, so that SIGTERM cancels it. Raises
        BadRequest(503) when shutting down."""
        if self.stopping.is_set():
            raise BadRequest("server is shutting down", 503)
        j = Job(peer_gone)
        with self.jobs_lock:
            self.jobs.add(j)
        try:
            yield j
        finally:
            with self.jobs_lock:
                self.jobs.discard(j)

    def stop(self) -> None:
        """Shutting down: refuse new requests, cancel every running or queued one."""
        self.stopping.set()
        with self.jobs_lock:
            for j in self.jobs:
                j.cancel.set()

    def idle(self) -> bool:
        with self.jobs_lock:
            return not self.jobs

    def submit(self, req: Request, job: Job) -> Work:
        """Queue a request for the scheduler; 503 when too many wait or shutting down."""
        if self.stopping.is_set():
            raise BadRequest("server is shutting down", 503)
        seed = req.seed if req.seed is not None else int(time.time_ns() % 2**31)
        params = preset_for(req.thinking).with_(**req.sampling)
        key = None if req.schema is not None else (params.with_(max_tokens=1), req.n, req.top_logprobs)
        try:
            return self.scheduler.submit(Work((req, job, seed, params), key, job.abandoned))
        except Busy as e:
            raise BadRequest(str(e), 503) from None

    def wait(self, work: Work, on_token: Callable[[int, int, float | None, list | None], None] | None = None,
             ) -> list[Completion]:
        """The request's completions ([] if cancelled before it ran); `on_token(choice, token,
        logprob, top_logprobs)` per token as it is produced (logprob None when the generator has
        none), in the calling thread."""
        job = work.payload[1]
        return wait(work, on_token, job.abandoned, lambda: self.scheduler.withdraw(work))

    def generate(self, req: Request, job: Job, on_token: Callable[[int, int, float | None, list | None], None]
                 | None = None) -> list[Completion]:
        return self.wait(self.submit(req, job), on_token)

    # ------------------------------------------------------------------ the scheduler thread

    def _run_batch(self, works: list[Work]) -> None:
        """Run by the scheduler thread, the only one using the model."""
        req = works[0].payload[0]
        if req.schema is not None:
            assert len(works) == 1
            self._run_json(works[0])
            return
        n, top = req.n, req.top_logprobs
        reqs = [w.payload[0] for w in works]

        def on_progress(choice: int, r: Rollout) -> None:
            self.generated_tokens += 1
            if r.finish_reason != "stop":            # the stop token is not part of a Completion
                works[choice // n].token(choice % n, r.token_ids[-1], r.logprobs[-1],
                                         r.top_logprobs[-1] if r.top_logprobs is not None else None)

        params = works[0].payload[3]
        rollouts = self.lm.engine.generate(
            [q.prompt_ids for q in reqs], params, n=n, top_logprobs=top, on_progress=on_progress,
            seeds=[w.payload[2] for w in works], max_tokens=[w.payload[3].max_tokens for w in works],
            cancel=lambda pi: works[pi].cancelled())
        for w, rs in zip(works, rollouts, strict=True):
            w.finish([completion(self.tok, r) for r in rs])

    def _run_json(self, w: Work) -> None:
        req, job, seed, _ = w.payload
        emit = None if req.logprobs else (lambda i, t: w.token(i, t, None, None))
        try:
            outs = chat(_Cancellable(self.lm, job.abandoned), self.tok, req.messages, n=req.n, seed=seed,
                        thinking=req.thinking, json_schema=req.schema, on_token=emit, cancel=job.cancel,
                        **req.sampling)
        except SchemaError as e:
            raise BadRequest(str(e)) from None
        except _Cancelled:
            w.finish([])
            return
        if req.logprobs and not job.abandoned():     # the constrained decoder records no logprobs
            for i, o in enumerate(outs):
                o.logprobs, o.top_logprobs = self._score(req.prompt_ids, o.token_ids, req.top_logprobs)
                for j, t in enumerate(o.token_ids):
                    w.token(i, t, o.logprobs[j], o.top_logprobs[j] if o.top_logprobs else None)
        w.finish(outs)

    def logprob_entries(self, req: Request, o: Completion) -> list[dict]:
        lps, tops = o.logprobs, o.top_logprobs       # constrained output: scored by _run_json
        if lps is None:
            raise RuntimeError("completion without logprobs")
        return [logprob_entry(self.token_bytes, t, lp, tops[j][:req.top_logprobs] if tops else None)
                for j, (t, lp) in enumerate(zip(o.token_ids, lps, strict=True))]

    def _score(self, prompt: list[int], ids: list[int], k: int) -> tuple[list[float], list | None]:
        """Log-probabilities (T=1) of given tokens, one forward per token (generators that do not
        record them, e.g. the constrained JSON decoder). Scheduler thread only (it uses the model)."""
        lps, tops = [], []
        for j, t in enumerate(ids):
            lp = torch.log_softmax(self.lm.next_logits(prompt + ids[:j])[: self.tok.vocab_size].float(), -1)
            lps.append(float(lp[t]))
            if k:
                v, i = lp.topk(k)
                tops.append(list(zip(i.tolist(), v.tolist(), strict=True)))
        return lps, tops if k else None

    def split(self, req: Request, o: Completion) -> tuple[str | None, str]:
        """(reasoning, content) exactly as the stream delivers them."""
        text, sp = TokenText(self.token_bytes), ReasoningSplit(self.in_think(req))
        for t in o.token_ids:
            sp.feed(text.push(t))
        sp.feed(text.finish())
        sp.finish()
        return sp.reasoning, sp.content

    def in_think(self, req: Request) -> bool:
        return bool(req.prompt_ids) and req.prompt_ids[-1] == THINK_ID and req.schema is None

    def usage(self, req: Request, outs: list[Completion]) -> dict:
        completion = sum(len(o.token_ids) for o in outs)
        prompt = outs[0].prompt_tokens if outs else len(req.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def complete(self, body: dict, peer_gone: Callable[[], bool] = lambda: False) -> dict | None:
        """The non-streamed reply; None when the client left (nobody to answer)."""
        req = self.parse(body)
        with self.job(peer_gone) as job:
            outs = self.generate(req, job)
            done = not job.cancel.is_set() and len(outs) == req.n
            lps = [{"content": self.logprob_entries(req, o)} for o in outs] if done and req.logprobs else None
        if not done:
            if self.stopping.is_set():
                raise BadRequest("server is shutting down", 503)
            return None
        choices = []
        for i, o in enumerate(outs):
            reasoning, content = self.split(req, o)
            msg = {"role": "assistant", "content": content}
            if reasoning is not None:
                msg["reasoning_content"] = reasoning
            choices.append({"index": i, "message": msg, "finish_reason": o.finish_reason,
                            "logprobs": lps[i] if lps else None})
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": self.name, "choices": choices,
                "usage": self.usage(req, outs)}


class _Cancelled(Exception):
    pass


class _Cancellable:
    """The LM as the constrained JSON decoder sees it: `next_logits` (one forward per token) raises
    once the request is abandoned, so that decoder, which has no cancellation of its own, stops
    within a token."""

    def __init__(self, lm: LM, abandoned: Callable[[], bool]):
        self._lm, self._abandoned = lm, abandoned

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def next_logits(self, ids: list[int]) -> torch.Tensor:
        if self._abandoned():
            raise _Cancelled
        return self._lm.next_logits(ids)


class ChoiceStream:
    """Chunks of one streamed choice: text deltas (reasoning/content), logprob entries."""

    def __init__(self, service: ChatService, req: Request, index: int):
        self.index = index
        self.text = TokenText(service.token_bytes)
        self.split = ReasoningSplit(service.in_think(req))
        self.pending: list[dict] = []            # logprob entries of tokens whose text is held back

    def push(self, token_id: int, entry: dict | None = None) -> list[dict]:
        if entry is not None:
            self.pending.append(entry)
        return self._deltas(self.split.feed(self.text.push(token_id)))

    def finish(self, finish_reason: str) -> list[dict]:
        deltas = self._deltas(self.split.feed(self.text.finish()) + self.split.finish())
        last = {"index": self.index, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
        if self.pending:
            last["logprobs"] = {"content": self.pending}
        return deltas + [last]

    def _deltas(self, parts: list[tuple[str, str]]) -> list[dict]:
        out = []
        for field_name, text in parts:
            ch = {"index": self.index, "delta": {field_name: text}, "logprobs": None, "finish_reason": None}
            if self.pending:
                ch["logprobs"], self.pending = {"content": self.pending}, []
            out.append(ch)
        return out


class ClientGone(Exception):
    pass


def make_handler(service: ChatService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = service.cfg.read_timeout_s        # socket timeout: a silent client cannot pin a thread

        def log_message(self, fmt, *args):          # route access logs through our logger
            log.debug("%s " + fmt, self.address_string(), *args)

        def setup(self):
            super().setup()
            self.rfile.close()                      # the socket is read through a deadline instead
            self.reader = DeadlineReader(self.connection, self.timeout, self.timeout)
            self.rfile = io.BufferedReader(self.reader)

        def handle(self):
            try:
                super().handle()
            except (ConnectionResetError, BrokenPipeError):   # a client reset a kept-alive connection
                self.close_connection = True

        def handle_one_request(self):
            self.reader.start()                     # each request gets read_timeout_s from its first byte
            super().handle_one_request()

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, typ: str = "invalid_request_error") -> None:
            self._send(code, {"error": {"message": message, "type": typ, "code": code}})

        def _peer_gone(self) -> bool:
            """True once the client closed its end (readable with nothing to read)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except (OSError, ValueError):
                return True

        def do_GET(self):
            path = self.path.split("?")[0].rstrip("/")
            if path == "/health":
                self._send(200, service.health())
            elif path == "/v1/models":
                self._send(200, service.models())
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self.close_connection = True
                raise BadRequest("chunked request bodies are not supported; send Content-Length", 411)
            values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
            text = values.pop() if len(values) == 1 else None
            if values or text is not None and not (text.isascii() and text.isdigit()):
                self.close_connection = True        # int() would take "+5", "1_0"; two lengths: smuggling
                raise BadRequest(f"invalid Content-Length {short(self.headers.get_all('Content-Length'))}")
            length = int(text or 0)
            if length > service.cfg.max_body_bytes:
                self.close_connection = True
                raise BadRequest(f"request body of {length} bytes exceeds {service.cfg.max_body_bytes}", 413)
            chunks, got = [], 0
            try:
                while got < length:
                    chunk = self.rfile.read1(min(length - got, 1 << 16))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
            except (TimeoutError, OSError):         # idle too long, or past the request's deadline
                pass
            raw = b"".join(chunks)
            if len(raw) < length:
                self.close_connection = True
                raise BadRequest(f"request body shorter than Content-Length {length} "
                                 f"(got {len(raw)} bytes within {service.cfg.read_timeout_s:g}s)", 408)
            return raw

        def do_POST(self):
            path = self.path.split("?")[0].rstrip("/")
            try:
                raw = self._read_body()
                if path != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}", "not_found")
                    return
                body = parse_body(raw)
                if body.get("stream") is True:
                    self._stream(service.parse(body))
                    return
                reply = service.complete(body, self._peer_gone)
                if reply is None:                   # the client left: nobody to answer
                    self.close_connection = True
                    return
                self._send(200, reply)
            except BadRequest as e:
                self.close_connection = self.close_connection or service.stopping.is_set()
                self._error(e.code, str(e), "invalid_request_error" if e.code < 500 else "server_error")
            except (ClientGone, BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as e:                  # keep serving; report the failure to the client
                log.exception("request failed")
                self._error(500, f"{type(e).__name__}: {e}", "server_error")

        # -------------------------------------------------------------- server-sent events

        def _chunk(self, data: bytes) -> None:
            """One chunk of a chunked body; b"" ends the body. HTTP/1.0: raw bytes, closed at the end."""
            try:
                if self.request_version != "HTTP/1.1":
                    self.wfile.write(data)
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            except (OSError, ValueError):
                raise ClientGone from None

        def _event(self, obj) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
            self._chunk(f"data: {data}\n\n".encode())

        def _stream(self, req: Request) -> None:
            """OpenAI chat.completion.chunk events, token by token as the scheduler produces them
            (logprobs included). A failed write or a closed socket cancels the work."""
            with service.job(self._peer_gone) as job:
                work = service.submit(req, job)     # 503 (busy, shutting down) before any header
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                if self.request_version == "HTTP/1.1":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.close_connection = True
                    self.send_header("Connection", "close")
                self.end_headers()
                cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
                usage_field = {"usage": None} if req.include_usage else {}

                def send(choices: list[dict], **extra) -> None:
                    self._event({"id": cid, "object": "chat.completion.chunk", "created": created,
                                 "model": service.name, "choices": choices, **usage_field, **extra})

                streams = [ChoiceStream(service, req, i) for i in range(req.n)]
                for i in range(req.n):
                    send([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                           "finish_reason": None}])

                def on_token(i: int, t: int, lp: float | None, top: list | None) -> None:
                    if job.cancel.is_set():
                        return
                    entry = None
                    if req.logprobs:
                        entry = logprob_entry(service.token_bytes, t, lp, top[:req.top_logprobs] if top else None)
                    try:
                        for ch in streams[i].push(t, entry):
                            send([ch])
                    except ClientGone:
                        job.cancel.set()

                try:
                    outs = service.wait(work, on_token)
                except Exception as e:              # headers are out: report in the stream, as OpenAI does
                    if not isinstance(e, BadRequest):
                        log.exception("streamed request failed")
                    self._event({"error": {"message": str(e), "type": "invalid_request_error"
                                           if isinstance(e, BadRequest) else "server_error"}})
                    outs = None
                if outs is not None and not job.cancel.is_set() and len(outs) == req.n:
                    for i, o in enumerate(outs):
                        for ch in streams[i].finish(o.finish_reason):
                            send([ch])
                    if req.include_usage:
                        self._event({"id": cid, "object": "chat.completion.chunk", "created": created,
                                     "model": service.name, "choices": [], "usage": service.usage(req, outs)})
                    self._event("[DONE]")
                # cancelled (client gone, or shutdown): end the body without [DONE] and close
                self.close_connection = self.close_connection or job.cancel.is_set()
                self._chunk(b"")

    return Handler


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    return server


def main(config: str | None, overrides: list[str]) -> NoReturn:
    """q3 serve load=DIR [port=8000|0] [port_file=FILE] [host=127.0.0.1] [served_model_name=NAME]
    Runs until SIGTERM or Ctrl-C, then exits the process with status 0."""
    cfg = load_config(ServeConfig, "serve", config, overrides)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))     # stopped while loading: nothing to clean up
    lm, tok, name = load_lm(cfg.load, cfg.model)
    service = ChatService(lm, tok, cfg.served_model_name or name, cfg)
    server = make_server(service, cfg.host, cfg.port)
    host, port = server.server_address[:2]

    def _stop(*_):                              # SIGTERM: cancel running work, stop accepting, exit 0
        if service.stopping.is_set():           # a second SIGTERM: no more waiting
            _hard_exit("second SIGTERM")
        # a watchdog, so that SIGTERM always ends the process even if the orderly path below hangs
        # (a CI run once saw the process alive 120 s after SIGTERM, cause not found)
        watchdog = threading.Timer(STOP_TIMEOUT_S + 5, _hard_exit, args=("shutdown took too long",))
        watchdog.daemon = True
        watchdog.start()
        service.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    if cfg.port_file:
        tmp = Path(cfg.port_file).with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(cfg.port_file)              # atomic: readers never see a partial file
    print(f"q3 serve: model {service.name} at http://{host}:{port}/v1 (stop with SIGTERM or Ctrl-C)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S   # cancelled generations end within a token
        while not service.idle() and time.monotonic() < deadline:
            time.sleep(0.05)                    # handlers answer 503 / end their streams
        stopped = service.scheduler.close(max(0.0, deadline - time.monotonic()))
        server.server_close()
    if not stopped:
        log.warning("a generation did not stop within %gs of SIGTERM; exiting anyway", STOP_TIMEOUT_S)
    # Exit without finalizing the interpreter: its teardown of torch/transformers' modules (one
    # garbage collection over millions of objects) took 5-47 s on a loaded 2-core VM after the
    # server had stopped, and a thread still inside a forward makes it abort (exit 134). Nothing
    # is left to write but the logs.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _hard_exit(why: str) -> None:
    """Exit 0 now, bypassing locks a stuck thread may hold (no logging: its lock may be one)."""
    os.write(2, f"q3 serve: {why}; exiting now\n".encode())
    os._exit(0)


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
        err_file = Path(d) / "stderr"
        with open(err_file, "w") as err:       # a file: a pipe nobody drains could fill and block the server
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + startup_timeout
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"q3 serve exited with {proc.returncode}: {err_file.read_text()[-2000:]}")
                if time.time() > deadline:
                    raise TimeoutError(f"q3 serve did not start within {startup_timeout}s")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        finally:
            stop(proc)
