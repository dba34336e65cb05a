"""The one command on the GPU machine: matmul ceilings, trainer throughput (tokens/s, TFLOP/s, MFU,
peak memory) of a ~1B dense Qwen3 and a 30B-A3B-shaped MoE cut to a few layers in BF16 / FP8
delayed / FP8 current scaling, and a 120-step BF16 vs FP8 loss comparison on the dev data.
Writes <out>/gpu_bench.json (after every section, so a timeout keeps what finished) and
<out>/gpu_bench.md.

    python -m bench.gpu.run --out $OUT                # on the GPU machine (installs bench/gpu/wheels first)
    python -m bench.gpu.run --out /tmp/x --dry-run    # here: the same code on CPU at tiny sizes

Everything runs through the project's real trainer (`train.core.Trainer`: megatron-core GPTModel,
DDP, optimizer, CUDA-synchronised step timing). FP8 runs need Transformer Engine; without it they are
recorded as skipped with the reason (BF16 then runs in the local spec). FLOPs per token by
Megatron-LM's formula (bench/gpu/flops.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

PRECISIONS = {   # name -> ModelConfig overrides on top of the TE spec
    "bf16": {},
    "fp8_delayed": {"fp8_format": "hybrid", "fp8_recipe": "delayed"},
    "fp8_current": {"fp8_format": "hybrid", "fp8_recipe": "tensorwise"},
}


# ----------------------------------------------------------------------------- setup
def install_wheels(wheels: Path, target: Path) -> list[str]:
    """Unpack the carried wheels (pip-free: a wheel is a zip of importable files) into `target`
    and append it to sys.path, so packages the machine already has keep precedence."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    target.mkdir(parents=True, exist_ok=True)
    for whl in found:
        with zipfile.ZipFile(whl) as z:
            z.extractall(target)
    if found and str(target) not in sys.path:
        sys.path.append(str(target))
    return [w.name for w in found]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Q3 GPU benchmark (bench/gpu/README.md)")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_bench.json / gpu_bench.md")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models, few steps: checks the whole path")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting sections after this")
    ap.add_argument("--wheels", type=Path, default=HERE / "wheels")
    ap.add_argument("--tokens", type=Path, default=HERE / "payload" / "devtokens.npy")
    ap.add_argument("--sections", default="matmul,models,loss")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per throughput run")
    ap.add_argument("--loss-steps", type=int, default=None, help="steps of the BF16 vs FP8 loss comparison")
    ap.add_argument("--precisions", default="bf16,fp8_delayed,fp8_current")
    a = ap.parse_args(argv)
    unknown = set(a.precisions.split(",")) - set(PRECISIONS)
    if unknown:
        ap.error(f"--precisions: unknown {sorted(unknown)}; choose from {sorted(PRECISIONS)}")
    if a.steps is None:
        a.steps = 1 if a.dry_run else 6
    if a.loss_steps is None:
        a.loss_steps = 2 if a.dry_run else 120
    return a


def plan(dry_run: bool) -> dict:
    """Model shapes and batch sizes: published configs cut to fit minutes on one GPU."""
    if dry_run:
        return {"matmul": [128], "warmup": 1,
                "models": {"dense": ("tiny_dense", {}, 2, 32), "moe": ("tiny_moe", {}, 2, 32)},
                "loss": ("tiny_dense", {}, 2, 2, 32)}
    return {"matmul": [4096, 8192], "warmup": 2,
            # name: (conf/model, overrides, micro batch, seq)
            "models": {"dense_1b": ("qwen3_1.7b", {"num_layers": 16}, 4, 4096),
                       "moe_30b_a3b_4l": ("qwen3_30b_a3b", {"num_layers": 4}, 4, 4096)},
            # (conf/model, overrides, micro batch, microbatches per step, seq)
            "loss": ("qwen3_0.6b", {"num_layers": 8}, 4, 2, 1024)}


# ----------------------------------------------------------------------------- device
def device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=list(torch.cuda.get_device_capability(0)),
                    memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
    else:
        import platform
        info.update(device=f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    capability=None)
    import importlib.metadata as md

    for key, dists in (("transformer_engine", ("transformer-engine", "transformer-engine-cu13",
                                               "transformer-engine-cu12", "transformer-engine-torch")),
                       ("triton", ("triton",)), ("megatron", ("megatron-core",))):
        found = {}
        for d in dists:                           # metadata only: importing triton/TE costs seconds
            with contextlib.suppress(md.PackageNotFoundError):
                found[d] = md.version(d)
        info[key] = found or None
    return info


