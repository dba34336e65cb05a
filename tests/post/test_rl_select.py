"""`q3 post select`: exclusion of cold-start queries (exact and near-duplicate, dataproc's MinHash),
the band / hardest-first / sub-domain balancing as a pure function, and the verb end to end on a
tiny megatron checkpoint (real rollout engine, real Qwen3 tokenizer, synth's real verifiers)."""

from __future__ import annotations

import json

import pytest
from post_helpers import run_q3 as q3

from train.post.select import SelectConfig, exclude_seen, seen_queries, select_pairs

QUERY = ("On an island, knights always tell the truth and knaves always lie. You meet Ben and Ivo. "
         "Ivo says that Ben is a knave. Who is a knight and who is a knave?")


def _pair(i: int, query: str, **kw) -> dict:
    return {"id": f"p{i}", "query": query, "verifier_type": "math", "verifier_data": {"answer": "1"},
            "domain": "math", "subdomain": "algebra", "difficulty": 1, **kw}


def test_exclusion_exact_near_duplicate_and_flags(tmp_path):
    cold = tmp_path / "cold.jsonl"
    rows = [{"messages": [{"role": "user", "content": QUERY + " /no_think"},
                          {"role": "assistant", "content": "<think>\n\n</think>\n\nBen: knight"}]},
            {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "What is the least common multiple of 24 and 150?"},
                          {"role": "assistant", "content": "600"}]}]
    cold.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = seen_queries([str(cold)])
    assert seen == [QUERY, "What is the least common multiple of 24 and 150?"]   # flags stripped, user turns only

    one_word = QUERY.replace("Ivo says", "Ivo claims")
    unrelated = "Compute the number of positive divisors of 2936 and explain which primes divide it."
    items = [_pair(0, "  " + QUERY.upper() + " /think"),     # same text after normalisation
             _pair(1, one_word),                            # near-duplicate: one word changed
             _pair(2, unrelated),
             _pair(3, unrelated + " "),                     # repeats pair 2
             _pair(4, "What is the least common multiple of 24 and 150?")]
    keep, excluded = exclude_seen(items, seen, SelectConfig(pairs="-", load="-").near_dup)
    assert [it["id"] for it in keep] == ["p2"]
    why = {e["id"]: e for e in excluded}
    assert {k: e["reason"] for k, e in why.items()} == {
        "p0": "seen_exact", "p1": "seen_near_duplicate", "p3": "duplicate", "p4": "seen_exact"}
    assert 0.75 <= why["p1"]["jaccard"] < 1 and why["p1"]["seen"] == QUERY


def test_near_duplicate_found_among_many_templated_queries():
    """The sorted-band index returns the closest seen query, not just any template sibling."""
    from train.post.select import SeenIndex

    seen = [f"A shop sells {i} apples on Monday and {i + 7} pears on Tuesday. How many fruits did the shop "
            f"sell over the two days in total?" for i in range(2000)]
    idx = SeenIndex(seen, SelectConfig(pairs="-", load="-").near_dup)
    edited = seen[1234].replace("shop sells", "store sells")
    other = "A train leaves at 9 and arrives at 11. How long is the journey in minutes?"
    (reason, text, j), none = idx.match_many([edited, other])
    assert reason == "seen_near_duplicate" and text == seen[1234] and 0.75 <= j < 1 and none is None


def _rated(rates: dict[str, list[float]]) -> list[dict]:
    out = []
    for g, ps in rates.items():
        dom, sub = g.split("/")
        out += [{"id": f"{sub}{i}", "query": f"{sub} {i}", "domain": dom, "subdomain": sub, "pass_rate": p}
                for i, p in enumerate(ps)]
    return out


def test_select_pairs_band_hardest_first_and_balanced():
    items = _rated({"math/algebra": [0.0, 0.125, 0.5, 0.25, 0.75, 1.0, 0.375],
                    "math/arith": [0.875, 0.5],
                    "logic/knights": [0.25, 0.0, 1.0]})
    kept, dropped = select_pairs(items)
    assert dropped == {"unlearnable": 2, "solved": 2, "outside_band": 0, "over_subdomain_cap": 0, "over_max_pairs": 0}
    assert len(kept) + sum(dropped.values()) == len(items)
    # round 1: each sub-domain's hardest, hardest first; then round 2, ...
    assert [(it["subdomain"], it["pass_rate"]) for it in kept] == [
        ("algebra", 0.125), ("knights", 0.25), ("arith", 0.5),
        ("algebra", 0.25), ("arith", 0.875), ("algebra", 0.375), ("algebra", 0.5), ("algebra", 0.75)]

    kept, dropped = select_pairs(items, min_pass=0.2, max_pass=0.6, per_subdomain=2, max_pairs=3)
    assert dropped == {"unlearnable": 2, "solved": 2, "outside_band": 3, "over_subdomain_cap": 1, "over_max_pairs": 1}
    assert [it["id"] for it in kept] == ["knights0", "algebra3", "arith1"]
    assert len(kept) + sum(dropped.values()) == len(items)


def _raises(match: str, *overrides: str) -> None:
    from q3.config import ConfigError, load_config
    from train.post.select import run

    with pytest.raises(ConfigError, match=match):
        run(load_config(SelectConfig, "post", None, list(overrides)))


