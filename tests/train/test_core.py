"""train.core.Trainer, the core post-training algorithms plug into: custom loss/forward functions
and their summed metrics, packed sequences (explicit positions + block-diagonal mask), global
per-token loss normalisation, and kill/resume without duplicate metrics rows.

megatron's parallel state and the CPU shims are process-global, so the scenarios run once in a
fresh process (this file, run as a script) and the tests check what it reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEQ = 32


# ----------------------------------------------------------------------------- the worker
def _batch(seed: int, rows: int, seq: int = SEQ) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 1000, (rows, seq + 1), generator=g)
    return {"tokens": x[:, :-1], "labels": x[:, 1:], "loss_mask": torch.ones(rows, seq)}


def _split(batch: dict, mb: int) -> list[dict]:
    n = batch["tokens"].shape[0]
    return [{k: v[i:i + mb] for k, v in batch.items()} for i in range(0, n, mb)]


def _trainer(out: Path, **overrides):
    from train.config import CoreConfig, load_model_config
    from train.core import Trainer, schedule_from_config

    cfg = CoreConfig.model_validate({"model": "tiny_dense", "micro_batch_size": 2, "global_batch_size": 4,
                                     "train_steps": 4, "save_interval": 2, "tensorboard": False,
                                     "optim": {"lr": 3e-3}, **overrides})
    return Trainer(cfg, load_model_config(cfg.model), SEQ, 10000.0, schedule_from_config(cfg), out,
                   meta={"stage": "core-test"})


def custom_loss_and_metrics(out: Path) -> dict:
    """(a) forward_fn returns logits, loss_fn computes CE from them and counts sequences."""
    import torch.nn.functional as F

    calls = {"forward": 0, "loss": 0}

    def logits_fn(model, b):
        calls["forward"] += 1
        return model(b["tokens"], b["position_ids"], b["attention_mask"])          # no labels: logits

    def ce_loss(logits, b):
        calls["loss"] += 1
        ce = F.cross_entropy(logits.float().flatten(0, 1), b["labels"].flatten(), reduction="none")
        mask = b["loss_mask"].flatten()
        return (ce * mask).sum(), mask.sum(), {"seqs": b["tokens"].new_tensor(b["tokens"].shape[0]).float(),
                                               "microbatches": mask.new_tensor(1.0)}

    t = _trainer(out)
    mbs = _split(_batch(0, 4), 2)
    default = t.forward_only(mbs, 2)
    custom = t.forward_only(mbs, 2, loss_fn=ce_loss, forward_fn=logits_fn)
    step = t.train_step(mbs, 2, loss_fn=ce_loss, forward_fn=logits_fn)
    row = t.log_step(step, extra=7.0)
    after = t.forward_only(mbs, 2)
    t.close()
    return {"default": default, "custom": custom, "step_loss": step.loss, "step_metrics": step.metrics,
            "grad_norm": step.grad_norm, "skipped": step.skipped, "after": after["loss"], "calls": calls,
            "row": row, "trainer_step": t.step}


def packed_sequences(out: Path) -> dict:
    """(b) two rows, each packing two documents: positions restart per document, the mask is
    block-diagonal causal. Per-token losses must equal each document run on its own."""
    import torch

    lengths = [(20, 12), (10, 22)]
    batch = _batch(1, 2)
    seg = torch.tensor([[0] * a + [1] * b for a, b in lengths])
    batch["position_ids"] = torch.stack([torch.cat([torch.arange(a), torch.arange(b)]) for a, b in lengths])
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    batch["attention_mask"] = (~allowed).unsqueeze(1)                          # [2,1,s,s], True = masked
    seen: list = []

    def keep(per_token, b):
        seen.append(per_token.detach().clone())
        return (per_token * b["loss_mask"]).sum(), b["loss_mask"].sum(), {}

    t = _trainer(out)
    t.forward_only([batch], 1, loss_fn=keep)
    packed = seen.pop()
    gap = 0.0
    for r, (a, b) in enumerate(lengths):
        for lo, hi in ((0, a), (a, a + b)):
            doc = {k: batch[k][r:r + 1, lo:hi] for k in ("tokens", "labels", "loss_mask")}
            t.forward_only([doc], 1, loss_fn=keep)
            gap = max(gap, float((seen.pop()[0] - packed[r, lo:hi]).abs().max()))
    res = t.train_step([batch], 1)
    t.close()
    return {"max_gap": gap, "loss": res.loss, "grad_norm": res.grad_norm, "n_tokens": res.n_tokens}


def per_token_normalisation(out: Path) -> dict:
    """(d) microbatches with 4 and 28 loss tokens: with per_token_loss the gradient is the global
    token mean, the same as one microbatch holding both rows; megatron's per-microbatch mean is not.
    lr 0: the step measures the pre-clip gradient norm without moving the weights."""
    from train.schedule import LRSchedule

    batch = _batch(2, 2)
    batch["loss_mask"][0, 4:] = 0
    res = {}
    for per_token in (True, False):
        t = _trainer(out / str(per_token), per_token_loss=per_token)
        t.schedule = LRSchedule(lr=0.0, min_lr=0.0, total_steps=4, warmup_steps=0, decay="constant")
        two = t.train_step(_split(batch, 1), 2)
        one = t.train_step([batch], 1)
        res[str(per_token)] = {"two": two.grad_norm, "one": one.grad_norm, "loss2": two.loss, "loss1": one.loss}
        t.close()
    return res


def kill_and_resume(out: Path) -> dict:
    """(c) save every 2 steps, die after step 3, rerun: the run resumes at 2, replays 3, ends at 4."""
    def run(trainer, until):
        losses = {}
        metas.append(trainer.resume())
        while trainer.step < until:
            r = trainer.train_step(_split(_batch(100 + trainer.step, 4), 2), 2)
            trainer.log_step(r)
            trainer.maybe_save()
            losses[r.step] = r.loss
        return losses

    metas: list = []
    first = _trainer(out)
    first.meta["eval_start"] = 1.25                      # run state an algorithm keeps in the checkpoint
    killed = run(first, 3)
    first.close()
    second = _trainer(out)
    resumed = run(second, 4)
    meta = json.loads((out / "checkpoints/iter_0000004/q3_meta.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"killed": killed, "resumed": resumed, "steps": [r["step"] for r in rows],
            "row_losses": {r["step"]: r["loss"] for r in rows}, "meta_step": meta["step"],
            "resumed_from": metas[1] and metas[1]["step"], "eval_start": metas[1] and metas[1].get("eval_start"),
            "fresh": metas[0] is None, "stage": meta.get("stage")}


SCENARIOS = {"custom": custom_loss_and_metrics, "packed": packed_sequences,
             "per_token": per_token_normalisation, "resume": kill_and_resume}


def main(out: Path) -> None:
    from train.model import destroy_parallel

    report = {name: fn(out / name) for name, fn in SCENARIOS.items()}
    destroy_parallel()
    print("REPORT " + json.dumps(report))


# ----------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import child_env

    out = tmp_path_factory.mktemp("core")
    p = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=child_env(Q3_PROGRESS="0"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    line = [x for x in p.stdout.splitlines() if x.startswith("REPORT ")][-1]
    return {**json.loads(line[len("REPORT "):]), "stderr": p.stderr}


def test_trainer_logs_are_quiet(report):
    """megatron's INFO lines (DDP bucket parameter lists, optimizer config) and the TE/APEX
    'not installed' warnings are filtered by q3.log (Q3_VERBOSE=1 / verbose=true shows them)."""
    err = report["stderr"]
    assert "Params for bucket" not in err and "INFO megatron" not in err and "Apex" not in err, err[-3000:]


def test_custom_loss_and_forward_fn_are_used_and_metrics_summed(report):
    r = report["custom"]
    assert r["calls"] == {"forward": 4, "loss": 4}              # 2 microbatches x (forward_only + train_step)
    # CE from the logits == megatron's fused per-token CE, on the same 4 x 32 tokens
    assert r["custom"]["n_tokens"] == r["default"]["n_tokens"] == 4 * SEQ
    assert r["custom"]["loss"] == pytest.approx(r["default"]["loss"], abs=1e-4)
    assert r["custom"]["seqs"] == 4 and r["custom"]["microbatches"] == 2
    assert r["step_metrics"] == {"seqs": 4.0, "microbatches": 2.0}
    assert r["step_loss"] == pytest.approx(r["default"]["loss"], abs=1e-4)
    assert not r["skipped"] and r["grad_norm"] > 0 and r["trainer_step"] == 1
    assert r["after"] < r["default"]["loss"] - 0.01              # its gradient trained the model
    assert r["row"]["seqs"] == 4.0 and r["row"]["extra"] == 7.0 and r["row"]["step"] == 1


def test_packed_batch_equals_documents_alone(report):
    r = report["packed"]
    assert r["max_gap"] < 1e-4, r
    assert r["n_tokens"] == 2 * SEQ and 0 < r["loss"] < 20 and r["grad_norm"] > 0


def test_per_token_loss_normalises_over_the_global_batch(report):
    tok, mb = report["per_token"]["True"], report["per_token"]["False"]
    # the reported loss is the global token mean either way
    assert tok["loss2"] == pytest.approx(tok["loss1"], rel=1e-5) and mb["loss2"] == pytest.approx(tok["loss2"])
    assert tok["two"] == pytest.approx(tok["one"], rel=1e-4)    # 2 microbatches == 1 holding both rows
    assert mb["one"] == pytest.approx(tok["one"], rel=1e-4)
    assert abs(mb["two"] - mb["one"]) > 1e-3 * mb["one"]        # the per-microbatch mean weights rows differently


def test_resume_after_kill_logs_each_step_once(report):
    r = report["resume"]
    assert r["steps"] == [1, 2, 3, 4]
    assert r["resumed"]["3"] == r["killed"]["3"]                # the replayed step is the same step
    assert r["row_losses"]["3"] == r["resumed"]["3"] and r["row_losses"]["4"] == r["resumed"]["4"]
    assert r["fresh"] and r["resumed_from"] == 2 and r["eval_start"] == 1.25     # resume() returns the meta
    assert r["meta_step"] == 4 and r["stage"] == "core-test"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
