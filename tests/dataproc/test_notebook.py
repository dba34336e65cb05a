"""The corpus-inspection notebook runs top to bottom on a real pipeline output."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from dataproc import runner
from dataproc.config import PipelineConfig
from q3.paths import ROOT


def test_corpus_inspection_notebook_executes(sample_dir, tmp_path, monkeypatch):
    langs = ["deu_Latn", "cmn_Hans", "rus_Cyrl", "code_Python"]
    cfg = PipelineConfig.model_validate({
        "input": [{"path": str(sample_dir / "raw" / lang), "format": "text", "source": "debian-manpages",
                    "lang_from_path": True} for lang in langs],
        "output": str(tmp_path / "corpus"), "runner": "local"})
    stats = runner.run(cfg)
    monkeypatch.setenv("Q3_CORPUS", str(tmp_path / "corpus"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(ROOT / "notebooks" / "corpus_inspection.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "documents read: " + str(stats["input_docs"]) in printed
    assert "--- deu_Latn" in printed and "--- cmn_Hans" in printed
    assert Path(tmp_path / "corpus" / "stats.json").exists()
