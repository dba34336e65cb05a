"""The reward_model reward: normalisation, the clear error while train/post/reward_model.py is
not merged, and a live check that runs once it is (skipped until then)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from q3.config import ConfigError
from train.post.rewards import RewardInput, build_reward
from train.post.rewards.rm import normalise

HAVE_RM = importlib.util.find_spec("train.post.reward_model") is not None


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


@pytest.mark.skipif(HAVE_RM, reason="train.post.reward_model is present")
def test_missing_module_is_a_clear_error():
    with pytest.raises(ConfigError, match="reward_model: train.post.reward_model is not available"):
        build_reward({"type": "reward_model", "path": "runs/rm"})


@pytest.mark.skipif(not HAVE_RM, reason="train.post.reward_model is not merged yet")
def test_live_scorer(tmp_path):
    """Once merged: a checkpoint the module can build for tests (`tiny_checkpoint(dir)`), scored
    through the reward; sigmoid scores in (0, 1) and in input order (same reply -> same score)."""
    from train.post import reward_model

    make = getattr(reward_model, "tiny_checkpoint", None)
    if make is None:
        pytest.skip("train.post.reward_model has no tiny_checkpoint(dir) helper for tests")
    path = make(tmp_path)
    r = build_reward({"type": "reward_model", "path": str(path), "normalise": "sigmoid"})
    q = [{"role": "user", "content": "Say hi"}]
    res = r.score([RewardInput(q, "hi", {}), RewardInput(q, "<think>\nx\n</think>\n\nhello", {}),
                   RewardInput(q, "hi", {})])
    assert all(0.0 < x.score < 1.0 and x.details["reason"] == "ok" for x in res)
    assert res[0].score == pytest.approx(res[2].score)
