"""`q3 mix optimize`: the RegMix fit recovers a known optimum; with real bigram proxies on the
sample corpus, validation on held-out multilingual web documents pulls weight to that dataset;
reruns resume. (The demo groups are tiny — ~15k tokens for some — so small groups give noisy
proxies; the test uses the largest group, web_multi, which is robust across seeds and budgets.)"""

import numpy as np
import pytest

from dataproc.mix.optimize import OptimizeConfig, fit, optimize, predict_best
from q3.manifest import load_manifest


def test_fit_and_predict_recover_known_optimum():
    rng = np.random.default_rng(0)
    target = np.array([0.5, 0.3, 0.15, 0.05])
    w = rng.dirichlet(np.ones(4), size=24)
    loss = 2.0 + ((w - target) ** 2).sum(axis=1) + rng.normal(0, 1e-3, size=24)
    coef, r2 = fit(w, loss, ridge=1e-6)
    assert r2 > 0.95
    best, pred = predict_best(coef, 4, 20_000, 50, np.full(4, 0.25), 1.0, rng)
    assert np.abs(best - target).max() < 0.06 and pred == pytest.approx(2.0, abs=0.01)


def test_ngram_proxies_move_weight_to_validation_language(demo_mix, tmp_path):
    _, paths = demo_mix
    cfg = OptimizeConfig(input=str(paths["demo_s1"]), validation=["web_multi"], n_runs=12,
                         proxy_tokens=60_000, work_dir=str(tmp_path / "runs"), output=str(tmp_path / "opt.yaml"))
    out, report = optimize(cfg)
    m = load_manifest(out)
    w = {d.name: d.weight for d in m.datasets}
    assert abs(sum(w.values()) - 1) < 1e-6
    assert w["web_multi"] == max(w.values()) and w["web_multi"] > 0.5     # base weight 0.3
    assert m.provenance["mixture_optimisation"]["fit_r2"] > 0.5
    first = out.read_bytes()
    # rerun: every proxy result is reused (resume), the manifest is byte-identical
    out2, _ = optimize(cfg)
    assert out2.read_bytes() == first
    assert len(list((tmp_path / "runs").glob("run-*/result.json"))) == 12


@pytest.mark.slow
def test_trainer_proxies_score_a_fixed_validation_set(demo_mix, tmp_path):
    """proxy=trainer: K real megatron-core runs (tiny MoE, a few steps each) on sampled mixtures;
    each writes result.json with the loss on the valid share of web_multi, then the fit runs."""
    import json

    _, paths = demo_mix
    cfg = OptimizeConfig(input=str(paths["demo_s1"]), validation=["web_multi"], n_runs=3, proxy="trainer",
                         proxy_steps=4, proxy_split="90,10,0",
                         proxy_overrides=["seq_length=64", "micro_batch_size=2", "global_batch_size=4",
                                          "validation_batches=1"],
                         work_dir=str(tmp_path / "runs"), output=str(tmp_path / "opt.yaml"))
    out, report = optimize(cfg)
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("run-*/train/result.json"))]
    assert len(results) == 3
    for r in results:
        assert r["steps"] == 4 and r["split"] == "90,10,0" and r["validation"] == ["web_multi"]
        assert r["validation_samples_per_dataset"] == 4
        assert 0 < r["val_loss"] < 13 and r["val_loss/web_multi"] == pytest.approx(r["val_loss"])
    assert len({round(r["val_loss"], 6) for r in results}) == 3      # different mixtures, different losses
    assert not list((tmp_path / "runs").glob("run-*/train/checkpoints/*"))   # save=false for proxies
    m = load_manifest(out)
    assert abs(sum(d.weight for d in m.datasets) - 1) < 1e-6
    assert m.provenance["mixture_optimisation"]["proxy"] == "trainer"
    assert report["best_run_val_loss"] == pytest.approx(min(r["val_loss"] for r in results), abs=1e-6)