def test_config_errors_are_one_line(tmp_path):
    # through the CLI: one line on stderr, exit 2, no traceback
    p = q3("post", "select", "pairs=/nope.jsonl", "load=/nope", f"out={tmp_path}", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "pairs file not found: /nope.jsonl" in p.stderr
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(_pair(0, "a")) + "\n")
    p = q3("post", "select", f"pairs={good}", f"load={tmp_path}", f"exclude=[{good}]", f"out={tmp_path / 'o'}",
           check=False)                                      # its own query excluded: nothing left
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "all 1 pairs" in p.stderr and "near_dup.threshold" in p.stderr
    # the same ConfigError path in process
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    _raises("no RL pairs", f"pairs={empty}", "load=/nope")
    _raises("min_pass", f"pairs={empty}", "load=/nope", "min_pass=0.8", "max_pass=0.2")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_pair(0, "a")) + "\n" + json.dumps(_pair(0, "b")) + "\n")
    _raises("duplicate id 'p0'", f"pairs={bad}", "load=/nope")
    bad.write_text(json.dumps(_pair(0, "a", verifier_type="maths")) + "\n")
    _raises("verifier_type 'maths'", f"pairs={bad}", "load=/nope")
    _raises("load=/nope: no such checkpoint", f"pairs={good}", "load=/nope")
    _raises("exclude file not found: /nope/cold.jsonl", f"pairs={good}", f"load={tmp_path}", "exclude=[/nope/cold.jsonl]")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random tiny_dense megatron checkpoint (what `q3 post sft` would leave, minus the training)."""
    import torch

    from train.config import load_model_config
    from train.hf_export import save_megatron
    from train.model import build_model, init_parallel

    init_parallel()
    cfg = load_model_config("tiny_dense")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("select_ckpt") / "ckpt"
    save_megatron(build_model(cfg, seq_length=64).eval(), cfg, path)
    return path


def test_select_end_to_end(post_data, tiny_ckpt, tmp_path):
    pairs = post_data.parent / "rl" / "pairs.jsonl"           # all pairs: the cold-start ones among them
    n_pairs = sum(1 for x in pairs.read_text().splitlines() if x.strip())
    n_cold = sum(1 for x in (post_data / "coldstart.jsonl").read_text().splitlines() if x.strip())
    out = tmp_path / "sel"
    args = ["post", "select", f"pairs={pairs}", f"load={tiny_ckpt}", f"out={out}", "k=2", "max_tokens=8", "batch=8",
            f"exclude=[{post_data / 'coldstart.jsonl'},{post_data / 'fusion.jsonl'}]"]
    p = q3(*args, check=False)
    # a random tiny model solves nothing: a clear one-line error, and the evidence on disk
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and "no pair has 0 < pass rate < 1" in p.stderr and "k=2" in p.stderr
    summary = json.loads((out / "select.json").read_text())
    c = summary["counts"]
    assert c["excluded"]["seen_exact"] == n_cold                # every cold-start query is in pairs.jsonl
    assert c["pairs"] == sum(c["excluded"].values()) + c["candidates"]
    assert c["candidates"] == sum(c["dropped"].values()) + c["kept"] and c["kept"] == 0
    assert summary["pass_rate_histogram"] == {"0/2": c["candidates"]} and summary["model"] == "tiny_dense"
    excluded = [json.loads(x) for x in (out / "excluded.jsonl").read_text().splitlines()]
    assert len(excluded) == n_pairs - c["candidates"]
    scores = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == c["candidates"] and all(s["k"] == 2 for s in scores)
    assert not (out / "rl_pairs.jsonl").exists()

    # a killed run resumes at the first batch missing from scores.jsonl (a torn last line is
    # ignored); to reach the keep path the cached scores are hand-set, as if some were solved
    for i, s in enumerate(scores):
        s["c"] = i % 3                                        # 0/2, 1/2, 2/2 in turn
    cached = scores[:8]                                       # batch 0 done, batches 1.. to sample
    (out / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in cached) + '{"id": "torn", "ke')
    p = q3(*args, "per_subdomain=3")
    assert f"resuming: 8 of {c['candidates']} queries already scored" in p.stderr
    summary = json.loads((out / "select.json").read_text())
    c = summary["counts"]
    assert summary["model"] == "tiny_dense" and "post select" in p.stdout
    assert summary["pass_rate_histogram"] == {"0/2": c["candidates"] - 5, "1/2": 3, "2/2": 2}
    assert c["candidates"] == sum(c["dropped"].values()) + c["kept"] > 0
    kept = [json.loads(x) for x in (out / "rl_pairs.jsonl").read_text().splitlines()]
    assert len(kept) == c["kept"] == sum(summary["kept_per_subdomain"].values())
    originals = {json.loads(x)["id"]: json.loads(x) for x in pairs.read_text().splitlines() if x.strip()}
    for it in kept:
        assert it["pass_rate"] == 0.5 and it["k"] == 2 and it["select_model"] == str(tiny_ckpt)
        assert {k: it[k] for k in originals[it["id"]]} == originals[it["id"]]   # original fields kept
    assert max(summary["kept_per_subdomain"].values()) <= 3


def test_shipped_config_validates():
    from q3.config import load_config

    cfg = load_config(SelectConfig, "post", "select", ["near_dup.threshold=0.8"])
    assert cfg.near_dup.word_ngram == 2 and cfg.near_dup.threshold == 0.8 and cfg.k == 8
