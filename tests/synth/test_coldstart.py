"""The cold-start builder end to end against a real local server with scripted reasoning replies."""

from __future__ import annotations

import json
from collections import Counter

from llm_fault_server import FaultServer
from reasoner_peer import CANDIDATE_KINDS, reply

from synth.coldstart import ColdStartConfig, build
from synth.filters import split_think
from synth.generators import VerifiableConfig, generate


def _items():
    items, _ = generate(VerifiableConfig(n=12, seed=5, domains={"math": 1, "logic": 1}, check=False))
    return [{k: v for k, v in vars(it).items()} for it in items]


def test_coldstart_filters_and_qwen3_sft_format(tmp_path):
    items = _items()
    extra = [
        {"id": "poem", "query": "Write a short poem about the sea.", "domain": "general"},          # unverifiable
        {"id": "multi", "query": "(a) Compute 2+3.\n(b) Compute 4*5.\n", "verifier_type": "math",
         "verifier_data": {"answer": "5"}},                                                       # multi-part
    ]
    rows = items + extra
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows))
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"query": items[0]["query"]}) + "\n")                               # too similar
    by_query = {it["query"]: it for it in items}
    order = [it["query"] for it in items]
    with FaultServer(models=("test-model",), responder=lambda b: reply(b, by_query, order)) as server:
        cfg = ColdStartConfig(input=str(queries), validation=str(val), output=str(tmp_path / "cs"),
                              endpoint={"base_url": server.base_url, "model": "test-model", "concurrency": 4,
                                        "cache_dir": str(tmp_path / "cache")},
                              candidates={"n": len(CANDIDATE_KINDS), "temperature": 0.6, "top_p": 0.95},
                              keep_per_query=2)
        meta = build(cfg)
        sent = server.total
        # balance: a cap per domain, rebuilt from the cache (no new requests)
        capped = build(cfg.model_copy(update={"max_per_domain": 1, "output": str(tmp_path / "cs1")}))
        assert server.total == sent

    rq = {r["id"]: r["reason"] for r in map(json.loads, (tmp_path / "cs" / "rejected_queries.jsonl").open())}
    assert rq["poem"] == "unverifiable" and rq["multi"] == "multi_part"
    assert rq[items[0]["id"]].startswith("too_similar_to_validation")
    # the non-thinking sample solves the even-indexed queries: they need no long CoT
    for i, it in enumerate(items[1:], start=1):
        assert (rq.get(it["id"]) == "answerable_without_cot") == (i % 2 == 0)
    survivors = [it for i, it in enumerate(items) if i % 2 == 1]
    # each candidate kind is rejected by its filter; the two good ones are kept
    rr = Counter((r["candidate"], r["reason"].split(":")[0])
                 for r in map(json.loads, (tmp_path / "cs" / "rejected_responses.jsonl").open()))
    expect = {0: "wrong_answer", 1: "repetition", 3: "guessing", 4: "inconsistent", 5: "language_mixing"}
    assert rr == Counter({(k, why): len(survivors) for k, why in expect.items()}), rr
    sft = [json.loads(x) for x in (tmp_path / "cs" / "sft.jsonl").open()]
    assert len(sft) == 2 * len(survivors) == meta["sft"]
    assert {s["query_id"] for s in sft} == {it["id"] for it in survivors}
    for s in sft:
        user, asst = s["messages"]
        assert user["role"] == "user" and asst["role"] == "assistant"
        assert asst["content"].startswith("<think>\n") and "\n</think>\n\n" in asst["content"]
        think, summary = split_think(asst["content"])
        assert len(think.split()) > 20 and "\\boxed{" in summary
    assert meta["tokens"]["candidates_requests"] == len(CANDIDATE_KINDS) * len(survivors)
    assert meta["tokens"]["no_think_requests"] == len(items) - 1
    capped_sft = [json.loads(x) for x in (tmp_path / "cs1" / "sft.jsonl").open()]
    assert max(Counter(s["domain"] for s in capped_sft).values()) <= 2   # 1 query per domain x 2 kept
    assert capped["queries_rejected"].get("domain_cap", 0) > 0
