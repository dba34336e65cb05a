"""Stage manifest -> megatron-core `BlendedMegatronDatasetBuilder` -> deterministic batches.

The manifest (q3/manifest.py) names the indexed datasets and their weights; megatron's builder
blends them (`BlendedDataset` over `GPTDataset`s that pack documents into `seq_length + 1`
token windows). Batches are drawn by global sample index, so the data position of a run is one
integer (`consumed_samples`) saved in the checkpoint, and any data-parallel layout sees the
same global batch: microbatch k of DP rank r holds samples
`step_start + (k * dp + r) * micro_batch_size ...` — the union over ranks and microbatches is the
same set as in one process.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from q3.manifest import StageManifest

QWEN3_EOD = 151643        # <|endoftext|>: document separator in our indexed datasets


class DatasetTokenizer:
    """The few tokenizer facts megatron's GPTDataset needs (token ids are pre-computed).

    `unique_identifiers` feed megatron's cache keys for the built sample indices. No `pad`:
    GPTDataset then pads with -1 and masks those positions, never colliding with real ids.
    """

    def __init__(self, name: str, vocab_size: int, eod: int = QWEN3_EOD):
        self.name = name
        self._vocab_size = vocab_size
        self._eod = eod
        self.unique_identifiers = OrderedDict(
            [("class", type(self).__name__), ("tokenizer", name), ("vocab_size", vocab_size), ("eod", eod)])

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eod(self) -> int:
        return self._eod


def build_train_dataset(manifest: StageManifest, seq_length: int, num_samples: int, seed: int,
                        vocab_size: int, cache_dir: str | None = None):
    """The blended training dataset of a stage, with at least `num_samples` samples."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    prefixes, weights = [], []
    for d in manifest.datasets:
        if d.weight <= 0:
            continue
        for ext in (".bin", ".idx"):
            if not os.path.exists(d.path_prefix + ext):
                raise FileNotFoundError(f"manifest dataset {d.name!r}: missing {d.path_prefix + ext}")
        prefixes.append(d.path_prefix)
        weights.append(float(d.weight))
    if not prefixes:
        raise ValueError(f"manifest for stage {manifest.stage} has no dataset with weight > 0")
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, weights if len(prefixes) > 1 else None),
        split="100,0,0",
        path_to_cache=cache_dir,
        tokenizer=DatasetTokenizer(manifest.tokenizer, vocab_size),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,      # the trainer supplies one causal mask for local attention
        mid_level_dataset_surplus=0.05,
    )
    train_ds, _, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, 0, 0], lambda: True, config).build()
    return train_ds


@dataclass
class BatchPlan:
    micro_batch_size: int
    global_batch_size: int
    dp_size: int
    dp_rank: int

    @property
    def num_microbatches(self) -> int:
        per_rank, rem = divmod(self.global_batch_size, self.micro_batch_size * self.dp_size)
        if rem or per_rank == 0:
            raise ValueError(f"global_batch_size {self.global_batch_size} must be a multiple of "
                             f"micro_batch_size x dp = {self.micro_batch_size * self.dp_size}")
        return per_rank

    def indices(self, consumed_samples: int, k: int) -> range:
        start = consumed_samples + (k * self.dp_size + self.dp_rank) * self.micro_batch_size
        return range(start, start + self.micro_batch_size)


def step_microbatches(dataset, plan: BatchPlan, consumed_samples: int) -> Iterator[dict]:
    """This rank's microbatches for the step starting at `consumed_samples`."""
    for k in range(plan.num_microbatches):
        samples = [dataset[i] for i in plan.indices(consumed_samples, k)]
        yield {key: torch.stack([s[key] for s in samples]) for key in ("tokens", "labels", "loss_mask")} | {
            "dataset_id": torch.tensor([int(s.get("dataset_id", -1)) for s in samples])}
