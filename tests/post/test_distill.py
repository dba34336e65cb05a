"""`q3 post distill`: the chunked teacher/student divergence on real megatron models, both phases
end to end through the CLI (teacher data with provenance, SFT, on-policy KL, held-out eval,
resume), and the errors a user can cause."""

import json

import pytest
import torch
from post_helpers import run_q3

STUDENT = ["model=tiny_dense", "model_overrides={hidden_size: 32, ffn_hidden_size: 64}", "tensorboard=false",
           "seq_length=128", "log_interval=1", "max_tokens=6", "optim.lr=1e-3", "optim.min_lr=1e-3"]


def tiny(overrides: dict | None = None, seed: int = 0):
    from train.config import load_model_config
    from train.model import build_model, init_parallel

    init_parallel()
    cfg = load_model_config("tiny_dense", overrides or {})
    torch.manual_seed(seed)
    model = build_model(cfg, seq_length=128)
    with torch.no_grad():                 # perturb every weight: a distribution with some shape
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, cfg


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from train.hf_export import save_megatron

    model, cfg = tiny(seed=1)
    d = tmp_path_factory.mktemp("teacher")
    save_megatron(model, cfg, d)
    return d


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    from train.post.toy import addition_task

    rl, held, _ = addition_task(copies=1)
    d = tmp_path_factory.mktemp("prompts")
    (d / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rl[:12]))
    (d / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held[:4]))
    return d


def _batch():
    from train.post.distill import collate, rollout_rows

    g = torch.Generator().manual_seed(0)
    rows = [rollout_rows(torch.randint(0, 151_000, (p,), generator=g).tolist(),
                         torch.randint(0, 151_000, (r,), generator=g).tolist(), [True] * (r - 1) + [False])
            for p, r in ((5, 7), (3, 4))]
    return collate(rows)


def test_divergence_is_chunk_invariant_and_zero_against_itself():
    from train.post.distill import divergence_per_token, teacher_states

    teacher, _ = tiny(seed=1)
    student, _ = tiny({"hidden_size": 32, "ffn_hidden_size": 64}, seed=2)
    batch = _batch()
    m = batch["loss_mask"]
    assert m.sum() == 6 + 3 and m[0, :4].sum() == 0            # prompt and forced tokens: no loss
    th = teacher_states(teacher, batch)
    results = []
    for chunk in (2, 1000):
        student.zero_grad()
        loss, rkl = divergence_per_token(student, th, teacher, batch, "reverse", chunk_size=chunk)
        (loss * m).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
        results.append((loss.detach(), grad))
        assert torch.equal(loss.detach(), rkl) and (loss[m.bool()] > 0).all() and (loss[~m.bool()] == 0).all()
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)
    for kind in ("forward", "jsd"):
        with torch.no_grad():
            loss, rkl = divergence_per_token(student, th, teacher, batch, kind, top_k=16)
        assert (loss[m.bool()] >= 0).all() and torch.allclose(rkl, results[1][0], atol=1e-5)
    with torch.no_grad():                                       # a student equal to its teacher
        same, _ = divergence_per_token(teacher, th, teacher, batch)
    assert same.abs().max() < 1e-5


