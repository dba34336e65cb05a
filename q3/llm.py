"""The one client for OpenAI-compatible chat-completions endpoints (vLLM, SGLang, hosted APIs).

Used by labeling (LLM judge), synth (generators) and post-training (reward models, teachers):

    cfg = EndpointConfig(base_url="http://127.0.0.1:8000/v1", model="q3-tiny", cache_dir="data/llm_cache")
    results = complete_many(cfg, [ChatRequest.user("Say hi"), ChatRequest.user("Rate this", schema=S)])
    for r in results:
        print(r.ok, r.text, r.data, r.error, r.usage)

What it guarantees (tests/q3/test_llm.py drives it against a real faulty HTTP server):
- at most `concurrency` requests in flight; a total per-attempt deadline of `timeout_s`;
- retries with exponential backoff + jitter on 429 (honouring Retry-After, but never waiting
  longer than `backoff_max_s`), 5xx, timeouts, connection errors and malformed bodies; never on
  auth/model errors, which raise at once with a message saying what to fix (`LLMConfigError`);
- a 200 whose body is not a chat/completions response of the expected shape (not JSON, no
  choices, `choices: ["x"]`, `usage: [1, 2]`, ...) is malformed: retried like a 5xx, counted in
  `Stats.malformed`, and never cached (a cached entry of the wrong shape is a miss), so a rerun
  asks the server again instead of failing the same way;
- one bad request never costs the batch: anything unexpected while handling it becomes that
  request's `Result.error` (`client_error: ...`);
- other per-request failures (4xx such as context too long, retries exhausted, output that does
  not parse or does not match the JSON schema, refusals) come back as a `Result` with `error` set,
  never as an exception, so callers keep the row with a reason;
- an on-disk cache keyed by sha256 of the canonical request (model + messages + params + schema):
  one file per key, written atomically after a successful response, so a rerun sends nothing and a
  request that once succeeded is never sent again;
- token and cost accounting from the responses' `usage` and the configured prices; `Stats` counts
  what happened on the wire (see its field comments), including `duplicate_sends`: resends of a
  request whose previous attempt may already have been processed by the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from pydantic import Field

from q3.config import Q3Config
from q3.log import Progress, get_logger

logging.getLogger("httpx").setLevel(logging.WARNING)   # one INFO line per request drowns progress
log = get_logger("q3.llm")

# ----------------------------------------------------------------------------------------- config


class EndpointConfig(Q3Config):
    """Where and how to call a model. Every field can be set from YAML or `key=value` overrides."""

    base_url: str | None = None          # e.g. http://127.0.0.1:8000/v1; None: env Q3_LLM_BASE_URL
    model: str = ""                      # served model name; "" = env Q3_LLM_MODEL
    api_key_env: str | None = "OPENAI_API_KEY"   # name of the env var holding the key (never the key)
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0)          # total deadline of one attempt
    max_retries: int = Field(5, ge=0)             # retries after the first attempt
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)     # longest wait between attempts, Retry-After included
    cache_dir: str | None = None         # None: no cache
    cache_namespace: str = ""            # part of the key: bump it to force fresh answers
    price_prompt_per_1k: float = 0.0     # currency units per 1,000 prompt tokens
    price_completion_per_1k: float = 0.0
    default_params: dict[str, Any] = Field(default_factory=dict)  # e.g. temperature, max_tokens

    def resolved_base_url(self) -> str | None:
        url = self.base_url or os.environ.get("Q3_LLM_BASE_URL")
        return url.rstrip("/") if url else None

    def resolved_model(self) -> str:
        return self.model or os.environ.get("Q3_LLM_MODEL", "")


class LLMConfigError(RuntimeError):
    """The endpoint cannot serve any request as configured (no endpoint, bad model, bad key)."""


class LLMAuthError(LLMConfigError):
    pass


class LLMModelError(LLMConfigError):
    pass


# -------------------------------------------------------------------------------- request/result


@dataclass
class ChatRequest:
    """One chat completion. `params` go into the body (temperature, max_tokens, seed, ...).

    `schema` (a JSON schema) asks for structured output via response_format json_schema; the
    returned text is then parsed and validated. `meta` travels to the Result, not to the server.
    """

    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    schema_name: str = "output"
    meta: dict[str, Any] = field(default_factory=dict)
    prompt: list[int] | str | None = None   # set: a raw /completions request (messages unused)

    @classmethod
    def user(cls, prompt: str, system: str | None = None, **kw: Any) -> ChatRequest:
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        return cls(messages=msgs, **kw)


@dataclass
class Result:
    key: str
    text: str | None = None
    data: Any = None                     # parsed + validated JSON when the request had a schema
    error: str | None = None             # None = ok; else a short reason ("invalid_json: ...")
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    cached: bool = False
    attempts: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    choice: dict[str, Any] = field(default_factory=dict)   # the raw first choice (logprobs, ...)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Stats:
    requests: int = 0        # logical requests handled
    sent: int = 0            # HTTP attempts made
    retries: int = 0         # attempts after the first one of a request (any retryable failure)
    malformed: int = 0       # HTTP 200 answers whose body was not a usable response (retried, not cached)
    duplicate_sends: int = 0  # resends after an attempt whose outcome is unknown (client-side timeout,
    #                           connection lost after sending): the server may have done (and billed) it twice
    cache_hits: int = 0
    errors: int = 0          # requests that ended with Result.error set
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0        # of responses fetched in this run (cache hits cost nothing)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------------------------- the client


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class LLMClient:
    """Async client; one instance may serve many `acomplete_many` calls (stats accumulate)."""

    progress_interval_s = 10.0       # a progress line this often in log files (a bar on a terminal)

    def __init__(self, cfg: EndpointConfig):
        self.cfg = cfg
        self.stats = Stats()
        self.cache = DiskCache(cfg.cache_dir) if cfg.cache_dir else None

    # -- request building
    def body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.resolved_model()}
        if req.prompt is not None:
            body["prompt"] = req.prompt
        else:
            body["messages"] = req.messages
        body.update(self.cfg.default_params)
        body.update(req.params)
        if req.schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": req.schema_name, "schema": req.schema, "strict": True}}
        return body

    def key(self, body: dict[str, Any]) -> str:
        return hashlib.sha256(canonical_json({"ns": self.cfg.cache_namespace, "body": body}).encode()).hexdigest()

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _require_endpoint(self) -> str:
        url = self.cfg.resolved_base_url()
        if not url:
            raise LLMConfigError("no LLM endpoint configured: set endpoint.base_url (e.g. "
                                 "http://127.0.0.1:8000/v1) or the env var Q3_LLM_BASE_URL")
        if not self.cfg.resolved_model():
            raise LLMConfigError("no model name configured: set endpoint.model or Q3_LLM_MODEL "
                                 f"(the server lists its models at {url}/models)")
        return url

    # -- public API
    async def acomplete_many(self, reqs: Sequence[ChatRequest]) -> list[Result]:
        sem = asyncio.Semaphore(self.cfg.concurrency)
        limits = httpx.Limits(max_connections=self.cfg.concurrency,
                              max_keepalive_connections=self.cfg.concurrency)
        # identical requests in one batch are sent once and share the answer
        first: dict[str, int] = {}
        for i, r in enumerate(reqs):
            first.setdefault(self.key(self.body(r)), i)
        # a long batch (the labeling judge, the demo's synth step: minutes) logs done/total and the
        # rate every progress_interval_s; a batch done sooner (one small synth shard) logs nothing
        prog = Progress(f"LLM requests to {self.cfg.resolved_model() or 'endpoint'}", len(first), "req",
                        interval=self.progress_interval_s, log=log, pct_step=None, quiet_s=self.progress_interval_s)

        async def one(req: ChatRequest) -> Result:
            try:
                return await self._one(http, sem, req)
            finally:
                prog.update()

        async with httpx.AsyncClient(limits=limits, timeout=self.cfg.timeout_s, headers=self._headers()) as http:
            try:
                async with asyncio.TaskGroup() as tg:   # a config error in one cancels the rest
                    tasks = {k: tg.create_task(one(reqs[i])) for k, i in first.items()}
            except BaseExceptionGroup as eg:           # surface the first real error, not the group
                raise eg.exceptions[0] from None
            finally:
                prog.close()
        out = []
        for r in reqs:
            res = tasks[self.key(self.body(r))].result()
            out.append(res if res.meta is r.meta else dataclasses.replace(res, meta=r.meta))
        return out

    def complete_many(self, reqs: Sequence[ChatRequest]) -> list[Result]:
        """Sync wrapper; results in the order of `reqs`."""
        return asyncio.run(self.acomplete_many(reqs))

    def list_models(self) -> list[str]:
        url = self._require_endpoint()
        r = httpx.get(f"{url}/models", headers=self._headers(), timeout=self.cfg.timeout_s)
        if r.status_code in (401, 403):
            raise LLMAuthError(self._auth_msg(url, r.status_code))
        r.raise_for_status()
        return [m.get("id", "") for m in r.json().get("data", [])]

    # -- one logical request
    async def _one(self, http: httpx.AsyncClient, sem: asyncio.Semaphore, req: ChatRequest) -> Result:
        body = self.body(req)
        key = self.key(body)
        self.stats.requests += 1
        try:
            return await self._attempts(http, sem, req, body, key)
        except (LLMConfigError, asyncio.CancelledError):
            raise                     # no request can succeed / the batch is being torn down
        except Exception as e:        # a bug or a peer we did not foresee: fail this request only
            log.warning("request %s failed in the client: %s: %s", key[:12], type(e).__name__, e)
            self.stats.errors += 1
            return Result(key=key, error=f"client_error: {type(e).__name__}: {str(e)[:200]}", meta=req.meta)

    async def _attempts(self, http: httpx.AsyncClient, sem: asyncio.Semaphore, req: ChatRequest,
                        body: dict[str, Any], key: str) -> Result:
        completions = req.prompt is not None
        if self.cache is not None:
            raw = self.cache.get(key)
            # an entry of the wrong shape (written by an older client) is a miss: ask again, overwrite it
            if raw is not None and response_problem(raw, completions) is None:
                self.stats.cache_hits += 1
                return self._result(key, raw, req, attempts=0, cached=True)
        url = self._require_endpoint() + ("/completions" if completions else "/chat/completions")
        last = "no attempt"
        unknown_outcome = False      # the previous attempt may have reached the server and run there
        for attempt in range(self.cfg.max_retries + 1):
            retry_after: float | None = None
            async with sem:
                self.stats.sent += 1
                if unknown_outcome:
                    self.stats.duplicate_sends += 1
                unknown_outcome = False
                try:
                    async with asyncio.timeout(self.cfg.timeout_s):
                        resp = await http.post(url, content=canonical_json(body).encode())
                        content = resp.content
                except (TimeoutError, httpx.TimeoutException) as e:
                    last = f"timeout after {self.cfg.timeout_s}s ({type(e).__name__})"
                    resp = None
                    unknown_outcome = not isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout)
                except httpx.TransportError as e:   # connect errors, drops mid-response
                    last = f"connection error: {type(e).__name__}: {e}"
                    resp = None
                    unknown_outcome = not isinstance(e, httpx.ConnectError)
            if resp is not None:
                status = resp.status_code
                if status == 200:
                    try:
                        raw = json.loads(content)
                    except ValueError as e:
                        raw, problem = None, f"not JSON: {e}"
                    else:
                        problem = response_problem(raw, completions)
                    if problem is not None:      # retryable, and never cached
                        self.stats.malformed += 1
                        last = f"malformed response body: {problem}"
                        log.warning("malformed response (attempt %d) for %s: %s", attempt + 1, key[:12], problem)
                    else:
                        res = self._result(key, raw, req, attempts=attempt + 1, cached=False)
                        if self.cache is not None:   # only after the answer was read without fault
                            self.cache.put(key, raw)
                        return res
                elif status in (401, 403):
                    raise LLMAuthError(self._auth_msg(url, status))
                elif status == 429 or status >= 500:
                    last = f"http {status}: {_err_text(content)}"
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                else:
                    msg = _err_text(content)
                    if status == 404 or (status == 400 and "model" in msg.lower() and "exist" in msg.lower()):
                        await self._check_model(http, msg)
                    self.stats.errors += 1
                    return Result(key=key, error=f"http_{status}: {msg}", attempts=attempt + 1, meta=req.meta)
            if attempt < self.cfg.max_retries:
                self.stats.retries += 1
                delay = self.cfg.backoff_base_s * 2 ** attempt
                delay *= 0.5 + random.random()          # jitter: desynchronise many clients
                if retry_after is not None:
                    delay = max(delay, retry_after)
                # a server asking for an hour (Retry-After: 3600) must not stall a batch beyond the
                # user's cap; if it is still overloaded, the retries run out and the result says so
                await asyncio.sleep(min(delay, self.cfg.backoff_max_s))
        self.stats.errors += 1
        return Result(key=key, error=f"gave_up after {self.cfg.max_retries + 1} attempts: {last}",
                      attempts=self.cfg.max_retries + 1, meta=req.meta)

    async def _check_model(self, http: httpx.AsyncClient, msg: str) -> None:
        """A 404 usually means a wrong model name: say which models the server has."""
        url = self._require_endpoint()
        try:
            r = await http.get(f"{url}/models")
            models = [m.get("id", "") for m in r.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        model = self.cfg.resolved_model()
        if model not in models:
            raise LLMModelError(f"model {model!r} is not served by {url} ({msg}); "
                                f"available models: {', '.join(models) or '(none)'}")

    def _auth_msg(self, url: str, status: int) -> str:
        env = self.cfg.api_key_env
        have = bool(env and os.environ.get(env))
        return (f"authentication failed (HTTP {status}) at {url}: "
                + (f"the key in ${env} was rejected" if have else
                   f"no API key sent; put it in the env var ${env or 'OPENAI_API_KEY'} (endpoint.api_key_env)"))

    def _result(self, key: str, raw: dict[str, Any], req: ChatRequest, attempts: int, cached: bool) -> Result:
        choice = raw["choices"][0] if raw.get("choices") else {}
        msg = choice.get("message") or {}
        text = msg.get("content") if req.prompt is None else choice.get("text")
        usage = {k: int(v) for k, v in (raw.get("usage") or {}).items()
                 if isinstance(v, int | float) and math.isfinite(v)}   # json.loads accepts NaN/Infinity
        res = Result(key=key, text=text, finish_reason=choice.get("finish_reason"), usage=usage,
                     cached=cached, attempts=attempts, meta=req.meta, choice=choice)
        if not cached:
            res.cost = (usage.get("prompt_tokens", 0) * self.cfg.price_prompt_per_1k
                        + usage.get("completion_tokens", 0) * self.cfg.price_completion_per_1k) / 1000
            self.stats.cost += res.cost
        self.stats.prompt_tokens += usage.get("prompt_tokens", 0)
        self.stats.completion_tokens += usage.get("completion_tokens", 0)
        if msg.get("refusal"):
            res.error = f"refused: {str(msg['refusal'])[:200]}"
        elif text is None:
            res.error = "empty: no content in response"
        elif req.schema is not None:
            res.data, res.error = parse_structured(text, req.schema)
        if res.error:
            self.stats.errors += 1
        return res


def response_problem(raw: Any, completions: bool = False) -> str | None:
    """Why a decoded 200 body is not a usable (chat) completions response; None when it is.
    Checks exactly what `_result` reads, so a body that passes cannot crash it."""
    if not isinstance(raw, dict):
        return f"body is a JSON {type(raw).__name__}, not an object"
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices" if not choices else f"choices is a {type(choices).__name__}, not a list"
    c = choices[0]
    if not isinstance(c, dict):
        return f"choices[0] is a {type(c).__name__}, not an object"
    if completions:
        if not isinstance(c.get("text"), str):
            return "choices[0].text is not a string"
    else:
        msg = c.get("message")
        if not isinstance(msg, dict):
            return "choices[0].message is not an object"
        for k in ("content", "refusal"):
            if not isinstance(msg.get(k), str | None):
                return f"choices[0].message.{k} is a {type(msg.get(k)).__name__}, not a string"
    if not isinstance(c.get("finish_reason"), str | None):
        return "choices[0].finish_reason is not a string"
    usage = raw.get("usage")
    if not isinstance(usage, dict | None):
        return f"usage is a {type(usage).__name__}, not an object"
    return None


def complete_many(cfg: EndpointConfig, reqs: Sequence[ChatRequest]) -> list[Result]:
    """Convenience: one client, one batch, results in order."""
    return LLMClient(cfg).complete_many(reqs)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _err_text(content: bytes) -> str:
    try:
        j = json.loads(content)
        err = j.get("error", j) if isinstance(j, dict) else j
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    except ValueError:
        return content[:300].decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------- cache


class DiskCache:
    """One JSON file per key under `root/ab/<key>.json`; writes are tmp + rename (atomic)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:          # cannot happen with atomic writes; treat as a miss
            return None

    def put(self, key: str, raw: dict[str, Any]) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)


