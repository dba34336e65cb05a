"""Layering and one place per fact (issue 17 part H).

- The `q3` face (q3/cli.py) imports the areas; no area imports it (they use q3.verbs).
- Qwen3's special ids and marker strings are declared in q3/tokenizer.py only.
- File contracts (q3/contracts.py) read what the writers write, and name file and field when not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from q3.config import ConfigError
from q3.contracts import (
    CommitMarker,
    ContractError,
    CorpusStats,
    ProxyRunResult,
    StageResult,
    read_commit_marker,
    read_contract,
    read_stats,
)
from q3.errors import InputMissing
from q3.verbs import script_main, verb

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("q3", "dataproc", "train", "synth", "labeling", "bench")


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            out.append((rel, ast.parse(f.read_text(encoding="utf-8"), filename=rel)))
    assert len(out) > 100                      # the walk really saw the code base
    return out


SOURCES = _sources()


def _imports_cli(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "q3.cli" or a.name.startswith("q3.cli.") for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.module == "q3.cli" or (node.module == "q3" and any(a.name == "cli" for a in node.names))
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
        return any(isinstance(a, ast.Constant) and a.value == "q3.cli" for a in node.args)
    return False


def test_no_area_imports_the_command_line():
    offenders = [f"{rel}:{n.lineno}" for rel, tree in SOURCES if rel != "q3/cli.py"
                 for n in ast.walk(tree) if _imports_cli(n)]
    assert offenders == [], f"modules importing q3.cli (use q3.verbs): {offenders}"


def test_every_area_verb_is_a_lazy_q3_verb():
    from q3.cli import AREAS, _load_verbs

    for area in ("data", "mix", "train", "post", "synth", "label"):
        verbs = _load_verbs(area)
        assert verbs and all(getattr(fn, "target", "").count(":") == 1 for fn in verbs.values()), (area, AREAS[area])


def test_script_main_exit_codes_and_prog(capsys):
    def ok(config, overrides):
        """Say hello."""
        return 0

    assert script_main(ok, None, argv=["a=1"], prog="q3 x y") == 0

    def bad(config, overrides):
        raise ConfigError(f"unknown key {overrides[0]!r}")

    assert script_main(bad, None, argv=["nope=1"], prog="q3 x y") == 2
    assert capsys.readouterr().err.strip() == "q3 x y: unknown key 'nope=1'"
    v = verb("dataproc.jobs.decontam:cli", "decontam")
    assert v.__doc__ == "decontam" and v.target == "dataproc.jobs.decontam:cli"


def test_module_entry_point_runs_through_the_verb():
    """`python -m train.post.rl ...` (what torchrun runs) keeps `q3 post rl`'s messages and exit codes."""
    r = subprocess.run([sys.executable, "-m", "train.post.rl", "nope=1"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("q3 post rl: ") and "unknown key 'nope'" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- tokenizer facts once

SPECIAL_IDS = {151643, 151644, 151645, 151667, 151668}
SPECIAL_STRINGS = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"}


def test_special_ids_and_markers_are_declared_once():
    found = [f"{rel}:{n.lineno} {n.value!r}" for rel, tree in SOURCES if rel != "q3/tokenizer.py"
             for n in ast.walk(tree) if isinstance(n, ast.Constant)
             and (n.value in SPECIAL_STRINGS if isinstance(n.value, str) else
                  type(n.value) is int and n.value in SPECIAL_IDS)]
    assert found == [], f"take these from q3.tokenizer: {found}"


def test_generate_tokenizer_is_q3s():
    from q3 import tokenizer as qt
    from train import generate, hf_export, rollout

    assert generate.Tokenizer is qt.ChatTokenizer
    assert rollout.STOP_IDS is qt.STOP_IDS == frozenset({qt.EOD_ID, qt.IM_END_ID})
    assert hf_export.TOKENIZER_FILES is qt.TOKENIZER_FILES
    tok = generate.Tokenizer()
    assert tok.encode(qt.IM_END + qt.THINK + qt.END_THINK) == [qt.IM_END_ID, qt.THINK_ID, qt.END_THINK_ID]
    safe = tok.string_safe_ids
    assert len(safe) > 100_000 and safe.max() < qt.EOD_ID and tok.encode('"')[0] not in set(safe.tolist())


# ---------------------------------------------------------------- file contracts

RESULT = {"stage": "s1", "steps": 4, "tokens": 2048, "lr": 1e-4, "global_batch_size": 2, "seq_length": 256,
          "n_params": 1000, "n_params_active": 1000, "flops_per_token": 6000.0, "flops": 1.2e7,
          "final_train_loss": 9.5, "eval": {"start": 11.9, "end": 9.7}, "split": "90,10,0",
          "validation": ["web"], "validation_samples_per_dataset": 4, "checkpoint": "/x/iter_0000004",
          "val_loss": 9.8, "val_loss/web": 9.8}


def test_stage_result_reads_and_names_file_and_field(tmp_path):
    p = tmp_path / "result.json"
    p.write_text(json.dumps(RESULT))
    r = read_contract(StageResult, p)
    assert (r.steps, r.metric("val_loss"), r.val_losses) == (4, 9.8, {"web": 9.8})
    assert r.metric("val_loss/web") == 9.8
    no_val = {k: v for k, v in RESULT.items() if not k.startswith("val_loss")}
    p.write_text(json.dumps(no_val))
    with pytest.raises(ContractError, match=r"result.json: StageResult: missing field 'val_loss'"):
        read_contract(StageResult, p).metric("val_loss", p)
    p.write_text(json.dumps({k: v for k, v in RESULT.items() if k != "flops_per_token"}))
    with pytest.raises(ContractError) as e:
        read_contract(StageResult, p)
    assert str(e.value).startswith(f"{p}: StageResult: missing field 'flops_per_token'") and "\n" not in str(e.value)
    p.write_text(json.dumps(RESULT | {"steps": "many"}))
    with pytest.raises(ContractError, match="bad field 'steps'"):
        read_contract(StageResult, p)
    p.write_text("{not json")
    with pytest.raises(ContractError, match="not valid JSON"):
        read_contract(StageResult, p)
    with pytest.raises(InputMissing):
        read_contract(ProxyRunResult, tmp_path / "none.json")


def test_stage_result_matches_what_pretrain_writes():
    """Every key train/pretrain.py puts in its report is a declared field (the contract can't drift)."""
    tree = ast.parse((ROOT / "train/pretrain.py").read_text())
    reports = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
               and any(getattr(t, "id", None) == "report" for t in n.targets) and isinstance(n.value, ast.Dict)]
    assert len(reports) == 1
    written = {k.value for k in reports[0].keys if isinstance(k, ast.Constant)}
    assert written == set(StageResult.model_fields) - {"val_loss"}


def test_sweep_reads_result_json_through_the_contract(tmp_path):
    """A broken result.json left by a trainer run stops `q3 mix sweep` with one line naming it."""
    from dataproc.mix.sweep import SweepConfig, run_name, run_sweep

    cfg = SweepConfig(input=str(tmp_path / "m.yaml"), work_dir=str(tmp_path / "w"), budgets=[4096], lrs=[1e-3],
                      batch_sizes=[2], seq_length=256, validation=["web"], output=str(tmp_path / "sweep.json"))
    run = tmp_path / "w" / run_name(4096, 1e-3, 2)
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps(RESULT | {"tokens": -1}))
    with pytest.raises(ContractError, match=r"result.json: StageResult: bad field 'tokens'"):
        run_sweep(cfg)
    (run / "result.json").write_text(json.dumps(RESULT))          # a finished run is reused as is
    runs = run_sweep(cfg)
    assert runs[0]["loss"] == 9.8 and runs[0]["compute"] == 6000.0 * 4096 and runs[0]["steps"] == 4


