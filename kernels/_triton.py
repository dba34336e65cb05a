"""Shared Triton setup for the kernels in this package (a leaf: torch and Triton only).

Without CUDA, compiled Triton cannot launch; Triton's interpreter (`TRITON_INTERPRET=1`) runs
the same kernel source on CPU tensors with numpy. It must be set before any `@triton.jit`
decoration (Triton reads it then), so every kernel module imports this one first. It is slow:
meant for tests at tiny sizes, not for training on CPU.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402  (after the env: triton.language's own jit functions read it)
import triton.language as tl  # noqa: E402

__all__ = ["INTERPRET", "block_size", "num_row_programs", "tl", "triton"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def block_size(n: int) -> int:
    """The power-of-two block that holds a row of `n` elements (Triton aranges need it)."""
    return triton.next_power_of_2(max(int(n), 1))


def num_row_programs(rows: int, per_program: int) -> int:
    return max(1, triton.cdiv(rows, per_program))
