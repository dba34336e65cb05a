"""`q3 mix scaling`: the fit math recovers known power laws from a sweep, and predictions land in
the stage manifests. The fit math is checked on a sweep generated from a known loss surface; a
small sweep of real trainer runs (`q3 mix sweep`, marked slow) checks the tool end to end."""

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
    res = run_scaling(ScalingConfig(input=str(sweep), n_params=6e8, stages=["demo_s1", "demo_s2"],
                                    manifests=[str(man)], output=str(tmp_path / "scaling.json")))
    s1, s2 = res["stages"]["demo_S1"], res["stages"]["demo_S2"]
    assert s1["compute"] == 6 * 6e8 * 2_000_000
    m = load_manifest(man)
    assert m.schedule.lr == pytest.approx(s2["lr"]) and m.schedule.global_batch_tokens == s2["global_batch_tokens"]
    assert "scaling_law" in m.provenance


@pytest.mark.slow
def test_sweep_of_real_trainer_runs_feeds_the_fit(demo_mix, tmp_path):
    """`q3 mix sweep`: 2 budgets x 2 LRs x 2 batch sizes of the real tiny trainer on the demo S1
    mixture, scored on the fixed validation set; the output is what `q3 mix scaling` fits."""
    from dataproc.mix.sweep import SweepConfig, run_sweep

    _, paths = demo_mix
    cfg = SweepConfig(input=str(paths["demo_s1"]), validation=["web_multi"], seq_length=32,
                      budgets=[1024, 4096], lrs=[3e-3, 1e-2], batch_sizes=[2, 4], validation_batches=1,
                      work_dir=str(tmp_path / "runs"), output=str(tmp_path / "sweep.json"))
    runs = run_sweep(cfg)
    assert len(runs) == 8 and json.loads((tmp_path / "sweep.json").read_text()) == runs
    for r in runs:
        assert r["steps"] * r["bs"] == r["budget_tokens"] and 0 < r["loss"] < 13
    by_budget = {b: [r for r in runs if r["budget_tokens"] == b] for b in (1024, 4096)}
    assert len({r["compute"] for r in by_budget[1024]}) == 1          # one compute per budget
    assert by_budget[4096][0]["compute"] == pytest.approx(4 * by_budget[1024][0]["compute"])
    # four times the tokens: the best run of the larger budget reaches a lower validation loss
    assert min(r["loss"] for r in by_budget[4096]) < min(r["loss"] for r in by_budget[1024]) - 0.05
    law = fit_scaling(runs, near_optimal=0.0025)
    assert set(law) == {"lr", "bs", "optima"} and len(law["optima"]) == 2
    # rerun: every finished run is reused
    assert run_sweep(cfg) == runs