def test_off_policy_then_on_policy(tmp_path, teacher, prompts):
    off, on = tmp_path / "off", tmp_path / "on"
    common = [f"teacher={teacher}", f"prompts=[{prompts / 'rl.jsonl'}]", f"eval_pairs={prompts / 'held.jsonl'}",
              "eval_k=2", *STUDENT]
    run_q3("post", "distill", "--config", "distill", "phase=off_policy", "load=null", *common, "train_steps=2",
           "micro_batch_size=4", "global_batch_size=4", "keep_truncated=true", "eval_interval=1", f"out_dir={off}")
    rows = [json.loads(x) for x in (off / "teacher_data.jsonl").read_text().splitlines()]
    assert len(rows) == 12 * 2 and {r["mode"] for r in rows} == {"think", "no_think"}
    assert all(r["source"] == "distill:teacher" and r["teacher"] == str(teacher) for r in rows)
    assert all(r["messages"][0]["content"].endswith("/" + r["mode"]) for r in rows)
    assert json.loads((off / "teacher_data.json").read_text())["truncated"] == 24   # a random teacher rambles
    res = json.loads((off / "result.json").read_text())
    assert set(res["eval"]) >= {"start", "step_1", "end", "loss"} and res["eval"]["end"]["kl_to_teacher"] > 0
    assert res["stage"] == "distill/off_policy" and res["steps"] == 2

    stamp = (off / "teacher_data.jsonl").stat().st_mtime_ns     # a rerun reuses the teacher's replies
    run_q3("post", "distill", "--config", "distill", "phase=off_policy", "load=null", *common, "train_steps=2",
           "micro_batch_size=4", "global_batch_size=4", "keep_truncated=true", f"out_dir={off}")
    assert (off / "teacher_data.jsonl").stat().st_mtime_ns == stamp

    run_q3("post", "distill", "--config", "distill", "phase=on_policy", f"load={off}", *common, "rollout_steps=2",
           "prompts_per_step=4", "micro_batch_size=2", "thinking_budget=2", f"out_dir={on}")
    hist = [json.loads(x) for x in (on / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [1, 2]
    for h in hist:
        assert h["distill/divergence"] > 0 and h["distill/reverse_kl"] == pytest.approx(h["distill/divergence"])
        assert h["distill/student_share"] == 1.0 and 0 < h["distill/response_length"] <= 6
    res = json.loads((on / "result.json").read_text())
    assert res["stage"] == "distill/on_policy" and res["divergence"] == "reverse"
    assert res["eval"]["start"]["kl_to_teacher"] == pytest.approx(
        json.loads((off / "result.json").read_text())["eval"]["end"]["kl_to_teacher"], rel=1e-4)


def test_bad_input_is_one_line(tmp_path, teacher, prompts):
    p = run_q3("post", "distill", "phase=on_policy", f"prompts=[{prompts / 'rl.jsonl'}]", f"teacher={tmp_path}",
               "load=null", *STUDENT, check=False)
    assert p.returncode == 2 and f"teacher={tmp_path}: no complete checkpoint there" in p.stderr
    (tmp_path / "config.json").write_text("{}")
    p = run_q3("post", "distill", "phase=on_policy", f"prompts=[{prompts / 'rl.jsonl'}]", f"teacher={tmp_path}",
               "load=null", *STUDENT, check=False)
    assert p.returncode == 2 and "q3 train import-hf" in p.stderr and "Traceback" not in p.stderr
    p = run_q3("post", "distill", "phase=on_policy", f"teacher={teacher}", *STUDENT, check=False)
    assert p.returncode == 2 and "needs prompts=" in p.stderr
    p = run_q3("post", "distill", "divergence=kl", f"teacher={teacher}", check=False)
    assert p.returncode == 2 and "divergence" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.dist
@pytest.mark.slow
def test_on_policy_dp2_equals_one_process(tmp_path, teacher, prompts):
    """2 data-parallel processes sample the same replies (seeded per prompt) and give the losses and
    gradient norms of one process on the same global batch (GKD mixture: some replies by the teacher)."""
    args = [f"teacher={teacher}", "load=null", f"prompts=[{prompts / 'rl.jsonl'}]", *STUDENT, "rollout_steps=3",
            "prompts_per_step=4", "micro_batch_size=2", "save=false", "lmbda=0.5", "divergence=jsd"]
    run_q3("post", "distill", "phase=on_policy", *args, f"out_dir={tmp_path / 'one'}")
    run_q3("post", "distill", "phase=on_policy", *args, "micro_batch_size=1", f"out_dir={tmp_path / 'dp2'}", nproc=2)

    def rows(d):
        return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]

    one, two = rows(tmp_path / "one"), rows(tmp_path / "dp2")
    assert [r["step"] for r in two] == [1, 2, 3]
    assert 0 < min(r["distill/student_share"] for r in one) < 1       # both wrote replies
    for a, b in zip(one, two, strict=True):
        assert a["distill/response_length"] == b["distill/response_length"]
        assert a["distill/student_share"] == b["distill/student_share"]
        for k in ("loss", "distill/reverse_kl"):
            assert abs(a[k] - b[k]) < 1e-5 * max(1.0, abs(a[k])), (k, a[k], b[k])
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4 * max(1.0, a["grad_norm"])
