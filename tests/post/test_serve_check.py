"""`train.post.serve_check` against a real `q3 serve` subprocess on a tiny exported Qwen3: the
served greedy replies score exactly as the same model's in-process replies (`train.generate.chat`,
the rollout engine), through the official `openai` client, and the CLI writes its JSON."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from post_helpers import ROOT, _env

from synth.verifiers import extract_answer, strip_thinking, verify_item
from train.post.serve_check import serve_check

sys.path.insert(0, str(ROOT / "tests" / "train"))
from tiny_export import tiny_checkpoint_and_export  # noqa: E402

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return tiny_checkpoint_and_export(tmp_path_factory.mktemp("serve_check"), "tiny_dense")[3]


@pytest.fixture(scope="module")
def server(hf_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    port_file = tmp / "port"
    with open(tmp / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "q3.cli", "serve", f"load={hf_dir}", "port=0",
                                 f"port_file={port_file}", "served_model_name=q3-tiny"],
                                cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while not port_file.exists():
            assert proc.poll() is None and time.time() < deadline, (tmp / "serve.log").read_text()[-2000:]
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _pairs(hf_dir: Path) -> list[dict]:
    """Two pairs: one whose `exact` answer is what the model greedily replies in-process, one no
    reply can pass."""
    from train.generate import chat, load_lm

    lm, tok, _ = load_lm(hf_dir)
    query = "What is 2 + 3?"
    text = chat(lm, tok, [{"role": "user", "content": query + " /think"}], temperature=0.0,
                max_tokens=MAX_TOKENS, seed=0)[0].text
    answer = extract_answer(text) or strip_thinking(text).strip()
    good = {"id": "a", "query": query, "verifier_type": "exact", "verifier_data": {"answer": answer}}
    bad = {"id": "b", "query": "Name a colour.", "verifier_type": "format",
           "verifier_data": {"regex": "this text is never generated 0xDEADBEEF"}}
    assert verify_item(text, good).passed
    return [good, bad]


def test_served_replies_score_as_in_process(hf_dir, server):
    items = _pairs(hf_dir)
    res = serve_check(server, items, k=1, max_tokens=MAX_TOKENS, temperature=0.0, concurrency=2)
    assert res["errors"] == 0 and res["asked"] == 2 and res["samples"] == 2
    assert res["passed"] == 1 and res["pass_rate"] == 0.5        # the greedy reply of the same weights
    sampled = serve_check(server, items, k=3, max_tokens=MAX_TOKENS, concurrency=2)   # the think preset, n=3
    assert sampled["samples"] == 6 and sampled["errors"] == 0
    assert sampled["mean_completion_tokens"] <= MAX_TOKENS


def test_cli_writes_json_and_compares_with_eval(hf_dir, server, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in _pairs(hf_dir)))
    (tmp_path / "eval.json").write_text(json.dumps({"verifiable": {"all": {"pass@1": 0.25}}}))
    p = subprocess.run([sys.executable, "-m", "train.post.serve_check", f"base_url={server}", f"pairs={pairs}",
                        "temperature=0.0", f"max_tokens={MAX_TOKENS}", f"compare={tmp_path / 'eval.json'}",
                        f"out={tmp_path / 'out'}"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "serve_check.json").read_text())
    assert res["pass_rate"] == 0.5 and res["eval_pass_rate"] == 0.25 and res["errors"] == 0


def test_unreachable_endpoint_fails_the_check(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q", "verifier_type": "exact", "verifier_data": {"answer": "a"}}) + "\n")
    p = subprocess.run([sys.executable, "-m", "train.post.serve_check", "base_url=http://127.0.0.1:9/v1",
                        f"pairs={pairs}", "timeout_s=5"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and "1 of 1 requests failed" in p.stdout + p.stderr


def test_bad_pairs_file_is_one_line_error(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"query": "q"}) + "\n")
    q = subprocess.run([sys.executable, "-m", "train.post.serve_check", "base_url=http://127.0.0.1:9/v1",
                        f"pairs={tmp_path / 'p.jsonl'}"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert q.returncode == 2 and "needs query, verifier_type and verifier_data" in q.stderr
    assert "Traceback" not in q.stderr
