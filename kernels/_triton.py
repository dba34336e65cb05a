"""Shared Triton setup for the kernels in this package (a leaf: torch and Triton only).

Without CUDA, compiled Triton cannot launch; Triton's interpreter (`TRITON_INTERPRET=1`) runs
the same kernel source on CPU tensors with numpy. It must be set before any `@triton.jit`
decoration (Triton reads it then), so every kernel module imports this one first. It is slow:
meant for tests at tiny sizes, not for training on CPU.

megatron-core imports Triton too, often before us, and then triton.language's own jit'd helpers
(tl.sum, tl.max, tl.sigmoid, tl.zeros, ...) are compiled-mode objects that an interpreted kernel cannot call.
So the kernels use the helpers below, defined after the env is set, built only from Triton
builtins (tl.reduce, tl.exp, tl.full), which the interpreter patches in either case.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402  (after the env: triton.language's own jit functions read it)
import triton.language as tl  # noqa: E402

__all__ = ["INTERPRET", "block_size", "num_row_programs", "row_max", "row_sum", "sigmoid", "tl", "triton"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def block_size(n: int) -> int:
    """The power-of-two block that holds a row of `n` elements (Triton aranges need it)."""
    return triton.next_power_of_2(max(int(n), 1))


def num_row_programs(rows: int, per_program: int) -> int:
    return max(1, triton.cdiv(rows, per_program))


# triton.language's own combine functions: only passed to tl.reduce (compiled: what tl.sum and
# tl.max do; interpreted: recognised by identity and run as numpy sum / nanmax, whereas any
# other combine function makes the interpreter loop element by element in Python).
_sum_combine = tl.standard._sum_combine
_max_combine = tl.standard._elementwise_max


@triton.jit
def row_sum(x):
    """Sum of a 1-D block (tl.sum, interpreter-safe; fp32 inputs here)."""
    return tl.reduce(x, 0, _sum_combine)


@triton.jit
def row_max(x):
    """Max of a 1-D block (tl.max, interpreter-safe)."""
    return tl.reduce(x, 0, _max_combine)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))
