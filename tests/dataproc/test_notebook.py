"""The corpus-inspection notebook runs top to bottom on the demo's real corpus steps, draws the
report's plots inline, and its language / reason / label filters narrow what it shows."""

import json
from pathlib import Path

import nbformat
import pyarrow.dataset as ds
from nbclient import NotebookClient

from q3.paths import ROOT, data_dir
from tests.dataproc.corpus_chain import build_chain


def _run(tmp_path: Path, monkeypatch, data: Path, **env: str) -> tuple[str, int]:
    monkeypatch.setenv("Q3_DEMO_DATA", str(data))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(ROOT / "notebooks" / "corpus_inspection.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outs)
    images = sum("image/png" in o.get("data", {}) for o in outs)
    return printed, images


def _table(path: Path):
    return ds.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"]).to_table().to_pandas()


def test_corpus_inspection_notebook_executes(sample_dir, tmp_path, monkeypatch):
    data = build_chain(sample_dir, data_dir() / "test-corpus-chain-v1")
    stats = json.loads((data / "pipeline" / "stats.json").read_text())
    printed, images = _run(tmp_path, monkeypatch, data)
    assert "documents read: " + str(stats["input_docs"]) in printed
    assert "--- deu_Latn" in printed and "--- cmn_Hans" in printed
    assert images >= 6            # the report's 5 plots + the label plot of the filtered documents

    # filters: a language + a label query narrow the kept documents, a reason narrows the rejects
    rej = _table(data / "pipeline" / "rejected")
    rej["lang"] = rej["lang"].astype(str)
    top = rej["reason"].value_counts().index[0]
    lab = _table(data / "labeling" / "labeled" / "docs")
    lab["lang"] = lab["lang"].astype(str)
    n_kept = sum(1 for lang, x in zip(lab["lang"], lab["labels"], strict=True)
                 if lang == "deu_Latn" and x and x["edu_score"] is not None and x["edu_score"] >= 2)
    n_rej = int(((rej["lang"] == "deu_Latn") & (rej["reason"] == top)).sum())
    printed, _ = _run(tmp_path, monkeypatch, data, Q3_NB_LANGS="deu_Latn", Q3_NB_REASONS=top,
                      Q3_NB_LABEL_QUERY="edu_score >= 2")
    assert f"{n_rej:,} rejected documents match" in printed
    assert f"{n_kept:,} kept documents match" in printed
    assert "--- cmn_Hans" not in printed
    shown = [line for line in printed.splitlines() if line.startswith("--- rejected [")]
    assert all(f": {top}] deu_Latn" in line for line in shown)
