"""Resume: 20 steps straight == 10 steps + resume + 10 steps (identical losses), and the run learns."""

import json

import pytest


@pytest.mark.slow
def test_resume_gives_identical_losses(tmp_path, dev_manifests, pretrain, tiny):
    base = [*tiny, f"manifest={dev_manifests['S1']}", "train_steps=20"]
    straight = pretrain(tmp_path / "straight", base)
    first = pretrain(tmp_path / "split", [*base, "save_interval=10", "stop_after=10"])
    assert [r["step"] for r in first] == list(range(1, 11))
    second = pretrain(tmp_path / "split", [*base, "save_interval=10"])
    assert [r["step"] for r in second] == list(range(1, 21))   # metrics.jsonl appends 11..20
    a = [r["loss"] for r in straight]
    b = [r["loss"] for r in second]
    assert a[:10] == b[:10] and a[10:] == b[10:], (a, b)
    assert sum(a[-5:]) / 5 < sum(a[:5]) / 5 - 0.3          # it learns
    meta = json.loads((tmp_path / "split/checkpoints/iter_0000020/q3_meta.json").read_text())
    assert meta["consumed_samples"] == 20 * 4 and meta["step"] == 20
