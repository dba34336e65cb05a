"""The reward_model reward: normalisation and option checks. Scoring a trained reward model through
this reward: tests/post/test_reward_model.py."""

from __future__ import annotations

import math

import pytest

from q3.config import ConfigError
from train.post.rewards import build_reward
from train.post.rewards.rm import normalise


def test_normalise():
    assert normalise([0.0, 2.0], "sigmoid") == [0.5, pytest.approx(1 / (1 + math.exp(-2)))]
    assert normalise([1e6], "sigmoid", scale=1.0) == [pytest.approx(1.0)]          # no overflow
    z = normalise([1.0, 2.0, 3.0], "zscore")
    assert z == [pytest.approx(-math.sqrt(1.5)), 0.0, pytest.approx(math.sqrt(1.5))]
    assert normalise([5.0, 5.0], "zscore") == [0.0, 0.0] and normalise([3.0], "none") == [3.0]


def test_options_are_checked():
    with pytest.raises(ConfigError, match="path: Field required"):
        build_reward({"type": "reward_model"})
    with pytest.raises(ConfigError, match="normalise"):
        build_reward({"type": "reward_model", "path": "x", "normalise": "softmax"})