# ------------------------------------------------------------------------- structured outputs

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """Parse JSON from a model answer: bare, fenced in ```json, or the first {...} in the text."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    m = _FENCE.search(text)
    if m:
        try:
            return json.loads(m.group(1))
        except ValueError:
            pass
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            return obj
        except ValueError:
            start = text.find("{", start + 1)
    raise ValueError("no JSON object found")


def parse_structured(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(data, None) when `text` holds JSON valid under `schema`, else (None, reason)."""
    try:
        data = extract_json(text)
    except ValueError as e:
        return None, f"invalid_json: {e}; got {text[:120]!r}"
    problems = validate_schema(data, schema)
    if problems:
        return None, "schema_mismatch: " + "; ".join(problems[:5])
    return data, None


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def validate_schema(data: Any, schema: dict[str, Any]) -> list[str]:
    """Problems of `data` under the JSON `schema` (empty = valid), each `$.path: what`, by the
    `jsonschema` library (draft 2020-12: an integral float such as 3.0 is an integer, a bool is not)."""
    errors = _validator(canonical_json(schema)).iter_errors(data)
    # a message quotes the offending value: keep it short (a model may answer a whole document)
    return [f"{e.json_path}: {e.message[:200]}" for e in sorted(errors, key=lambda e: e.json_path)]