def has_te() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
        return True
    except Exception:                             # noqa: BLE001 -- ImportError or a broken build
        return False


def fp8_matmul_supported() -> str | None:
    """None when torch's FP8 GEMM can run, else why not."""
    import torch

    if not torch.cuda.is_available():
        return "torch._scaled_mm needs a CUDA GPU"
    if torch.cuda.get_device_capability(0) < (8, 9):
        return "FP8 GEMMs need compute capability >= 8.9"
    return None


# ----------------------------------------------------------------------------- sections
def _timed(fn, iters: int, cuda: bool) -> float:
    import torch

    fn()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def matmul_ceilings(sizes: list[int]) -> list[dict]:
    """BF16 (torch.mm) and FP8 E4M3 (torch._scaled_mm, per-tensor scales, BF16 out) square GEMMs."""
    import torch

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    rows = []
    for n in sizes:
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        iters = 20 if cuda else 3
        sec = _timed(lambda a=a, b=b: torch.mm(a, b), iters, cuda)
        rows.append({"dtype": "bf16", "n": n, "tflops": 2 * n**3 / sec / 1e12})
        why = fp8_matmul_supported()
        if why:
            rows.append({"dtype": "fp8_e4m3", "n": n, "tflops": None, "skipped": why})
            continue
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.to(torch.float8_e4m3fn).t().contiguous().t()          # column-major, as cuBLASLt wants
        one = torch.ones((), device=dev, dtype=torch.float32)
        sec = _timed(lambda a8=a8, b8=b8, one=one: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one,
                                                                   out_dtype=torch.bfloat16), iters, cuda)
        rows.append({"dtype": "fp8_e4m3", "n": n, "tflops": 2 * n**3 / sec / 1e12})
    return rows


def _model_config(name: str, overrides: dict, precision: str, te: bool, dtype: str = "bfloat16"):
    """`dtype`: float32 in the dry run only (megatron's bf16 optimizer wraps CUDA tensors only)."""
    from train.config import load_model_config

    base = {"params_dtype": dtype, **overrides}
    if te:
        base.update(transformer_impl="transformer_engine", use_cpu_initialization=False, fusions=True)
        if "moe" in name:
            base.update(moe_grouped_gemm=True)
    base.update(PRECISIONS[precision])
    return load_model_config(name, base)


def _trainer(mcfg, mbs: int, n_mb: int, seq: int, steps: int, out: Path, lr: float = 3e-4):
    from train.config import CoreConfig
    from train.core import Trainer, schedule_from_config

    cfg = CoreConfig.model_validate({
        "model": mcfg, "micro_batch_size": mbs, "global_batch_size": mbs * n_mb, "train_steps": steps,
        "save": False, "tensorboard": False, "seed": 1234, "optim": {"lr": lr, "min_lr": lr},
        "schedule": {"decay": "constant"}, "guard": {"enabled": False}})
    return Trainer(cfg, mcfg, seq, mcfg.rope_base, schedule_from_config(cfg), out, meta={"stage": "gpu-bench"})


def _random_microbatches(vocab: int, mbs: int, n: int, seq: int, seed: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, vocab, (mbs, seq + 1), generator=g)
        out.append({"tokens": x[:, :-1], "labels": x[:, 1:], "loss_mask": torch.ones(mbs, seq)})
    return out


