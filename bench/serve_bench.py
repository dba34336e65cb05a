"""`q3 serve` throughput with concurrent clients: batched (max_batch_requests=8) vs one request at a
time (max_batch_requests=1), through the real HTTP server (`q3 serve` in a child process, 127.0.0.1).

    python -m bench.serve_bench [--model tiny_dense] [--clients 8] [--tokens 32] [--rounds 3] [--hf]

A random-init tiny Qwen3 is saved as a megatron checkpoint (served directly: prompts of different
lengths share a batch by left padding) or, with --hf, exported (an HF export batches prompts of one
token length only, so all clients then send prompts of one length). Each round, `--clients` threads
send one chat request each at the same moment (different prompts and seeds, `--tokens` new tokens,
T=1); tokens/s = completion tokens of all replies / wall seconds from the first send to the last
reply. The answers of both servers are compared: a request's seed gives the same tokens batched or not.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["Why is the sky blue?", "Write a haiku about autumn.", "What is 17 * 23?",
             "Name three prime numbers.", "How do bees make honey?", "Tell me a joke.",
             "What is the capital of France?", "Explain gravity simply.", "Give me a word for happy.",
             "Count from one to five.", "What colour is grass?", "Say hello in Spanish."]
WORDS = ["cat", "dog", "sun", "tree", "red", "blue", "one", "two", "fish", "bird", "rain", "snow", "moon", "star"]


def prompts(clients: int, hf: bool) -> list[str]:
    if not hf:
        return [QUESTIONS[i % len(QUESTIONS)] + " /no_think" for i in range(clients)]
    from train.generate import Tokenizer

    tok = Tokenizer()
    by_len: dict[int, list[str]] = {}
    for w in WORDS:
        q = f"Say {w} please /no_think"
        by_len.setdefault(len(tok.encode(tok.render([{"role": "user", "content": q}], False))), []).append(q)
    same = max(by_len.values(), key=len)
    return [same[i % len(same)] for i in range(clients)]


def one_round(url: str, questions: list[str], tokens: int, seed0: int) -> tuple[float, int, list]:
    replies: list = [None] * len(questions)
    go = threading.Barrier(len(questions) + 1)

    def client(i: int) -> None:
        with httpx.Client(timeout=600) as c:
            go.wait()
            r = c.post(f"{url}/chat/completions", json={
                "messages": [{"role": "user", "content": questions[i]}], "max_tokens": tokens,
                "seed": seed0 + i, "temperature": 1.0})
            r.raise_for_status()
            replies[i] = r.json()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    ntok = sum(r["usage"]["completion_tokens"] for r in replies)
    return dt, ntok, [r["choices"][0]["message"]["content"] for r in replies]


def serve_and_measure(load: Path, batch: int, questions: list[str], tokens: int, rounds: int,
                      extra: list[str]) -> dict:
    from train.serve import background

    with background(load, f"max_batch_requests={batch}", *extra) as url:
        one_round(url, questions[:1], 2, 0)                      # warm-up
        runs = [one_round(url, questions, tokens, 1000 * k) for k in range(rounds)]
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=30).json()
    secs, toks = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return {"batch": batch, "s": secs, "tokens": toks, "tps": toks / secs, "answers": [r[2] for r in runs],
            "health": health, "per_round_tps": [r[1] / r[0] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny_dense")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hf", action="store_true", help="serve the HF export instead of the megatron checkpoint")
    ap.add_argument("--window", type=float, default=None, help="batch_window_s of the batched server")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "train"))
    from tiny_export import tiny_checkpoint_and_export

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        _, _, ckpt, hf, _ = tiny_checkpoint_and_export(Path(d), a.model)
        load = hf if a.hf else ckpt
        questions = prompts(a.clients, a.hf)
        extra = [] if a.window is None else [f"batch_window_s={a.window}"]
        rows = [serve_and_measure(load, b, questions, a.tokens, a.rounds, extra) for b in (a.clients, 1)]
    same = rows[0]["answers"] == rows[1]["answers"]
    print(f"\n{platform.machine()} {os.cpu_count()} cores, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; "
          f"{a.model} {'HF export' if a.hf else 'megatron checkpoint'}, {a.clients} concurrent clients x "
          f"{a.tokens} tokens x {a.rounds} rounds, batch_window_s={a.window if a.window is not None else 'default'}; "
          f"answers identical batched vs not: {same}\n")
    print("| max_batch_requests | engine batches | largest | tokens | s | tokens/s | per round |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        h = r["health"]
        print(f"| {r['batch']} | {h['batches']} | {h['largest_batch']} | {r['tokens']} | {r['s']:.2f} | "
              f"{r['tps']:.0f} | {', '.join(f'{x:.0f}' for x in r['per_round_tps'])} |")
    print(f"\nbatched / one at a time: **{rows[0]['tps'] / rows[1]['tps']:.1f}x**")


if __name__ == "__main__":
    main()
