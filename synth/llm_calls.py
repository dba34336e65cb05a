"""The one place in synth/ that talks to q3.llm (the project's single OpenAI-compatible client)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from q3.config import Q3Config


class EndpointConfig(Q3Config):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "q3-tiny"
    api_key_env: str = "OPENAI_API_KEY"   # read from the environment, never stored in configs
    concurrency: int = Field(8, ge=1)
    timeout_s: float = 120.0
    max_retries: int = 4
    cache_dir: str = ""                   # default: <output>/cache


def make_client(ep: EndpointConfig, cache_dir: Path):
    from q3.llm import LLMClient

    return LLMClient(base_url=ep.base_url, api_key=os.environ.get(ep.api_key_env) or None,
                     concurrency=ep.concurrency, timeout_s=ep.timeout_s, max_retries=ep.max_retries,
                     cache_dir=str(cache_dir))


async def ask_all(client, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per body, in order: {text, reasoning, finish_reason, prompt_tokens, completion_tokens,
    cached, key, error}. A request that still fails after the client's retries gives `error` (the
    caller rejects that row with the reason) instead of failing the whole batch."""
    from q3.llm import LLMError

    async def one(body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await client.chat(**body)
        except LLMError as e:
            return {"text": None, "error": f"{type(e).__name__}: {e}"[:500], "key": None}
        return {"text": r.text, "reasoning": getattr(r, "reasoning", None), "finish_reason": r.finish_reason,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "cached": r.cached, "key": r.key, "error": None}

    return await asyncio.gather(*(one(b) for b in bodies))


def ask_sync(ep: EndpointConfig, cache_dir: Path, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        client = make_client(ep, cache_dir)
        try:
            return await ask_all(client, bodies)
        finally:
            await client.aclose()

    return asyncio.run(run()) if bodies else []
