"""The generation engine against a real local OpenAI-compatible server (tests/llm_fault_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import GatedResponder, synth_reply
from llm_fault_server import FaultServer

from q3.atomic import is_committed
from synth.engine import EngineConfig, plan_requests, read_seeds, run, shard_dir
from synth.templates import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ["textbook", "qa", "code_exercise", "multilingual"]
# stats that say what was generated (the same however the run went); the rest says how it went
# (cache hits, retries, seconds, shards reused, runner)
CONTENT_STATS = ("kept", "rejected", "rejected_by_reason", "by_template", "requests", "failed", "prompt_tokens",
                 "completion_tokens", "shards", "config_hash")


def _overrides(seed_file: Path, out: Path, url: str, **extra) -> list[str]:
    o = {"input": str(seed_file), "output": str(out), "endpoint.base_url": url, "endpoint.model": "test-model",
         "endpoint.concurrency": 3, "endpoint.max_retries": 1, "endpoint.backoff_base_s": 0.05,
         "shard_size": 2, "templates": "[" + ",".join(TEMPLATES) + "]", "target_languages": "[deu_Latn,fra_Latn]"}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def _cfg(seed_file: Path, out: Path, url: str, **extra) -> EngineConfig:
    from q3.config import load_config
    return load_config(EngineConfig, "synth", "default", _overrides(seed_file, out, url, **extra))


def _n_requests(cfg: EngineConfig) -> int:
    return len(plan_requests(read_seeds(cfg.input).to_pylist(), cfg, [load_template(n) for n in cfg.templates]))


def _q3(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "Q3_PROGRESS": "0", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "q3.cli", "synth", "run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final(out: Path) -> list[tuple]:
    t = pq.read_table(out / "final" / "data.parquet").to_pylist()
    return sorted((r["id"], r["text"], r["provenance"]["template"], r["provenance"]["seed_id"]) for r in t)


def _rows(out: Path, drop_cached: bool = False) -> dict[str, list[dict]]:
    """Every final row, kept and rejected, in file order (`cached` dropped: a resumed run's replies
    come from the cache)."""
    got = {}
    for name in ("data", "rejected"):
        rows = pq.read_table(out / "final" / f"{name}.parquet").to_pylist()
        for r in rows if drop_cached else ():
            r["provenance"].pop("cached")
        got[name] = rows
    return got


def _content(stats: dict) -> dict:
    return {k: stats[k] for k in CONTENT_STATS}


@pytest.fixture(scope="module")
def reference(seed_file, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted local run with the tests' default config: what every other way must equal."""
    out = tmp_path_factory.mktemp("reference") / "out"
    with FaultServer(models=("test-model",), responder=synth_reply) as server:
        stats = run(_cfg(seed_file, out, server.base_url, runner="local"))
    assert stats["kept"] > 0 and stats["rejected"] > 0 and stats["shards"] == 3
    return out, stats


def test_run_rows_provenance_dedup_decontam_tokens(seed_file, llm_server, tmp_path):
    seeds = read_seeds(str(seed_file))
    # an eval set that quotes the German seed's opening words: its outputs must be flagged contaminated
    de = next(r for r in seeds.to_pylist() if r["lang"] == "deu_Latn")
    bench = tmp_path / "evals" / "toybench.jsonl"
    bench.parent.mkdir()
    bench.write_text(json.dumps({"question": " ".join(de["text"].split()[:30])}) + "\n")
    cfg = _cfg(seed_file, tmp_path / "out", llm_server.base_url, **{"decontam.evals": f"[{bench}]"})
    meta = run(cfg)
    n = _n_requests(cfg)
    assert meta["requests"] == n and meta["cache_hits"] == 0 and meta["failed"] == 0
    assert meta["prompt_tokens"] > 0 and meta["completion_tokens"] > 0
    kept = pq.read_table(tmp_path / "out" / "final" / "data.parquet").to_pylist()
    rej = pq.read_table(tmp_path / "out" / "final" / "rejected.parquet").to_pylist()
    reasons = {r["reason"] for r in rej}
    assert "duplicate" in reasons                       # the near-copy seed's textbook
    assert any(r.startswith("contaminated:toybench") for r in reasons)
    assert all(r["provenance"]["seed_id"] != de["id"] or r["provenance"]["template"] in ("qa",) for r in kept)
    # provenance on every row; templates applied where they should be
    for r in kept + rej:
        p = r["provenance"]
        assert p["template"] in TEMPLATES and p["model"] == "test-model" and p["seed_id"]
        assert p["config_hash"] == meta["config_hash"] and p["request_key"] and p["template_hash"]
    templates_by_lang = {(r["provenance"]["template"], next(s["lang"] for s in seeds.to_pylist()
                                                              if s["id"] == r["provenance"]["seed_id"])) for r in kept}
    assert ("code_exercise", "code_Python") in templates_by_lang
    assert not any(t == "code_exercise" and lang != "code_Python" for t, lang in templates_by_lang)
    assert {r["lang"] for r in kept if r["provenance"]["template"] == "multilingual"} == {"deu_Latn", "fra_Latn"}
    # qa replies were structured outputs: each pair is its own row
    assert sum(r["provenance"]["template"] == "qa" for r in kept) == 2 * sum(
        1 for s in seeds.to_pylist() if load_template("qa").applies(s)) - sum(
        r["provenance"]["template"] == "qa" for r in rej)
    # every request was sent exactly once
    assert len(llm_server.ok) == n and set(llm_server.ok.values()) == {1}
    # a rerun of a finished run sends nothing
    llm_server.reset_counts()
    meta2 = run(cfg)
    assert llm_server.total == 0 and meta2["kept"] == meta["kept"]