def _release(trainer) -> None:
    trainer.close()
    del trainer
    _free_memory()


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def throughput(name: str, model: str, overrides: dict, mbs: int, seq: int, precision: str, steps: int,
               warmup: int, te: bool, device: str, work: Path, dtype: str = "bfloat16") -> dict:
    """Median step time of the real trainer on random tokens (one microbatch per step)."""
    import statistics

    import torch

    from bench.gpu.flops import megatron_flops_per_token, peak_flops

    if not te and torch.cuda.is_available():
        # megatron's local attention materialises [mb, heads, s, s] scores (and keeps them for the
        # backward): at 4 x 4096 x 16 layers that is ~100 GiB. One sequence per microbatch instead.
        mbs = 1
    row = {"model": name, "conf": model, "overrides": overrides, "precision": precision,
           "micro_batch": mbs, "seq": seq, "spec": "transformer_engine" if te else "local"}
    if precision != "bf16" and not te:
        return {**row, "skipped": "FP8 training needs Transformer Engine (not importable here)"}
    mcfg = _model_config(model, overrides, precision, te, dtype)
    row["params_dtype"] = dtype
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t = _trainer(mcfg, mbs, 1, seq, warmup + steps, work / f"{name}-{precision}")
    secs, losses = [], []
    for i, mb in enumerate(_random_microbatches(mcfg.vocab_size, mbs, warmup + steps, seq, 0)):
        r = t.train_step([mb], 1)
        losses.append(r.loss)
        if i >= warmup:
            secs.append(r.seconds)
    fpt = megatron_flops_per_token(mcfg, seq)
    tps = mbs * seq / statistics.median(secs)
    peak = peak_flops(device, "bf16")
    row.update(params=mcfg.num_params(), active_params=mcfg.num_params(active=True),
               flops_per_token=fpt, step_s=statistics.median(secs), tokens_per_s=tps,
               tflops_per_gpu=tps * fpt / 1e12, mfu=(tps * fpt / peak) if peak else None,
               peak_mem_gib=(torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() else None,
               first_loss=losses[0], last_loss=losses[-1])
    _release(t)
    return row


def loss_comparison(model: str, overrides: dict, mbs: int, n_mb: int, seq: int, steps: int,
                    precisions: list[str], te: bool, tokens_path: Path, work: Path, dtype: str = "bfloat16") -> dict:
    """The same dev-data windows, seed and schedule for each precision; per-step losses and the
    gap of the last-10-step mean loss to BF16."""
    import numpy as np

    tokens = np.load(tokens_path)
    need = steps * mbs * n_mb * (seq + 1)
    if tokens.size < need:
        reps = -(-need // tokens.size)
        tokens = np.tile(tokens, reps)            # the dev data is small: epochs over it
    windows = tokens[:need].reshape(steps, n_mb, mbs, seq + 1)
    res: dict = {"model": model, "overrides": overrides, "micro_batch": mbs, "microbatches": n_mb, "seq": seq,
                 "params_dtype": dtype,
                 "steps": steps, "tokens_file": str(tokens_path), "runs": {}}
    import torch

    for prec in precisions:
        if prec != "bf16" and not te:
            res["runs"][prec] = {"skipped": "FP8 training needs Transformer Engine (not importable here)"}
            continue
        try:
            t = _trainer(_model_config(model, overrides, prec, te, dtype), mbs, n_mb, seq, steps,
                         work / f"loss-{prec}")
            losses = []
            for s in range(steps):
                w = torch.from_numpy(windows[s].astype(np.int64))
                mbs_ = [{"tokens": x[:, :-1], "labels": x[:, 1:], "loss_mask": torch.ones(mbs, seq)} for x in w]
                losses.append(t.train_step(mbs_, n_mb).loss)
            _release(t)
        except Exception as e:                      # noqa: BLE001 -- keep the other precisions' runs
            _free_memory()
            res["runs"][prec] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        tail = losses[-10:]
        res["runs"][prec] = {"losses": losses, "final_mean10": sum(tail) / len(tail)}
    base = res["runs"].get("bf16", {}).get("final_mean10")
    for run in res["runs"].values():
        if base is not None and "final_mean10" in run:
            run["gap_to_bf16"] = run["final_mean10"] - base
    return res


# ----------------------------------------------------------------------------- report
def table(result: dict) -> str:
    d = result["device"]
    lines = [f"# GPU bench: {d.get('device')}", "",
             f"torch {d.get('torch')}, CUDA {d.get('cuda')}, transformer_engine {d.get('transformer_engine')}, "
             f"dry_run={result['dry_run']} (params {result.get('params_dtype')}), {result.get('seconds', 0):.0f} s", ""]
    if result.get("matmul"):
        lines += ["## Matmul ceilings", "", "| dtype | n | TFLOP/s |", "|---|---|---|"]
        for r in result["matmul"]:
            v = f"{r['tflops']:.1f}" if r.get("tflops") is not None else f"skipped: {r.get('skipped')}"
            lines.append(f"| {r['dtype']} | {r['n']} | {v} |")
        lines.append("")
    if result.get("models"):
        lines += ["## Trainer throughput (per GPU)", "",
                  "| model | precision | spec | mb x seq | tokens/s | TFLOP/s | MFU (bf16 peak) | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["models"]:
            if "skipped" in r or "error" in r:
                lines.append(f"| {r['model']} | {r['precision']} | {r['spec']} | {r['micro_batch']}x{r['seq']} | "
                             f"{r.get('skipped') or r.get('error')} | | | |")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            mem = f"{r['peak_mem_gib']:.1f}" if r.get("peak_mem_gib") is not None else "n/a"
            lines.append(f"| {r['model']} | {r['precision']} | {r['spec']} | {r['micro_batch']}x{r['seq']} | "
                         f"{r['tokens_per_s']:.0f} | {r['tflops_per_gpu']:.2f} | {mfu} | {mem} |")
        lines.append("")
    if result.get("loss"):
        lc = result["loss"]
        lines += [f"## Loss: {lc['steps']} steps of {lc['model']} on the dev data", "",
                  "| precision | first | last-10 mean | gap to bf16 |", "|---|---|---|---|"]
        for prec, run in lc["runs"].items():
            if "skipped" in run or "error" in run:
                lines.append(f"| {prec} | {run.get('skipped') or run.get('error')} | | |")
                continue
            gap = f"{run['gap_to_bf16']:+.4f}" if "gap_to_bf16" in run else ""
            lines.append(f"| {prec} | {run['losses'][0]:.4f} | {run['final_mean10']:.4f} | {gap} |")
        lines.append("")
    if result.get("skipped_sections"):
        lines += [f"Skipped (time budget): {', '.join(result['skipped_sections'])}", ""]
    return "\n".join(lines)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "gpu_bench.md").write_text(table(result))


def run(a: argparse.Namespace) -> dict:
    t0 = time.time()
    installed = [] if a.dry_run else install_wheels(a.wheels, Path("/tmp/q3_gpu_site"))
    os.environ.setdefault("Q3_PROGRESS", "0")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    p = plan(a.dry_run)
    te = False if a.dry_run else has_te()
    dtype = "float32" if a.dry_run else "bfloat16"
    result: dict = {"dry_run": a.dry_run, "device": device_info(), "wheels_installed": installed, "te": te,
                    "params_dtype": dtype,
                    "plan": p, "matmul": [], "models": [], "loss": None, "skipped_sections": []}
    work = a.out / "work"
    sections = a.sections.split(",")
    precisions = a.precisions.split(",")

    def left() -> float:
        return a.budget_s - (time.time() - t0)

    def log(msg: str) -> None:
        print(f"[gpu-bench {time.time() - t0:6.1f}s] {msg}", flush=True)

    if "matmul" in sections:
        result["matmul"] = matmul_ceilings(p["matmul"])
        log(f"matmul: {[(r['dtype'], r['n'], r.get('tflops')) for r in result['matmul']]}")
        write(result, a.out)
    if "models" in sections:
        for name, (model, ov, mbs, seq) in p["models"].items():
            for prec in precisions:
                if left() < 30:
                    result["skipped_sections"].append(f"models/{name}/{prec}")
                    continue
                try:
                    row = throughput(name, model, ov, mbs, seq, prec, a.steps, p["warmup"], te,
                                     result["device"]["device"], work, dtype)
                except Exception as e:              # noqa: BLE001 -- one failed config must not lose the rest
                    _free_memory()
                    row = {"model": name, "precision": prec, "spec": "transformer_engine" if te else "local",
                           "micro_batch": mbs, "seq": seq, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                result["models"].append(row)
                log(f"{name} {prec}: {row.get('tokens_per_s') or row.get('skipped') or row.get('error')}")
                write(result, a.out)
    if "loss" in sections:
        model, ov, mbs, n_mb, seq = p["loss"]
        if left() < 60:
            result["skipped_sections"].append("loss")
        elif not a.tokens.exists():
            result["loss"] = {"model": model, "steps": a.loss_steps, "runs": {
                "bf16": {"error": f"{a.tokens} missing: run `python -m bench.gpu.fetch_wheels` first"}}}
        else:
            result["loss"] = loss_comparison(model, ov, mbs, n_mb, seq, a.loss_steps, precisions, te,
                                             a.tokens, work, dtype)
            log(f"loss: { {k: v.get('final_mean10') for k, v in result['loss']['runs'].items()} }")
    result["seconds"] = time.time() - t0
    write(result, a.out)
    return result


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
