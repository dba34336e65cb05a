"""`q3 <area> <verb> --help` is generated from the verb's config model; `--print-config` shows the
resolved config; neither runs the verb."""

import pytest
import yaml

from q3.cli import AREAS, _load_verbs, main


def all_commands() -> list[list[str]]:
    out = []
    for area in AREAS:
        out += [[area] + ([name] if name else []) for name in _load_verbs(area)]
    return out


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: " ".join(c))
def test_every_verb_describes_its_keys(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"q3 {' '.join(command)}: ")
    assert "keys (key=value overrides" in out and "configs (--config NAME" in out and "examples:" in out
    keys = [line.split()[0] for line in out.split("keys (", 1)[1].split("\nexamples:")[0].splitlines()[1:] if line.strip()]
    assert len(keys) >= 2 and len(set(keys)) == len(keys)


def test_help_shows_type_default_and_meaning(capsys):
    assert main(["post", "distill", "--help"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("divergence "))
    assert "reverse | forward | jsd" in line and "'reverse'" in line
    line = next(x for x in out.splitlines() if x.strip().startswith("teacher "))
    assert "str | None" in line and "checkpoint directory" in line
    assert "optim.lr" in out and "distill" in out.split("configs", 1)[1].splitlines()[0]
    assert "q3 post distill --config distill phase=off_policy" in out       # examples from the docstring


def test_print_config_is_the_resolved_yaml_and_runs_nothing(tmp_path, capsys):
    assert main(["post", "distill", "--config", "distill", "optim.lr=3e-4", f"out_dir={tmp_path / 'x'}",
                 "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 3e-4 and cfg["optim"]["weight_decay"] == 0.0      # the file's other keys kept
    assert cfg["phase"] == "on_policy" and cfg["train_steps"] == cfg["rollout_steps"]   # derived
    assert not (tmp_path / "x").exists()
    assert main(["post", "distill", "optim.lr=fast", "--print-config"]) == 2          # still validated
    assert "optim.lr" in capsys.readouterr().err


def test_dashed_option_suggests_the_override(capsys):
    assert main(["post", "sft", "--train_steps", "10"]) == 2
    assert "train_steps=10" in capsys.readouterr().err
