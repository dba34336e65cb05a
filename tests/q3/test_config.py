from typing import Literal

import pytest
from pydantic import Field

from q3.config import ConfigError, Q3Config, apply_overrides, config_hash, load_config, validate


class Inner(Q3Config):
    min_words: int = 50
    mode: Literal["fast", "exact"] = "fast"


class Outer(Q3Config):
    name: str = "x"
    inner: Inner = Field(default_factory=Inner)


def test_overrides_parse_yaml_values():
    out = apply_overrides({"inner": {"min_words": 1}}, ["inner.min_words=20", "name=abc", "inner.mode=exact"])
    cfg = validate(Outer, out)
    assert cfg.inner.min_words == 20 and cfg.name == "abc" and cfg.inner.mode == "exact"


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError) as e:
        validate(Outer, {"inner": {"min_wrds": 3}}, "t.yaml")
    msg = str(e.value)
    assert "inner.min_wrds" in msg and "did you mean 'min_words'" in msg


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        validate(Outer, {"inner": {"mode": "slow"}}, "t.yaml")
    assert "inner.mode" in str(e.value) and "'fast'" in str(e.value) and "'exact'" in str(e.value)


def test_load_from_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: from-file\ninner:\n  min_words: 7\n")
    cfg = load_config(Outer, "pipeline", p, ["inner.min_words=8"])
    assert cfg.name == "from-file" and cfg.inner.min_words == 8
    assert config_hash(cfg) == config_hash(cfg.model_dump())


def test_missing_named_config_lists_available():
    with pytest.raises(ConfigError, match="no pipeline config named"):
        load_config(Outer, "pipeline", "does-not-exist")


def test_overriding_one_key_of_a_section_keeps_its_other_defaults():
    from train.post.grpo import GRPOConfig

    cfg = load_config(GRPOConfig, "post", None, ["optim.lr=3e-4", "schedule.warmup_fraction=0.1"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.weight_decay == 0.0       # GRPO's default, not OptimConfig's 0.1
    assert cfg.schedule.decay == "constant" and cfg.schedule.warmup_fraction == 0.1
    assert load_config(GRPOConfig, "post", None, []).optim.weight_decay == 0.0
