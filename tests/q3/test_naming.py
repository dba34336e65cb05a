"""One naming scheme (issue 14): `input`, `output`, `runner` at the top level; old names are
deprecated aliases that still work and log one warning line (q3/config.py `Q3Config.aliases`)."""

from __future__ import annotations

import logging

import pytest

from dataproc.config import PipelineConfig
from labeling.config import LabelConfig
from q3.config import ConfigError, check_names, load_config, validate
from synth.coldstart import ColdStartConfig
from synth.generators import VerifiableConfig


def _deprecations(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def test_label_run_runner_and_workdir_are_aliases(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = validate(LabelConfig, {"workdir": "w", "run": {"runner": "local", "partitions": 3}}, "my.yaml")
    assert (cfg.output, cfg.runner, cfg.run.partitions) == ("w", "local", 3)
    assert _deprecations(caplog) == ["my.yaml: key 'workdir' is deprecated, use 'output' (the old name still works)",
                                     "my.yaml: key 'run.runner' is deprecated, use 'runner' (the old name still works)"]
    # the repro: `q3 label run runner=local` is accepted at the top level, without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cfg = load_config(LabelConfig, "labeling", None, ["runner=local", "output=x"])
    assert (cfg.runner, cfg.output) == ("local", "x") and _deprecations(caplog) == []


def test_old_override_replaces_the_files_new_key(caplog):
    """`inputs=...` on the command line replaces conf/pipeline/default.yaml's `input:` as `input=` would."""
    with caplog.at_level(logging.WARNING):
        cfg = load_config(PipelineConfig, "pipeline", "default", ["inputs=[{path: a.jsonl, format: jsonl}]"])
    assert [(s.path, s.format) for s in cfg.input] == [("a.jsonl", "jsonl")]
    assert _deprecations(caplog) == ["override: key 'inputs' is deprecated, use 'input' (the old name still works)"]


def test_bare_input_path_is_accepted():
    cfg = load_config(PipelineConfig, "pipeline", "default", ["input=data/x.jsonl"])
    assert [(s.path, s.format) for s in cfg.input] == [("data/x.jsonl", "auto")]
    cfg = load_config(PipelineConfig, "pipeline", "default", ["input=[a.jsonl, {path: b.parquet, format: parquet}]"])
    assert [(s.path, s.format) for s in cfg.input] == [("a.jsonl", "auto"), ("b.parquet", "parquet")]


def test_constructor_aliases_and_conflicts(caplog):
    with caplog.at_level(logging.WARNING):
        assert VerifiableConfig(out="d").output == "d"
        assert ColdStartConfig(queries="q.jsonl").input == "q.jsonl"
    assert len(_deprecations(caplog)) == 2
    with pytest.raises(ConfigError, match="both 'workdir' \\(deprecated\\) and 'output' are set"):
        validate(LabelConfig, {"workdir": "a", "output": "b"})


def test_check_names():
    assert check_names(["synth"], ["data", "synth"], "step") == ["synth"]
    with pytest.raises(ConfigError, match="unknown step 'sinth' \\(did you mean 'synth'\\?\\); known: data, synth"):
        check_names(["sinth"], ["data", "synth"], "step")


def test_help_lists_deprecated_names():
    from q3.describe import help_text

    text = help_text(LabelConfig, "labeling")
    assert "deprecated names (still accepted): workdir -> output, run.runner -> runner" in text
    assert any(line.split()[:1] == ["runner"] for line in text.splitlines())
