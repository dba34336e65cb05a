"""`q3 data estimate`: the cost model over measured stage rates (bench/results/stage_costs.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dataproc.estimate import MEASURED, EstimateConfig, estimate, load_measured, parse_count
from q3.config import ConfigError, validate
from q3.errors import InputMissing
from q3.paths import ROOT


def _measured(tmp_path, quality_bytes_per_s: float = 2e6):
    """A small stage_costs.json: every stage at 10 MB/s except quality (the knob tests turn)."""
    stages = {name: {"docs_per_cpu_s": 5000.0, "bytes_per_cpu_s": 1e7} for name in (
        "read", "normalise", "langid", "pii", "dedup_exact", "dedup_signatures", "decontam", "tokenise")}
    stages["quality"] = {"docs_per_cpu_s": 1000.0, "bytes_per_cpu_s": quality_bytes_per_s}
    stages["dedup_exact"]["exact_duplicates"] = 0
    stages["dedup_lsh_buckets"] = {"docs_per_cpu_s": 1e5, "bytes_per_cpu_s": 1e8, "bands": 20,
                                   "candidate_edges": 100}
    stages["dedup_verify"] = {"docs_per_cpu_s": 1e4, "bytes_per_cpu_s": 1e7, "verified_edges": 50}
    stages["dedup_components"] = {"docs_per_cpu_s": 1e5, "bytes_per_cpu_s": 1e8, "largest_cluster": 8}
    stages["dedup_lines"] = {"docs_per_cpu_s": 2000.0, "bytes_per_cpu_s": 4e6, "unit_hashes_per_doc": 10.0}
    data = {"measured_at": "test", "sample_bytes_per_token": {"eng_Latn": 4.0, "cmn_Hans": 2.0,
                                                              "rus_Cyrl": 5.0, "code_Python": 3.0},
            "sizes": [{"docs": 1000, "stages": stages}]}
    p = tmp_path / "costs.json"
    p.write_text(json.dumps(data))
    return p


def _cfg(path, **kw) -> EstimateConfig:
    return validate(EstimateConfig, {"input": str(path), "overhead": 1.0, **kw})


@pytest.mark.parametrize("text,value", [("36T", 36e12), ("800b", 800e9), ("5e12", 5e12), ("1.5M", 1.5e6), (7, 7.0)])
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["abc", "36X", "-5T", "0", "inf"])
def test_bad_counts_are_config_errors(tmp_path, bad):
    with pytest.raises(ConfigError, match="tokens"):
        _cfg(_measured(tmp_path), tokens=bad)


def test_model_is_consistent(tmp_path):
    m = load_measured(_measured(tmp_path))
    e = estimate(_cfg(tmp_path / "costs.json", tokens="1T", hours=10, cores=1000), m)
    by = {r["stage"]: r for r in e["stages"]}
    # bytes/token blended from the group means with the default mix (latin .65 cjk .15 other .1 code .1)
    assert e["bytes_per_token"] == pytest.approx(0.65 * 4 + 0.15 * 2 + 0.1 * 5 + 0.1 * 3)
    k = EstimateConfig().keep
    assert e["raw_bytes"] == pytest.approx(e["final_bytes"] / (k.lid * k.quality * k.dedup * k.lines * k.decontam))
    # read sees the raw bytes at 10 MB/s; quality the LID-kept bytes at 2 MB/s
    assert by["read"]["core_hours"] == pytest.approx(e["raw_bytes"] / 1e7 / 3600)
    assert by["quality"]["core_hours"] == pytest.approx(e["raw_bytes"] * k.lid / 2e6 / 3600)
    assert sum(r["share"] for r in e["stages"]) == pytest.approx(1.0)
    assert e["cores_needed"] == pytest.approx(e["effective_core_hours"] / 10, abs=1)
    assert e["wall_hours"] == pytest.approx(e["effective_core_hours"] / 1000)
    assert e["shuffle_bytes"] > 0 and by["dedup_lsh_buckets"]["shuffle_bytes"] > 0 and by["read"]["shuffle_bytes"] == 0
    # a shuffling stage pays its bytes at shuffle_mib_per_core_s on top of its measured CPU
    ex = by["dedup_exact"]
    assert ex["core_hours"] == pytest.approx(ex["input_bytes"] / 1e7 / 3600 + ex["shuffle_bytes"] / (25 * 2**20) / 3600)
    # linear stages double with the tokens; the LSH sort grows by more (n log n)
    e2 = estimate(_cfg(tmp_path / "costs.json", tokens="2T"), m)
    by2 = {r["stage"]: r for r in e2["stages"]}
    assert by2["quality"]["core_hours"] == pytest.approx(2 * by["quality"]["core_hours"])
    assert by2["dedup_lsh_buckets"]["core_hours"] > 2 * by["dedup_lsh_buckets"]["core_hours"]
    # the runner overhead multiplies the functions' CPU (not the shuffle)
    oh = {r["stage"]: r for r in estimate(_cfg(tmp_path / "costs.json", tokens="1T", overhead=3), m)["stages"]}
    assert oh["quality"]["core_hours"] == pytest.approx(3 * by["quality"]["core_hours"])
    # a slower filter costs proportionally more
    slow = estimate(_cfg(tmp_path / "costs.json", tokens="1T"), load_measured(_measured(tmp_path, 1e6)))
    assert {r["stage"]: r for r in slow["stages"]}["quality"]["core_hours"] == pytest.approx(2 * by["quality"]["core_hours"])


def test_bad_inputs(tmp_path):
    with pytest.raises(InputMissing, match="stage_costs"):
        load_measured(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"sizes": []}')
    with pytest.raises(ConfigError, match="not a stage_costs.json"):
        load_measured(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="sum"):
        _cfg(_measured(tmp_path), mix={"latin": 0.9})


def test_committed_measurements_load():
    """The measured rates in the repository give a 36T estimate with every measured stage."""
    m = load_measured(MEASURED)
    e = estimate(EstimateConfig(hours=72), m)
    names = [r["stage"] for r in e["stages"]]
    assert {"read", "langid", "quality", "dedup_signatures", "dedup_components", "tokenise"} <= set(names)
    assert e["core_hours"] > 0 and e["cores_needed"] >= 1


def _q3(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), Q3_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "q3.cli", "data", "estimate", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli(tmp_path):
    p = _q3("tokens=36T", "cores=4096", "hours=72", f"input={_measured(tmp_path)}")
    assert p.returncode == 0, p.stderr
    assert "cost per stage" in p.stdout and "cluster for 72 h wall" in p.stdout and "wall time on 4,096 cores" in p.stdout
    bad = _q3("tokens=abc")
    assert bad.returncode == 2 and "tokens" in bad.stderr and "Traceback" not in bad.stderr
    missing = _q3(f"input={tmp_path / 'none.json'}")
    assert missing.returncode == 2 and "bench.stage_costs" in missing.stderr and "Traceback" not in missing.stderr
    helped = _q3("--help")
    assert helped.returncode == 0 and "tokens" in helped.stdout and "output tokens" in helped.stdout
