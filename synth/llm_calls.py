"""The one place in synth/ that talks to q3.llm (the project's single OpenAI-compatible client).

Requests are plain dicts {messages, params, schema?}; results are plain dicts so engine rows and
cold-start records can be built without importing the client elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from q3.config import ConfigError
from q3.llm import ChatRequest, EndpointConfig, LLMClient, LLMConfigError, Result

__all__ = ["EndpointConfig", "EndpointUnavailable", "ask_sync", "run_cli_job", "to_dict"]


class EndpointUnavailable(RuntimeError):
    """Requests still failing after the client's retries: the run stops without committing its work."""

# one line per HTTP request at INFO drowns the progress of long runs; retries and errors still show
logging.getLogger("httpx").setLevel(logging.WARNING)


def to_dict(r: Result) -> dict[str, Any]:
    """{text, data, reasoning, error, finish_reason, prompt_tokens, completion_tokens, cached, key}."""
    return {"text": r.text, "data": r.data, "reasoning": getattr(r, "reasoning", None), "error": r.error,
            "finish_reason": r.finish_reason, "prompt_tokens": r.usage.get("prompt_tokens", 0),
            "completion_tokens": r.usage.get("completion_tokens", 0), "cached": r.cached, "key": r.key}


def ask_sync(ep: EndpointConfig, cache_dir: Path, requests: list[dict[str, Any]],
             stats: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Send `requests` (at most ep.concurrency in flight, retries, on-disk cache) and return one result
    dict per request, in order. A request that fails for good comes back with `error` set (the
    caller keeps it as a rejected row); endpoint misconfiguration raises LLMConfigError. `stats`,
    if given, receives the client's counters (q3.llm.Stats: retries, malformed, duplicate_sends, ...)."""
    if not requests:
        return []
    cfg = ep if ep.cache_dir else ep.model_copy(update={"cache_dir": str(cache_dir)})
    reqs = [ChatRequest(messages=r["messages"], params=dict(r.get("params") or {}), schema=r.get("schema"),
                        schema_name=r.get("schema_name", "output")) for r in requests]
    client = LLMClient(cfg)
    try:
        return [to_dict(r) for r in asyncio.run(client.acomplete_many(reqs))]
    finally:
        if stats is not None:
            stats.update(client.stats.as_dict())


def run_cli_job(job: Callable[[], dict[str, Any]], log: logging.Logger) -> dict[str, Any] | None:
    """Run a synth command's job for its CLI: a missing file or bad endpoint setting becomes a
    ConfigError (the CLI prints what to fix, no traceback); an unreachable endpoint is logged and
    gives None (the CLI exits 1)."""
    try:
        return job()
    except (FileNotFoundError, LLMConfigError) as e:
        raise ConfigError(str(e)) from None
    except EndpointUnavailable as e:
        log.error("%s", e)
        return None