def test_killed_run_resumes_with_every_request_answered_once(seed_file, tmp_path, reference):
    gated = GatedResponder(open_for=9)
    with FaultServer(models=("test-model",), responder=gated) as server:
        out = tmp_path / "out"
        args = _overrides(seed_file, out, server.base_url)
        proc = _q3(args)
        deadline = time.time() + 120
        while gated.held < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)                      # let the client fill its concurrency with held requests
        assert proc.poll() is None, proc.stdout.read()
        proc.kill()                          # SIGKILL: no cleanup, requests in flight are lost
        proc.wait()
        in_flight = gated.held
        gated.release()                      # held requests die unanswered
        n_shards = 3
        done_before = [is_committed(shard_dir(out, k)) for k in range(n_shards)]
        assert any(done_before) and not all(done_before), done_before
        assert 1 <= in_flight <= 3
        server.responder = synth_reply       # the model is healthy again
        proc = _q3(args)
        log = proc.communicate(timeout=180)[0]
        assert proc.returncode == 0, log
        cfg = _cfg(seed_file, out, server.base_url)
        n = _n_requests(cfg)
        # the server answered every distinct request exactly once across both runs
        assert len(server.ok) == n and set(server.ok.values()) == {1}, server.ok
        # only the requests that were in flight at the kill were sent a second time
        assert sum(server.attempts.values()) == n + in_flight
    # identical to an uninterrupted run: every row (kept and rejected) and what the stats count
    ref_out, ref_stats = reference
    assert _rows(out, drop_cached=True) == _rows(ref_out, drop_cached=True)
    assert _content(json.loads((out / "final" / "stats.json").read_text())) == _content(ref_stats)


def test_crash_after_responses_resends_nothing(seed_file, tmp_path, llm_server, reference):
    out = tmp_path / "out"
    args = _overrides(seed_file, out, llm_server.base_url)
    proc = _q3(args, {"Q3_SYNTH_CRASH_AT_SHARD": "1"})   # dies as kill -9 would, after shard 1's replies
    log = proc.communicate(timeout=180)[0]
    assert proc.returncode == 137, log
    assert is_committed(shard_dir(out, 0)) and not is_committed(shard_dir(out, 1))
    assert list((out / "shards").glob(".shard-00001.tmp-*")), "the killed shard's half-written work dir"
    proc = _q3(args)
    log = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, log
    assert not list((out / "shards").glob(".*tmp-*"))      # the rerun removed it
    n = _n_requests(_cfg(seed_file, out, llm_server.base_url))
    assert len(llm_server.attempts) == n and set(llm_server.attempts.values()) == {1}
    marker = json.loads((shard_dir(out, 1) / "_Q3_SUCCESS").read_text())
    assert marker["cache_hits"] == marker["requests"] > 0
    stats = json.loads((out / "final" / "stats.json").read_text())
    assert stats["shards_skipped"] == 1                   # shard 0 was reused, shards 1 and 2 generated
    ref_out, ref_stats = reference
    assert _rows(out, drop_cached=True) == _rows(ref_out, drop_cached=True)
    assert _content(stats) == _content(ref_stats)


@pytest.mark.parametrize("runner", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_runners_give_identical_rows_and_stats(runner, seed_file, tmp_path, llm_server, reference, request):
    """The shard batch function by the local loop or inside Spark mapInArrow: the same rows (kept
    and rejected, provenance included) and the same stats as the reference run; every request sent once."""
    spark = request.getfixturevalue("spark") if runner == "spark" else None
    stats = run(_cfg(seed_file, tmp_path / "out", llm_server.base_url, runner=runner), spark=spark)
    assert stats["runner"] == runner and stats["cache_hits"] == 0
    ref_out, ref_stats = reference
    assert len(llm_server.ok) == stats["requests"] and set(llm_server.ok.values()) == {1}
    assert _rows(tmp_path / "out") == _rows(ref_out)
    same = {k: v for k, v in ref_stats.items() if k not in ("seconds", "runner", "skipped")}
    assert {k: stats[k] for k in same} == same


def test_bad_replies_become_rejected_rows(seed_file, tmp_path):
    def flaky(body):
        fmt = body.get("response_format") or {}
        return "not json at all" if fmt else "ok"     # JSON templates fail to parse; text too short
    with FaultServer(models=("test-model",), responder=flaky) as server:
        meta = run(_cfg(seed_file, tmp_path / "out", server.base_url, templates="[qa,textbook]"))
    rej = pq.read_table(tmp_path / "out" / "final" / "rejected.parquet").to_pylist()
    assert meta["kept"] == 0 and {r["reason"] for r in rej} == {"bad_json", "too_short"}
    assert all(r["detail"] for r in rej if r["reason"] == "bad_json")


def test_changed_config_redoes_committed_shards(seed_file, tmp_path, llm_server):
    out = tmp_path / "out"
    run(_cfg(seed_file, out, llm_server.base_url, templates="[textbook]"))
    meta = run(_cfg(seed_file, out, llm_server.base_url, templates="[textbook,qa]"))
    rows = pq.read_table(out / "final" / "data.parquet").to_pylist()
    assert {r["provenance"]["template"] for r in rows} == {"textbook", "qa"}
    assert meta["cache_hits"] > 0   # the textbook replies came from the cache, not the server
    assert set(llm_server.ok.values()) == {1}


def test_unreachable_endpoint_commits_nothing(seed_file, tmp_path):
    from synth.engine import cli
    with FaultServer(models=("test-model",)) as server:
        url = server.base_url
    # the server is gone: every request fails after its retries -> exit code 1, no shard committed
    rc = cli(None, _overrides(seed_file, tmp_path / "out", url, **{"endpoint.max_retries": 0}))
    assert rc == 1 and not is_committed(shard_dir(tmp_path / "out", 0))
