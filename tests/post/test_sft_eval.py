"""`q3 post prepare | sft | eval` end to end on a tiny model: real CLI processes, real megatron-core,
real Qwen3 tokenizer and chat template, synth's real verifiers."""

from __future__ import annotations

import json

from post_helpers import TINY_SFT
from post_helpers import run_q3 as q3


def test_prepare_splits_and_formats(post_data):
    cold = [json.loads(x) for x in (post_data / "coldstart.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (post_data / "eval_pairs.jsonl").read_text().splitlines()]
    fusion = [json.loads(x) for x in (post_data / "fusion.jsonl").read_text().splitlines()]
    assert cold and evals and fusion
    held = {e["query"] for e in evals}
    assert not held & {r["messages"][0]["content"] for r in cold}, "held-out queries leaked into SFT data"
    for r in cold:
        a = r["messages"][-1]["content"]
        assert a.startswith("<think>\n") and "\n</think>\n\n" in a and a.split("</think>")[1].strip()


def test_sft_trains_resumes_and_evals(post_data, tmp_path):
    run = tmp_path / "sft"
    data = f"data=[{post_data / 'fusion.jsonl'}]"
    # stop at 4 of 8 steps, then resume: the metrics must continue without duplicates
    q3("post", "sft", *TINY_SFT, data, f"out_dir={run}", "train_steps=8", "stop_after=4", "valid_fraction=0.1")
    q3("post", "sft", *TINY_SFT, data, f"out_dir={run}", "train_steps=8", "valid_fraction=0.1",
       f"export_hf={tmp_path / 'hf'}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    res = json.loads((run / "result.json").read_text())
    assert res["steps"] == 8 and res["eval"]["end"] < res["eval"]["start"]
    assert (tmp_path / "hf" / "config.json").is_file()

    p = q3("post", "eval", f"load={run}", f"pairs={post_data / 'eval_pairs.jsonl'}", f"out={tmp_path / 'ev'}",
           "limit=4", "k=2", "max_tokens=12", "budget=3")
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["verifiable"]["all"]["items"] == 4 and 0 <= ev["verifiable"]["all"]["pass@2"] <= 1
    assert ev["thinkfollow"]["dialogues"] == 4
    assert ev["budget"]["within_budget"] == 1.0 and ev["budget"]["max_thinking_tokens"] <= 3
    assert "post eval" in p.stdout


def test_user_errors_are_one_line(tmp_path):
    p = q3("post", "sft", "data=[/nonexistent.jsonl]", "load=null", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "/nonexistent.jsonl" in p.stderr
    p = q3("post", "prepare", "pairs=/nope.jsonl", f"out={tmp_path}", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = q3("post", "eval", "load=x", "pairs=/nope.jsonl", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
