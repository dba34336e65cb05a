"""Triton kernels (kernels/) vs their PyTorch references: time, error and peak memory.

On a GPU: Qwen3-sized shapes (bf16), CUDA-event timing of forward+backward, and the peak memory
of chunked linear+CE against full logits at 16K tokens x 151,936 rows (the reason it exists).
On CPU (`--dry-run`, or no CUDA): the same code path at tiny sizes in Triton's interpreter, to
check the script itself; its times mean nothing.

    PYTHONPATH=$PWD python -m bench.kernels_bench --out bench/results/kernels.json
    PYTHONPATH=$PWD python -m bench.kernels_bench --dry-run
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from kernels.linear_ce import linear_cross_entropy, linear_cross_entropy_reference
from kernels.moe_permute import permute, permute_reference, unpermute, unpermute_reference
from kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_reference
from kernels.rmsnorm import rmsnorm, rmsnorm_reference
from kernels.swiglu import swiglu, swiglu_reference

# (GPU shape, dry-run shape) per case
SHAPES = {
    "rmsnorm": ((16384, 4096), (8, 64)),
    "swiglu": ((16384, 2 * 6144), (8, 2 * 32)),
    "qk_norm_rope": ((4096, 4, 32, 128), (4, 1, 2, 16)),
    "moe_permute": ((16384, 128, 8, 2048), (16, 8, 2, 32)),        # tokens, experts, top-k, hidden
    "linear_ce": ((16384, 2048, 151936, 2048), (6, 16, 1000, 4)),   # tokens, hidden, vocab, chunk
}


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], dev: str, repeats: int) -> float:
    """Median ms of fn() (forward + backward inside) after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def _peak(fn: Callable[[], object], dev: str) -> float | None:
    if dev != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    _sync(dev)
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def _fwd_bwd(op, *inputs):
    """A closure running op forward and backward on fresh leaves; returns (out, grads)."""
    def run():
        leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in inputs]
        out = op(*leaves)
        (out if out.dim() == 0 else out.float().square().mean()).backward()
        return out.detach(), [t.grad for t in leaves if t.is_floating_point()]
    return run


def _err(a, b) -> float:
    (oa, ga), (ob, gb) = a, b
    return max([(oa.float() - ob.float()).abs().max().item()]
               + [(x.float() - y.float()).abs().max().item() for x, y in zip(ga, gb, strict=True)])


def cases(dev: str, dry: bool, dtype: torch.dtype):
    """name -> (triton closure, reference closure)."""
    pick = 1 if dry else 0
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, device=dev, generator=g) * scale).to(dtype)

    rows, n = SHAPES["rmsnorm"][pick]
    x, w = rnd(rows, n), 1 + rnd(n, scale=0.1)
    yield "rmsnorm", _fwd_bwd(lambda a, b: rmsnorm(a, b), x, w), \
        _fwd_bwd(lambda a, b: rmsnorm_reference(a, b, 1e-6), x, w)
    rows, f2 = SHAPES["swiglu"][pick]
    x = rnd(rows, f2)
    yield "swiglu", _fwd_bwd(swiglu, x), _fwd_bwd(swiglu_reference, x)
    s, b, h, d = SHAPES["qk_norm_rope"][pick]
    x, w = rnd(s, b, h, d), 1 + rnd(d, scale=0.1)
    inv = 1.0 / 1e6 ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d)
    fr = torch.outer(torch.arange(s, device=dev, dtype=torch.float32), inv)
    fr = torch.cat([fr, fr], -1)
    cos, sin = fr.cos(), fr.sin()
    yield "qk_norm_rope", _fwd_bwd(lambda a, c: qk_norm_rope(a, c, cos, sin), x, w), \
        _fwd_bwd(lambda a, c: qk_norm_rope_reference(a, c, cos, sin), x, w)
    t, e, k, hid = SHAPES["moe_permute"][pick]
    logits = torch.randn(t, e, device=dev, generator=g)
    rm = torch.zeros(t, e, dtype=torch.bool, device=dev).scatter_(1, logits.topk(k, 1).indices, True)
    probs = (torch.softmax(logits, -1) * rm).to(dtype)
    x = rnd(t, hid)

    def round_trip(perm, unperm):
        def op(a, p):
            y, _, idx = perm(a, rm)
            return unperm(y, idx, a.shape, p, rm)
        return op
    yield "moe_permute", _fwd_bwd(round_trip(permute, unpermute), x, probs), \
        _fwd_bwd(round_trip(lambda a, m: permute_reference(a, m), unpermute_reference), x, probs)
    t, hid, v, chunk = SHAPES["linear_ce"][pick]
    hs, wt = rnd(t, hid), rnd(v, hid, scale=0.02)
    tg = torch.randint(0, v, (t,), device=dev, generator=g)
    yield "linear_ce", _fwd_bwd(lambda a, b: linear_cross_entropy(a, b, tg, chunk_size=chunk), hs, wt), \
        _fwd_bwd(lambda a, b: linear_cross_entropy_reference(a, b, tg), hs, wt)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes (also forced without CUDA)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dry = args.dry_run or dev == "cpu"
    dtype = torch.float32 if dry else torch.bfloat16
    repeats = 1 if dry else args.repeats
    rows = []
    for name, ours, ref in cases(dev, dry, dtype):
        row = {"kernel": name, "shape": SHAPES[name][1 if dry else 0], "max_abs_err": _err(ours(), ref()),
               "triton_ms": _time(ours, dev, repeats), "torch_ms": _time(ref, dev, repeats),
               "triton_peak_gib": _peak(ours, dev), "torch_peak_gib": _peak(ref, dev)}
        rows.append(row)
        print(f"{name:<13} err {row['max_abs_err']:.2e}  triton {row['triton_ms']:8.2f} ms  "
              f"torch {row['torch_ms']:8.2f} ms  peak {row['triton_peak_gib']} / {row['torch_peak_gib']} GiB",
              flush=True)
    result = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu (Triton interpreter)",
              "dtype": str(dtype).replace("torch.", ""), "dry_run": dry, "rows": rows}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
