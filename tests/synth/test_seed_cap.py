"""`max_seed_chars` cuts every template's seed (small CPU models need short prompts), and the
run's provenance says so: the template digest, hence the config hash, changes with it."""

from q3.config import load_config
from synth.engine import EngineConfig, _template, run_config_hash


def test_max_seed_chars_caps_templates_and_changes_the_hash():
    cfg = load_config(EngineConfig, "synth", "demo_llm", ["endpoint.model=m"])
    assert cfg.max_seed_chars == 600
    t = _template("textbook", cfg)
    assert t.max_input_chars == 600
    doc = {"id": "x", "text": "word " * 2000, "lang": "eng_Latn"}
    assert len(t.messages(doc)[-1]["content"]) < len(_template("textbook", cfg.model_copy(
        update={"max_seed_chars": None})).messages(doc)[-1]["content"]) - 5000
    assert run_config_hash(cfg) != run_config_hash(cfg.model_copy(update={"max_seed_chars": 700}))
