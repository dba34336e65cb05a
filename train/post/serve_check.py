"""Ask a served model (`q3 serve`, vLLM, any OpenAI-compatible endpoint) held-out RL pairs through
the official `openai` client and score the replies with synth's verifiers.

    python -m train.post.serve_check base_url=http://127.0.0.1:8000/v1 model=q3-tiny \
        pairs=data/post/eval_pairs.jsonl [compare=runs/demo/post-eval/eval.json] [out=DIR]

The requests are the ones `q3 post eval` makes in-process (the query + " /think", the report's
sampling preset of the mode, `k` samples each), so `pass_rate` estimates the same pass@1: with
`compare` set, post-eval's figure is printed next to it. A gap beyond sampling noise means the
served model is not the evaluated one (a wrong export, chat template or sampling path).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from q3.config import ConfigError, Q3Config, load_config
from q3.log import get_logger, print_table

log = get_logger("q3.post.serve_check")


class ServeCheckConfig(Q3Config):
    base_url: str                                 # the endpoint's /v1 URL
    model: str = "q3-tiny"                        # served model name
    pairs: str                                    # held-out RL pairs JSONL (`q3 post prepare` eval_pairs.jsonl)
    limit: int = Field(default=32, ge=1)          # pairs asked (the first `limit`, as `q3 post eval`)
    k: int = Field(default=1, ge=1)               # samples per pair (the request's n)
    max_tokens: int = Field(default=96, ge=1)
    mode: Literal["think", "no_think"] = "think"  # flag appended to every query
    temperature: float | None = None              # None: the mode's preset (as `q3 post eval`)
    seed: int = 0
    concurrency: int = Field(default=8, ge=1)     # requests in flight (q3 serve decodes them in one batch)
    timeout_s: float = Field(default=600.0, gt=0)
    compare: str | None = None                    # a `q3 post eval` eval.json: its pass@1 is reported alongside
    out: str | None = None                        # writes <out>/serve_check.json


def reply_text(message: Any) -> str:
    """The full reply as the rollout engine decodes it: `q3 serve` (like vLLM's reasoning parser)
    returns the think block as `reasoning_content`; put it back so the verifiers see what
    `q3 post eval` scores."""
    content = message.content or ""
    reasoning = getattr(message, "reasoning_content", None)
    return f"<think>\n{reasoning}\n</think>\n\n{content}" if reasoning is not None else content


def serve_check(base_url: str, items: list[dict], *, model: str = "q3-tiny", k: int = 1, max_tokens: int = 96,
                mode: str = "think", temperature: float | None = None, seed: int = 0, concurrency: int = 8,
                timeout_s: float = 600.0) -> dict:
    """Ask `items` (RL pairs) at `base_url`; {'asked', 'samples', 'passed', 'pass_rate', 'errors',
    'first_error', 'mean_completion_tokens', 'seconds'}. A failed request counts as an error, not as a
    failed answer."""
    import logging

    import openai

    from synth.verifiers import verify_item
    from train.sampling import preset_for

    for name in ("httpx", "httpx2"):          # the openai client logs every request at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    preset = preset_for(mode != "no_think")
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=1, timeout=timeout_s)
    flag = " /think" if mode == "think" else " /no_think"

    def ask(i: int) -> tuple[list[bool], int, str | None]:
        it = items[i]
        try:
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": it["query"] + flag}], n=k, max_tokens=max_tokens,
                temperature=preset.temperature if temperature is None else temperature, top_p=preset.top_p,
                presence_penalty=preset.presence_penalty, seed=seed + i, extra_body={"top_k": preset.top_k})
        except openai.OpenAIError as e:
            return [], 0, f"{type(e).__name__}: {e}"
        passed = [verify_item(reply_text(c.message), it).passed for c in r.choices]
        return passed, (r.usage.completion_tokens if r.usage else 0), None

    t0 = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(ask, range(len(items))))
    scores = [p for passed, _, _ in results for p in passed]
    errors = [e for _, _, e in results if e]
    return {"asked": len(items), "samples": len(scores), "passed": sum(scores),
            "pass_rate": sum(scores) / len(scores) if scores else 0.0, "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "mean_completion_tokens": sum(t for _, t, _ in results) / max(len(scores), 1),
            "seconds": round(time.time() - t0, 2)}


def eval_pass_rate(eval_json: str | Path) -> float | None:
    """pass@1 over all items of a `q3 post eval` eval.json (None when it has no verifiable eval)."""
    p = Path(eval_json)
    if not p.is_file():
        raise ConfigError(f"compare: no eval.json at {p}")
    return json.loads(p.read_text()).get("verifiable", {}).get("all", {}).get("pass@1")


def cli(config: str | None, overrides: list[str]) -> int:
    """Held-out pairs asked through the `openai` client at base_url= and verified: pairs=FILE base_url=URL"""
    from q3.jsonl import read_jsonl

    cfg = load_config(ServeCheckConfig, "post", config, overrides)
    rows = list(read_jsonl(cfg.pairs, "pairs"))[: cfg.limit]
    for where, row in rows:
        if not {"query", "verifier_type", "verifier_data"} <= row.keys():
            raise ConfigError(f"{where}: an RL pair needs query, verifier_type and verifier_data")
    if not rows:
        raise ConfigError(f"no pairs in {cfg.pairs}")
    items = [row for _, row in rows]
    reference = eval_pass_rate(cfg.compare) if cfg.compare else None
    res = serve_check(cfg.base_url, items, model=cfg.model, k=cfg.k, max_tokens=cfg.max_tokens, mode=cfg.mode,
                      temperature=cfg.temperature, seed=cfg.seed, concurrency=cfg.concurrency,
                      timeout_s=cfg.timeout_s)
    res.update(base_url=cfg.base_url, model=cfg.model, pairs=cfg.pairs, mode=cfg.mode, k=cfg.k,
               max_tokens=cfg.max_tokens, eval_pass_rate=reference, compare=cfg.compare)
    print_table("serve check", ["figure", "value"],
                [("pairs asked", res["asked"]), ("samples", res["samples"]), ("passed", res["passed"]),
                 ("pass rate (served)", round(res["pass_rate"], 4)),
                 ("pass@1 (q3 post eval)", "-" if reference is None else round(reference, 4)),
                 ("failed requests", res["errors"]), ("seconds", res["seconds"])])
    if cfg.out:
        from q3.atomic import atomic_write_text

        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cfg.out) / "serve_check.json", json.dumps(res, indent=1))
    if res["errors"]:
        log.error("%d of %d requests failed; first: %s", res["errors"], res["asked"], res["first_error"])
        return 1
    return 0


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main

    sys.exit(script_main(cli, __doc__))
