"""`q3 mix build`: deterministic manifests that megatron-core's BlendedMegatronDatasetBuilder reads,
sampling datasets in their weights' proportions; S3 samples split 75/25 between length buckets."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataproc.mix.manifest import build_manifests
from q3.manifest import load_manifest
from q3.tokenizer import get_tokenizer


def _blend(manifest, n_samples: int, cache: Path):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    config = GPTDatasetConfig(
        random_seed=1234, sequence_length=manifest.seq_length,
        blend=([d.path_prefix for d in manifest.datasets], [d.weight for d in manifest.datasets]),
        # path_to_cache=None: indices built in memory, so no rank-0 file cache and no process group
        split="100,0,0", path_to_cache=None, tokenizer=get_tokenizer(),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False, mid_level_dataset_surplus=0.05)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n_samples, 0, 0], lambda: True, config).build()
    return train


def test_manifests_written_and_deterministic(demo_mix, tmp_path):
    cfg, paths = demo_mix
    assert sorted(paths) == ["demo_s1", "demo_s2", "demo_s3"]
    first = {k: p.read_bytes() for k, p in paths.items()}
    again = build_manifests(cfg)
    assert {k: p.read_bytes() for k, p in again.items()} == first
    s1 = load_manifest(paths["demo_s1"])
    assert s1.seq_length == 512 and s1.rope_base == 10000 and s1.schedule.decay == "wsd"
    assert abs(sum(d.weight for d in s1.datasets) - 1) < 1e-9
    for d in s1.datasets:
        assert d.n_tokens > 0 and d.epochs == pytest.approx(d.weight * s1.target_tokens / d.n_tokens, rel=1e-5)
    s3 = load_manifest(paths["demo_s3"])
    assert s3.rope_base == 1_000_000 and [b.fraction for b in s3.length_buckets] == [0.75, 0.25]
    assert load_manifest(paths["demo_s2"]).schedule.min_lr < s1.schedule.min_lr   # S2 decays further


def test_blended_builder_samples_in_weight_proportions(demo_mix, tmp_path):
    _, paths = demo_mix
    m = load_manifest(paths["demo_s1"])
    n = 4000
    train = _blend(m, n, tmp_path)
    assert len(train) >= n
    counts = Counter(int(i) for i in train.dataset_index[:n])
    for i, d in enumerate(m.datasets):
        assert abs(counts[i] / n - d.weight) <= 0.02, (d.name, counts[i] / n, d.weight)
    sample = train[0]
    assert sample["tokens"].shape[0] == m.seq_length and int(sample["tokens"].max()) < 151_669


def test_s3_sample_lengths_split_75_25(demo_mix, tmp_path):
    _, paths = demo_mix
    m = load_manifest(paths["demo_s3"])
    long_b, mid_b = m.length_buckets
    n = 2000
    train = _blend(m, n, tmp_path)
    in_bucket = Counter()
    for i in range(n):
        gpt = train.datasets[int(train.dataset_index[i])]
        _, doc_ids = gpt._query_document_sample_shuffle_indices(int(train.dataset_sample_index[i]))
        lengths = gpt.dataset.sequence_lengths[np.asarray(doc_ids)]
        if np.all((lengths >= long_b.min_tokens) & (lengths <= long_b.max_tokens)):
            in_bucket["long"] += 1
        elif np.all((lengths >= mid_b.min_tokens) & (lengths <= mid_b.max_tokens)):
            in_bucket["mid"] += 1
    assert in_bucket["long"] + in_bucket["mid"] == n        # every sample is made of one bucket's docs
    assert abs(in_bucket["long"] / n - 0.75) <= 0.03 and abs(in_bucket["mid"] / n - 0.25) <= 0.03