def test_commit_marker_and_stats(tmp_path):
    from q3.atomic import atomic_dir

    with atomic_dir(tmp_path / "out", {"stage": "dedup", "docs_in": 3}) as tmp:
        (tmp / "stats.json").write_text(json.dumps({"docs_in": 3, "docs_kept": 2, "runner": "local"}))
    m = read_commit_marker(tmp_path / "out")
    assert isinstance(m, CommitMarker) and m.stage == "dedup" and m.model_extra == {"docs_in": 3}
    s = read_stats(tmp_path / "out")
    assert (s.docs_in, s.docs_kept, s.docs_rejected) == (3, 2, None)
    pipeline = CorpusStats.model_validate({"input_docs": 5, "kept_docs": 3, "rejected_docs": 2, "stages": []})
    pipeline.check_balance()
    with pytest.raises(ContractError, match="3 kept \\+ 1 rejected != 5 in"):
        CorpusStats.model_validate({"input_docs": 5, "kept_docs": 3, "rejected_docs": 1}).check_balance()
    m2 = CommitMarker.model_validate({"commit_id": "c1", "job_key": {"id": "k", "kind": "dedup", "input": "i"}})
    assert m2.job_key is not None and m2.job_key.kind == "dedup"


def test_optimize_reads_trainer_results_through_the_contract(tmp_path):
    from dataproc.mix.optimize import OptimizeConfig, _proxy_loss

    p = tmp_path / "result.json"
    cfg = OptimizeConfig(input="m.yaml", validation=["web"], proxy="trainer")
    assert _proxy_loss(cfg, RESULT, p) == 9.8
    with pytest.raises(ContractError, match="result.json: StageResult: missing field 'checkpoint'"):
        _proxy_loss(cfg, {k: v for k, v in RESULT.items() if k != "checkpoint"}, p)
    custom = cfg.model_copy(update={"proxy_command": ["my-trainer", "{out_dir}"], "result_key": "loss"})
    assert _proxy_loss(custom, {"loss": 2.5}, p) == 2.5         # a custom command only promises result_key
    with pytest.raises(ContractError, match="'loss' is not a number"):
        _proxy_loss(custom, {"loss": "n/a"}, p)
