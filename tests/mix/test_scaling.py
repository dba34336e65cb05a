"""`q3 mix scaling`: the fit math recovers known power laws from a sweep, and predictions land in
the stage manifests. (A sweep of real tiny runs is too slow for the default CPU suite; the fit is
tested on a sweep generated from a known loss surface.)"""

import json

import numpy as np
import pytest

from dataproc.mix.scaling import ScalingConfig, fit_scaling, predict, run_scaling
from q3.manifest import load_manifest


def _sweep(a_lr=0.3, b_lr=-0.125, a_bs=0.29, b_bs=0.33, seed=0):
    """Loss bowl in (log lr, log bs) centred on the true optimum, over a grid per compute budget."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in [1e17, 3e17, 1e18, 3e18, 1e19, 3e19]:
        lr0, bs0 = a_lr * c ** b_lr, a_bs * c ** b_bs
        for dl in np.linspace(-1.2, 1.2, 13):
            for db in np.linspace(-1.2, 1.2, 13):
                loss = 2.5 * c ** -0.05 * (1 + 0.02 * dl ** 2 + 0.01 * db ** 2) + rng.normal(0, 1e-5)
                runs.append({"compute": c, "lr": lr0 * np.exp(dl), "bs": bs0 * np.exp(db), "loss": loss})
    return runs


def test_fit_recovers_power_law_exponents():
    law = fit_scaling(_sweep(), near_optimal=0.003)
    assert law["lr"]["b"] == pytest.approx(-0.125, abs=0.01)
    assert law["bs"]["b"] == pytest.approx(0.33, abs=0.01)
    assert law["lr"]["r2"] > 0.99 and law["bs"]["r2"] > 0.99
    lr, bs = predict(law, 1e21)               # extrapolate two decades beyond the sweep
    assert lr == pytest.approx(0.3 * 1e21 ** -0.125, rel=0.1)
    assert bs == pytest.approx(0.29 * 1e21 ** 0.33, rel=0.1)


def test_predictions_written_per_stage(demo_mix, tmp_path):
    _, paths = demo_mix
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(_sweep()))
    man = tmp_path / "s2.yaml"
    man.write_bytes(paths["demo_s2"].read_bytes())
    res = run_scaling(ScalingConfig(sweep=str(sweep), n_params=6e8, stages=["demo_s1", "demo_s2"],
                                    manifests=[str(man)], output=str(tmp_path / "scaling.json")))
    s1, s2 = res["stages"]["demo_S1"], res["stages"]["demo_S2"]
    assert s1["compute"] == 6 * 6e8 * 2_000_000
    m = load_manifest(man)
    assert m.schedule.lr == pytest.approx(s2["lr"]) and m.schedule.global_batch_tokens == s2["global_batch_tokens"]
    assert "scaling_law" in m.provenance
