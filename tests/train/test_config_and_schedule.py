"""Model shapes match the published Qwen3 sizes; LR schedules behave as documented."""

import pytest

from q3.config import ConfigError, load_config
from train.config import ModelConfig, TrainConfig, load_model_config
from train.schedule import LRSchedule

# (name, total params, active params) from the Qwen3 model cards / technical report
PUBLISHED = {
    "qwen3_0.6b": (0.6e9, None), "qwen3_1.7b": (1.7e9, None), "qwen3_4b": (4.0e9, None),
    "qwen3_8b": (8.2e9, None), "qwen3_14b": (14.8e9, None), "qwen3_32b": (32.8e9, None),
    "qwen3_30b_a3b": (30.5e9, 3.3e9), "qwen3_235b_a22b": (235e9, 22e9),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_shapes(name):
    cfg = load_model_config(name)
    total, active = PUBLISHED[name]
    n = cfg.num_params()
    # the model cards round: 0.6B is 0.596B, 1.7B is 2.03B with embeddings (1.4B without)
    tol = 0.25 if name == "qwen3_1.7b" else 0.05
    assert abs(n - total) / total < tol, (name, n)
    if active:
        assert abs(cfg.num_params(active=True) - active) / active < 0.05
        assert cfg.num_experts == 128 and cfg.moe_router_topk == 8
        assert cfg.moe_shared_expert_intermediate_size is None
        assert cfg.moe_router_load_balancing_type == "global_aux_loss"
    assert cfg.tie_word_embeddings == (name in ("qwen3_0.6b", "qwen3_1.7b", "qwen3_4b"))
    assert cfg.padded_vocab_size == 151936 and cfg.kv_channels == 128


def test_tiny_configs_and_errors():
    assert load_model_config("tiny_moe").is_moe
    assert not load_model_config("tiny_dense").is_moe
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TrainConfig, "train", "demo_s1", ["micro_batch=3"])
    with pytest.raises(ValueError):
        ModelConfig(name="x", num_layers=1, hidden_size=8, num_attention_heads=3, num_query_groups=2,
                    ffn_hidden_size=8)


def test_schedules():
    cos = LRSchedule(lr=1.0, min_lr=0.1, total_steps=100, warmup_steps=10, decay="cosine")
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(99) == pytest.approx(0.1, abs=1e-3)
    fast = LRSchedule(lr=1.0, min_lr=0.1, total_steps=100, warmup_steps=10, decay="cosine", decay_fraction=0.5)
    assert fast(55) == pytest.approx(0.1) and fast(30) < cos(30)        # S2: faster decay
    wsd = LRSchedule(lr=1.0, min_lr=0.1, total_steps=100, warmup_steps=10, decay="wsd", decay_fraction=0.2)
    assert wsd(70) == 1.0 and wsd(99) == pytest.approx(0.1) and 0.1 < wsd(90) < 1.0
    assert all(cos(s) >= cos(s + 1) for s in range(10, 99))


def test_loss_guard_skips_nan_and_spikes():
    from train.config import GuardConfig
    from train.pretrain import LossGuard, flops_per_token

    g = LossGuard(GuardConfig(spike_factor=2.0, min_history=3))
    assert g.check(float("nan")) == "non-finite loss"
    assert g.check(float("inf")) == "non-finite loss"
    for x in (5.0, 5.0, 5.0):
        assert g.check(x) is None
        g.update(x)
    assert g.check(11.0).startswith("loss spike")
    assert g.check(9.0) is None
    s = g.state()
    g2 = LossGuard(GuardConfig())
    g2.load(s)
    assert g2.state() == s
    # MFU numerator: 6 x active params dominates; the 30B-A3B costs like a ~3B dense model per token
    m = load_model_config("qwen3_30b_a3b")
    assert 6 * 3.0e9 < flops_per_token(m, 4096) < 6 * 4.0e9
