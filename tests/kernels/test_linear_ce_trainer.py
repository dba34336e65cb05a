"""`triton_kernels: [linear_ce]` in the trainer's default LM loss: the same per-token losses,
parameter gradients and updates as megatron's full-logits path over two training steps (tiny
dense model, tied and untied output weight, both loss normalisations), without the output
layer ever running. In a fresh process: megatron's parallel state is process-global."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SEQ = 8

PROBE = r"""
import json, sys, torch
import kernels.linear_ce as lce
from train.config import CoreConfig, load_model_config
from train.core import Trainer, schedule_from_config
from train.kernel_spec import linear_ce_lm_loss
from train.model import destroy_parallel

SEQ = @SEQ@
calls = {"lce": 0}
real = lce.linear_cross_entropy
def spy(*a, **k):
    calls["lce"] += 1
    return real(*a, **k)
lce.linear_cross_entropy = spy

def batches(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 5000, (4, SEQ + 1), generator=g)
    mask = torch.ones(4, SEQ)
    mask[0, :3] = 0                       # a prompt: unequal loss tokens per microbatch
    mask[3, 5:] = 0
    b = {"tokens": x[:, :-1], "labels": x[:, 1:], "loss_mask": mask}
    return [{k: v[i:i + 2] for k, v in b.items()} for i in (0, 2)]

def run(out, tied, per_token, kernels):
    cfg = CoreConfig.model_validate({"model": "tiny_dense", "micro_batch_size": 2, "global_batch_size": 4,
                                     "train_steps": 2, "save": False, "tensorboard": False,
                                     "per_token_loss": per_token, "optim": {"lr": 1e-2}})
    # a 5,000-row vocabulary (2 of the kernel's vocab blocks, the last partial) keeps the interpreter
    # quick; tests/kernels/test_triton_linear_ce.py runs the kernel at Qwen3's 151,936 rows
    mcfg = load_model_config("tiny_dense", {"tie_word_embeddings": tied, "triton_kernels": kernels,
                                            "vocab_size": 5000, "padded_vocab_size": 5000})
    t = Trainer(cfg, mcfg, SEQ, 10000.0, schedule_from_config(cfg), out, meta={"stage": "lce-test"})
    head = t.model.output_layer
    head_calls = [0]
    head.register_forward_hook(lambda *a: head_calls.__setitem__(0, head_calls[0] + 1))
    mbs = batches(0)
    seen = []
    def keep(per_token, b):               # the default path's per-token CE, [mb, s]
        seen.append(per_token.detach().clone())
        return (per_token * b["loss_mask"]).sum(), b["loss_mask"].sum(), {}
    if kernels:
        with torch.no_grad():
            per_tok = torch.cat([linear_ce_lm_loss(t.ddp, t._on_device(mb))[1] for mb in mbs])
    else:
        t.forward_only(mbs, 2, loss_fn=keep)
        per_tok = torch.cat(seen)
    head_calls[0] = calls["lce"] = 0
    res = {"per_token": per_tok, "losses": [], "grads": []}
    res["eval"] = t.forward_only(mbs, 2)["loss"]
    for step in range(2):
        r = t.train_step(batches(step + 1), 2)
        res["losses"].append(r.loss)
        res["grads"].append({n: p.main_grad.detach().clone() for n, p in t.model.named_parameters()})
    res["params"] = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    res["head_calls"], res["lce_calls"] = head_calls[0], calls["lce"]
    t.close()
    return res

out = {}
for tied, per_token in ((True, True), (False, False)):
    base = run(sys.argv[1] + f"/b{tied}", tied, per_token, [])
    kern = run(sys.argv[1] + f"/k{tied}", tied, per_token, ["linear_ce"])
    gerr = max((gb[n] - gk[n]).abs().max().item() for gb, gk in zip(base["grads"], kern["grads"]) for n in gb)
    gmax = max(g.abs().max().item() for gb in base["grads"] for g in gb.values())
    head = "embedding.word_embeddings.weight" if tied else "output_layer.weight"
    out[f"tied={tied}"] = {
        "per_token_err": (base["per_token"] - kern["per_token"]).abs().max().item(),
        "per_token_shape": list(kern["per_token"].shape),
        "loss_err": max(abs(a - b) for a, b in zip(base["losses"], kern["losses"])),
        "losses": kern["losses"], "eval_err": abs(base["eval"] - kern["eval"]),
        "grad_err": gerr, "grad_max": gmax, "n_params": len(base["grads"][0]),
        "same_names": sorted(base["grads"][0]) == sorted(kern["grads"][0]),
        "head_grad": kern["grads"][0][head].abs().max().item(),
        "head_grad_err": max((gb[head] - gk[head]).abs().max().item()
                             for gb, gk in zip(base["grads"], kern["grads"])),
        "param_err": max((base["params"][n] - kern["params"][n]).abs().max().item() for n in base["params"]),
        "head_calls": [base["head_calls"], kern["head_calls"]], "lce_calls": kern["lce_calls"]}
destroy_parallel()
print("REPORT " + json.dumps(out))
""".replace("@SEQ@", str(SEQ))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", Q3_PROGRESS="0")
    out = tmp_path_factory.mktemp("lce")
    p = subprocess.run([sys.executable, "-c", PROBE, str(out)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    line = [x for x in p.stdout.splitlines() if x.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


@pytest.mark.parametrize("case", ["tied=True", "tied=False"])
def test_linear_ce_loss_matches_full_logits(report, case):
    r = report[case]
    print(case, r)
    # the kernel computed the loss, the 151,936-way output layer never ran (the default path: it did)
    assert r["head_calls"][0] > 0 and r["head_calls"][1] == 0, r["head_calls"]
    assert r["lce_calls"] == 2 + 2 * 2                  # forward_only + 2 steps, 2 microbatches each
    assert r["per_token_shape"] == [4, SEQ] and r["per_token_err"] < 1e-4, r
    assert r["eval_err"] < 1e-5 and r["loss_err"] < 1e-5, r
    assert 7 < r["losses"][0] < 10                      # ~log(5,000) = 8.5 at init: a real CE
    assert r["same_names"] and r["n_params"] >= 10
    assert r["grad_err"] <= 1e-5 * max(1.0, r["grad_max"]), r   # every parameter, both steps
    assert r["head_grad"] > 0 and r["head_grad_err"] < 1e-6, r  # tied embedding / output_layer.weight
    # the same updates: AdamW normalises each gradient element, so where one is ~0 its rounding
    # noise can move a weight by up to lr (1e-2); 1e-3 still catches any real difference
    assert r["param_err"] < 1e-3, r


def test_config_rejects_what_linear_ce_cannot_do():
    from q3.config import ConfigError
    from train.config import load_model_config
    from train.core import check_linear_ce  # importing it does not import megatron

    with pytest.raises(ConfigError, match="tensor_model_parallel_size 1"):
        check_linear_ce(["linear_ce"], 2)
    check_linear_ce(["linear_ce"], 1)
    check_linear_ce(["rmsnorm"], 2)                      # only linear_ce cares about TP
    # the loss kernel works with either layer spec; the layer kernels stay local-only
    assert load_model_config("tiny_dense", {"triton_kernels": ["linear_ce"],
                                            "transformer_impl": "transformer_engine"}).triton_kernels == ["linear_ce"]
    with pytest.raises(ValueError, match="only linear_ce"):
        load_model_config("tiny_dense", {"triton_kernels": ["linear_ce", "rmsnorm"],
                                         "transformer_impl": "transformer_engine"})
