import subprocess
import sys

from q3.cli import main, parse_args


def test_parse_args():
    assert parse_args(["--config", "a.yaml", "x.y=1", "z=t"]) == ("a.yaml", ["x.y=1", "z=t"], None)
    assert parse_args(["x=1", "--print-config"])[2] == "print" and parse_args(["-h"])[2] == "help"


def test_help_lists_areas(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for area in ("data", "mix", "train", "label", "synth", "serve", "demo"):
        assert area in out


def test_unknown_area_and_verb_exit_2(capsys):
    assert main(["nope"]) == 2
    assert main(["data", "nope"]) == 2
    assert "unknown verb" in capsys.readouterr().err


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "q3.cli", "data", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "sample" in r.stdout
