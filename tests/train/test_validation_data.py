"""The trainer's fixed validation set (what `q3 mix optimize`'s trainer proxies are scored on):
the same tokens whatever the mixture weights, drawn from documents training never reads."""

import numpy as np
import pytest

from q3.manifest import dump_manifest, load_manifest
from train.data import build_train_dataset, build_validation_datasets

VOCAB = 151_936


def _reweighted(path, tmp_path, weights):
    m = load_manifest(path)
    m = m.model_copy(update={"datasets": [d.model_copy(update={"weight": weights[d.name]}) for d in m.datasets]})
    out = tmp_path / f"m-{'-'.join(str(w) for w in weights.values())}.yaml"
    out.write_text(dump_manifest(m))
    return load_manifest(out)


def _tokens(ds, n):
    return np.stack([ds[i]["tokens"].numpy() for i in range(n)])


def test_validation_set_is_fixed_and_disjoint_from_training(dev_manifests, tmp_path):
    a = _reweighted(dev_manifests["S1"], tmp_path, {"code": 0.9, "prose": 0.1})
    b = _reweighted(dev_manifests["S1"], tmp_path, {"code": 0.2, "prose": 0.8})
    # cache_dir=None: indices built in memory (no rank-0 file cache, so no process group needed)
    kw = dict(seq_length=64, num_samples=8, seed=7, vocab_size=VOCAB, split="80,20,0", cache_dir=None)
    va = build_validation_datasets(a, ["code", "prose"], **kw)
    vb = build_validation_datasets(b, ["code", "prose"], **kw)
    for name in ("code", "prose"):
        assert np.array_equal(_tokens(va[name], 8), _tokens(vb[name], 8)), name

    train = build_train_dataset(a, 64, 64, 7, VOCAB, None, split="80,20,0")
    for sub in train.datasets:            # BlendedDataset -> one GPTDataset per manifest dataset
        name = "code" if sub.dataset_path.endswith("code") else "prose"
        seen = set(sub.document_index.tolist())
        held = set(va[name].document_index.tolist())
        assert held and not (seen & held), name


def test_validation_needs_a_valid_share_and_known_names(dev_manifests, tmp_path):
    m = load_manifest(dev_manifests["S1"])
    kw = dict(seq_length=64, num_samples=4, seed=1, vocab_size=VOCAB, cache_dir=None)
    with pytest.raises(ValueError, match="valid share"):
        build_validation_datasets(m, ["code"], split="100,0,0", **kw)
    with pytest.raises(ValueError, match="not in the manifest"):
        build_validation_datasets(m, ["nope"], split="90,10,0", **kw)
    with pytest.raises(ValueError, match="no documents for training"):
        build_train_dataset(m, 64, 4, 1, VOCAB, None, split="0,100,0")
