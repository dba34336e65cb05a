"""The pipeline on the real sample corpus (built by `dataproc.sample`) and on broken inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa

from dataproc import runner
from dataproc.config import LangIdConfig, PipelineConfig
from dataproc.stage import conform
from dataproc.stages.langid import LangIdStage


def test_lid_accuracy_per_language_on_the_sample(docs_by_lang):
    stage = LangIdStage(LangIdConfig())
    report = {}
    for lang, docs in sorted(docs_by_lang.items()):
        if lang.startswith("code_"):
            continue
        out = stage(conform(pa.Table.from_pydict({"text": [d["text"] for d in docs]})))
        got = out.column("lang").to_pylist()
        report[lang] = sum(g == lang for g in got) / len(docs)
    print("\nLID accuracy vs path language:", json.dumps({k: round(v, 3) for k, v in report.items()}))
    assert len(report) >= 20
    assert report["cmn_Hans"] >= 0.9 and report["cmn_Hant"] >= 0.9   # script told apart
    assert all(acc >= 0.8 for lang, acc in report.items() if len(docs_by_lang[lang]) >= 10), report
    assert sum(report.values()) / len(report) >= 0.95


def test_pipeline_on_the_sample_raw_dirs(sample_dir, tmp_path):
    cfg = PipelineConfig.model_validate({
        "input": [{"path": str(sample_dir / "raw"), "format": "text", "source": "debian-manpages",
                    "lang_from_path": True}],
        "output": str(tmp_path / "out"), "runner": "local", "chunk_files": 400})
    stats = runner.run(cfg)
    n_files = sum(1 for p in (sample_dir / "raw").rglob("*") if p.is_file())
    kept = runner.read_output(tmp_path / "out", "kept", ["id", "lang", "url"])
    rejected = runner.read_output(tmp_path / "out", "rejected", ["id", "lang", "stage", "reason"])
    assert kept.num_rows + rejected.num_rows == n_files == stats["input_docs"]
    assert [s["stage"] for s in stats["stages"]][-4:] == ["normalise", "langid", "quality", "pii"]
    by_lang = stats["kept_by_lang"]
    assert by_lang["code_Python"]["docs"] > 0          # code passes LID with the path's language
    assert {"cmn_Hans", "cmn_Hant", "deu_Latn", "rus_Cyrl", "jpn_Jpan"} <= set(by_lang)
    # the kept language mostly agrees with the directory it came from
    agree = sum(Path(u).parent.name == lg for u, lg in zip(kept.column("url").to_pylist(),
                                                           kept.column("lang").to_pylist(), strict=True))
    assert agree / kept.num_rows >= 0.95


def test_bad_inputs_end_as_rejected_rows(tmp_path):
    good = "Diese Handbuchseite beschreibt die Befehlszeilenoptionen des Programms und ihre Vorgaben."
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("\n".join([json.dumps({"text": good}), "{broken json", json.dumps([1, 2]),
                                          json.dumps({"text": good + " Zwei."})]) + "\n")
    (d / "b.jsonl").write_bytes(b'{"text": "caf\xe9 ohne utf-8"}\n')
    (d / "c.jsonl").write_bytes(b"")
    with gzip.open(d / "d.jsonl.gz", "wb") as f:
        f.write((json.dumps({"text": good + " Drei."}) + "\n").encode() * 200)
    raw = (d / "d.jsonl.gz").read_bytes()
    (d / "d.jsonl.gz").write_bytes(raw[: len(raw) // 2])      # truncated gzip
    (d / "e.jsonl").write_bytes(bytes(range(256)) * 50)        # binary
    t = tmp_path / "txt"
    t.mkdir()
    (t / "empty.txt").write_bytes(b"")
    (t / "blob.txt").write_bytes(bytes(range(256)) * 50)
    (t / "ok.txt").write_text(good + " Vier.")
    cfg = PipelineConfig.model_validate({
        "input": [{"path": str(d / "*.jsonl*"), "format": "jsonl", "source": "bad"},
                   {"path": str(t), "format": "text", "source": "bad-text"}],
        "output": str(tmp_path / "out"), "runner": "local", "chunk_files": 2,
        "quality": {"enabled": []}})
    stats = runner.run(cfg)
    kept = runner.read_output(tmp_path / "out", "kept")
    rejected = runner.read_output(tmp_path / "out", "rejected")
    assert stats["kept_docs"] == kept.num_rows >= 2
    reasons = set(rejected.column("reason").to_pylist())
    assert "malformed_json" in reasons
    assert {"truncated_gzip", "invalid_utf8", "binary_file", "empty_file"} <= reasons, reasons
    assert kept.num_rows + rejected.num_rows == stats["input_docs"]
