"""Fixtures for synth tests: seed documents from the project's real sample corpus, and a real
OpenAI-compatible HTTP server (tests/llm_fault_server.py) with deterministic replies."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_fault_server import FaultServer, last_user  # noqa: E402


@pytest.fixture(scope="session")
def sample_docs_synth() -> list[dict]:
    """The sample corpus, built (once, cached under $Q3_DATA) by `dataproc.sample` - the same build
    the dataproc tests use, so a CI run builds it once."""
    from dataproc.sample import SampleConfig, build_sample
    from q3.paths import data_dir

    out = build_sample(SampleConfig(per_language=40, code_files=40, output=str(data_dir() / "sample-tests")))
    with (out / "docs.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def seed_file(sample_docs_synth, tmp_path_factory) -> Path:
    """Six seeds: English, German, French and Chinese man pages, a Python file, and a near copy of the
    English page (same opening) whose textbook reply duplicates the first's."""
    by_lang: dict[str, list[dict]] = {}
    for d in sample_docs_synth:
        by_lang.setdefault(d["lang_hint"], []).append(d)
    picks = [next(d for d in by_lang[lang] if 400 < len(d["text"]) < 8000)
             for lang in ("eng_Latn", "deu_Latn", "fra_Latn", "cmn_Hans", "code_Python")]
    near_copy = dict(picks[0], text=picks[0]["text"] + "\n\nSee also the online documentation.")
    rows = [{"text": d["text"], "lang": d["lang_hint"], "source": d["source"], "url": d.get("url")}
            for d in picks + [near_copy]]
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def document_part(user: str) -> str:
    m = re.search(r"(?:DOCUMENT|SOURCE|OCR TEXT):\n(.*)", user, re.S)
    return m.group(1) if m else user


def synth_reply(body: dict[str, Any]) -> str:
    """Deterministic 'model': text replies quote the document's first 40 words (so two seeds with
    the same opening give duplicate textbooks), JSON replies follow the template's schema."""
    user = last_user(body)
    h = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
    opening = " ".join(document_part(user).split()[:40])
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        name = fmt["json_schema"]["name"]
        a, b = ("question", "answer") if name == "qa" else ("instruction", "response")
        return json.dumps({"pairs": [{a: f"Item {k} ({h}): what does this say?", b: f"It says: {opening[:80]}"}
                                     for k in range(2)]})
    return " ".join(user.split()[:8]) + " -> " + opening   # the instruction's start: templates differ


class GatedResponder:
    """Answers `open_for` requests, then holds every further request unanswered (as a slow model
    would) until `release()`; held requests are then dropped without an answer."""

    def __init__(self, open_for: int | None = None):
        self.open_for = open_for
        self.answered = 0
        self.held = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.abort = False

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            hold = self.open_for is not None and self.answered >= self.open_for
            if hold:
                self.held += 1
            else:
                self.answered += 1
        if hold:
            self.gate.wait(60)
            if self.abort:   # the client is gone: raising here means no answer is sent or counted
                raise ConnectionAbortedError("client killed while this request was in flight")
        return synth_reply(body)

    def release(self) -> None:
        self.abort = True
        self.gate.set()


@pytest.fixture
def llm_server():
    with FaultServer(models=("test-model",), responder=synth_reply) as s:
        yield s
