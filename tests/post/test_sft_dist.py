"""`q3 post sft` under torchrun: 2 data-parallel processes give the losses of one process on the
same global batch (per-token loss over the whole global batch, packed sequences)."""

import json

import pytest
from post_helpers import TINY_SFT, run_q3

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def test_sft_dp2_equals_one_process(post_data, tmp_path):
    args = [*TINY_SFT, f"data=[{post_data / 'fusion.jsonl'}]", "train_steps=3", "valid_fraction=0.1", "save=false"]
    run_q3("post", "sft", *args, f"out_dir={tmp_path / 'one'}")
    run_q3("post", "sft", *args, "micro_batch_size=1", f"out_dir={tmp_path / 'dp2'}", nproc=2)
    rows = {k: [json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
            for k in ("one", "dp2")}
    assert [r["step"] for r in rows["dp2"]] == [1, 2, 3]
    for a, b in zip(rows["one"], rows["dp2"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 * max(1.0, abs(a["loss"])), (a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4 * max(1.0, a["grad_norm"])
