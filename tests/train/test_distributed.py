"""torchrun on CPU (gloo): data parallelism == one process; global-batch LBL counts; EP=2."""

import pytest

pytestmark = [pytest.mark.dist, pytest.mark.slow]

COMMON = ["model=tiny_moe", "seq_length=64", "global_batch_size=4", "train_steps=8", "log_interval=1"]


def test_dp2_matches_single_process_and_lbl_counts_are_global(tmp_path, dev_manifests, pretrain):
    m = f"manifest={dev_manifests['S1']}"
    # one process: 2 microbatches of 2 sequences; two ranks: 2 microbatches of 1 sequence each.
    # Either way a step sees the same 4 sequences, and each microbatch index k covers the same 2.
    single = pretrain(tmp_path / "dp1", [*COMMON, m, "micro_batch_size=2"])
    dp2 = pretrain(tmp_path / "dp2", [*COMMON, m, "micro_batch_size=1"], nproc=2)
    a, b = [r["loss"] for r in single], [r["loss"] for r in dp2]
    print("dp1 losses", a)
    print("dp2 losses", b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 2e-4, (a, b)
    assert b[-1] < b[0]
    # global-batch load balancing: megatron's counters summed both microbatches of both ranks ...
    topk, tokens_per_seq = 2, 64
    for row in dp2:
        assert row["moe/step_microbatches"] == 2
        assert row["moe/step_routed_tokens"] == 4 * tokens_per_seq * topk   # 2 mb x 2 ranks x 1 seq
        assert row["moe/counters_after_step"] == 0.0                       # ... and were reset
    for row in single:
        assert row["moe/step_routed_tokens"] == 4 * tokens_per_seq * topk
        assert row["moe/counters_after_step"] == 0.0


def test_expert_parallel_2_ranks(tmp_path, dev_manifests, pretrain):
    m = f"manifest={dev_manifests['S1']}"
    ep = pretrain(tmp_path / "ep2", [*COMMON, m, "micro_batch_size=1", "parallel.expert_model_parallel_size=2"],
                  nproc=2)
    losses = [r["loss"] for r in ep]
    print("ep2 losses", losses)
    assert losses[-1] < losses[0] - 0.1
    assert all(r["moe/counters_after_step"] == 0.0 for r in ep)
    assert (tmp_path / "ep2/checkpoints/iter_0000008/_Q3_SUCCESS").exists()
