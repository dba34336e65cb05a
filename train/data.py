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
from q3.tokenizer import EOD_ID

QWEN3_EOD = EOD_ID        # <|endoftext|>: document separator in our indexed datasets


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


def _dataset_config(prefixes: list[str], weights: list[float] | None, split: str, seq_length: int, seed: int,
                    tokenizer: DatasetTokenizer, cache_dir: str | None):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, weights if weights is not None and len(prefixes) > 1 else None),
        split=split,
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,      # the trainer supplies one causal mask for local attention
        mid_level_dataset_surplus=0.05,
    )


def _check_files(name: str, prefix: str) -> None:
    for ext in (".bin", ".idx"):
        if not os.path.exists(prefix + ext):
            raise FileNotFoundError(f"manifest dataset {name!r}: missing {prefix + ext}")


def split_shares(split: str) -> list[float]:
    """"95,5,0" -> [0.95, 0.05, 0.0] (megatron's train/valid/test document split)."""
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

    try:
        return parse_and_normalize_split(split)
    except (AssertionError, ZeroDivisionError, ValueError) as e:
        raise ValueError(f"split={split!r}: expected three non-negative shares like '95,5,0'") from e


def build_train_dataset(manifest: StageManifest, seq_length: int, num_samples: int, seed: int,
                        vocab_size: int, cache_dir: str | None = None, split: str = "100,0,0"):
    """The blended training dataset of a stage, with at least `num_samples` samples, drawn from
    the train share of every dataset's documents (`split`, megatron's document split)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    if split_shares(split)[0] <= 0:
        raise ValueError(f"split={split!r} leaves no documents for training")
    prefixes, weights = [], []
    for d in manifest.datasets:
        if d.weight <= 0:
            continue
        _check_files(d.name, d.path_prefix)
        prefixes.append(d.path_prefix)
        weights.append(float(d.weight))
    if not prefixes:
        raise ValueError(f"manifest for stage {manifest.stage} has no dataset with weight > 0")
    config = _dataset_config(prefixes, weights, split, seq_length, seed,
                             DatasetTokenizer(manifest.tokenizer, vocab_size), cache_dir)
    train_ds, _, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, 0, 0], lambda: True, config).build()
    return train_ds


def build_validation_datasets(manifest: StageManifest, names: list[str], seq_length: int, num_samples: int,
                              seed: int, vocab_size: int, cache_dir: str | None = None,
                              split: str = "95,5,0") -> dict[str, object]:
    """A fixed validation set per named dataset: `num_samples` windows from the *valid* share of its
    documents. It depends only on the dataset, `split` and the seed — not on the mixture weights —
    so runs with different mixtures (RegMix proxies) are scored on the same tokens, and training
    (which reads the train share) never sees them."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    if split_shares(split)[1] <= 0:
        raise ValueError(f"validation needs a valid share in split (got {split!r}); e.g. split=95,5,0")
    by_name = {d.name: d for d in manifest.datasets}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"validation datasets {unknown} not in the manifest; it has {sorted(by_name)}")
    out = {}
    tok = DatasetTokenizer(manifest.tokenizer, vocab_size)
    for name in names:
        d = by_name[name]
        _check_files(name, d.path_prefix)
        config = _dataset_config([d.path_prefix], None, split, seq_length, seed, tok, cache_dir)
        _, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, [1, num_samples, 0], lambda: True, config).build()
        if valid is None or len(valid) == 0:
            raise ValueError(f"validation dataset {name!r} has no documents in the valid share of split={split!r}")
        out[name] = valid
    return out


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
