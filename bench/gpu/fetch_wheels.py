"""Prepare what the GPU machine lacks (it has Python 3.12 and torch +cu130, but no registry):
manylinux wheels for Python 3.12 in `bench/gpu/wheels/` and the dev-data tokens in
`bench/gpu/payload/devtokens.npy`. Reports the sizes against the 64 MiB a device call carries.

    python -m bench.gpu.fetch_wheels                 # wheels + dev tokens, writes wheels/manifest.json
    python -m bench.gpu.fetch_wheels --with-te       # also Transformer Engine (does not fit: see README)
    python -m bench.gpu.fetch_wheels --dry-run       # print the pip commands, download nothing

Versions are those of this project's environment (megatron-core pinned by pyproject), so the
GPU run executes the code tested here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_MIB = 64

# what `train.core` + megatron-core import beyond torch (and torch's own deps)
WHEELS = [
    "megatron-core==0.16.1", "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0",
    "typing-inspection==0.4.5", "typing-extensions==4.16.0", "pyyaml==6.0.4", "rich==15.0.0",
    "markdown-it-py==4.3.0", "mdurl==0.1.2", "pygments==2.21.0", "tqdm==4.70.1", "numpy==2.4.6",
    "packaging==26.4", "dill==0.4.1",
]
# Transformer Engine as pinned in pyproject's `gpu` extra. Measured here (pip download, 2026-11):
# transformer_engine-2.11.0 py3-none-any 0.7 MB; transformer_engine_cu13-2.11.0 manylinux_2_28
# 179.2 MB (> 64 MiB: cannot travel in one call); transformer_engine_torch-2.11.0 exists only as
# an sdist (compiled against the local torch with nvcc at install time).
TE_WHEELS = ["transformer-engine==2.11.0", "transformer-engine-cu13==2.11.0"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]


def pip_download_cmd(spec: str, dest: Path) -> list[str]:
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(dest), spec]


def size_report(files: list[Path], limit_mib: float = LIMIT_MIB) -> dict:
    """Sizes of the files to carry and whether they fit one device call."""
    sizes = {f.name: f.stat().st_size for f in files}
    total = sum(sizes.values())
    return {"files": sizes, "total_bytes": total, "total_mib": round(total / 2**20, 2),
            "limit_mib": limit_mib, "fits": total <= limit_mib * 2**20,
            "over_limit": sorted(n for n, s in sizes.items() if s > limit_mib * 2**20)}


def write_dev_tokens(out: Path, max_files: int = 400, max_tokens: int = 2_000_000) -> dict:
    """The dev data (stdlib code + docstrings, real Qwen3 tokenizer; `train.devdata`) as one
    int32 token stream, documents separated by <|endoftext|>: the loss comparison's input."""
    import numpy as np

    from train.data import QWEN3_EOD
    from train.devdata import qwen3_tokenizer, stdlib_texts

    tok = qwen3_tokenizer()
    texts = stdlib_texts(max_files)
    docs = [d for pair in zip(texts["code"], texts["prose"], strict=False) for d in pair]
    ids: list[int] = []
    for d in docs:
        ids.extend(tok.encode(d).ids)
        ids.append(QWEN3_EOD)
        if len(ids) >= max_tokens:
            break
    arr = np.asarray(ids[:max_tokens], dtype=np.int32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, arr)
    return {"path": str(out), "tokens": int(arr.size), "docs": len(docs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=HERE / "wheels")
    ap.add_argument("--payload", type=Path, default=HERE / "payload")
    ap.add_argument("--with-te", action="store_true", help="also download Transformer Engine's wheels")
    ap.add_argument("--dry-run", action="store_true", help="print the pip commands only")
    ap.add_argument("--tokens", type=int, default=2_000_000, help="dev tokens to prepare (0: none)")
    a = ap.parse_args(argv)
    specs = WHEELS + (TE_WHEELS if a.with_te else [])
    if a.dry_run:
        for s in specs:
            print(" ".join(pip_download_cmd(s, a.dest)))
        return 0
    a.dest.mkdir(parents=True, exist_ok=True)
    for s in specs:
        subprocess.run(pip_download_cmd(s, a.dest), check=True, capture_output=True)
        print(f"fetched {s}", flush=True)
    data = write_dev_tokens(a.payload / "devtokens.npy", max_tokens=a.tokens) if a.tokens else None
    files = sorted(a.dest.glob("*.whl")) + ([Path(data["path"])] if data else [])
    report = {**size_report(files), "dev_tokens": data}
    (a.dest / "manifest.json").write_text(json.dumps(report, indent=2))
    for name, size in sorted(report["files"].items(), key=lambda kv: -kv[1]):
        print(f"{size / 2**20:9.2f} MiB  {name}")
    print(f"total {report['total_mib']} MiB of {LIMIT_MIB} MiB per call: "
          f"{'fits' if report['fits'] else 'DOES NOT FIT'}; over the limit alone: {report['over_limit'] or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
