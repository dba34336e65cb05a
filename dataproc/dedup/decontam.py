"""Decontamination: n-gram overlap of documents with evaluation sets (13-grams by default).

Eval sets are JSONL or Parquet files (a folder = all such files in it); the benchmark's name is the
file stem. Every text field named in `text_fields` of every item is tokenised like the documents
(lower-cased word runs; characters for CJK/Thai/... text) and its n-grams hashed (64-bit) into one
sorted index. A document with >= `min_matches` n-grams in the index is contaminated: rejected with
reason `contaminated:<benchmark>` (mode `reject`), or the matching spans are cut out of its text
(mode `remove_span`; a document left empty is rejected). Items shorter than n units cannot match
an n-gram and are skipped (counted in `EvalIndex.skipped`).

`Decontaminator` is a stage function (Arrow batch -> batch, dataproc/stage.py), so the Spark job,
the local runner, and later the synthetic/SFT filters use the same code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataproc.dedup.config import DecontamConfig
from dataproc.dedup.minhash import _char_ngram_hashes, _word_ngram_hashes, is_char_lang
from dataproc.stage import conform, reject
from q3.errors import InputMissing

STAGE = "decontam"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff]")


def units(text: str, char_mode: bool) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens (lower-cased) and their (start, end) offsets in `text`."""
    toks, spans = [], []
    for m in _WORD.finditer(text):
        if char_mode:
            for k, ch in enumerate(m.group()):
                toks.append(ch.lower())
                spans.append((m.start() + k, m.start() + k + 1))
        else:
            toks.append(m.group().lower())
            spans.append((m.start(), m.end()))
    return toks, spans


def ngram_hashes(toks: list[str], n: int, char_mode: bool) -> np.ndarray:
    """uint64 hash of every n-gram of `toks` (empty when there are fewer than n)."""
    if len(toks) < n or any(not t for t in toks):
        return np.empty(0, np.uint64)
    if char_mode:
        joined = "".join(toks)
        if len(joined) != len(toks):       # a lower-cased char became several: hash per token
            return np.empty(0, np.uint64)
        return _char_ngram_hashes(joined, n)
    if any(" " in t for t in toks):
        return np.empty(0, np.uint64)
    return _word_ngram_hashes(" ".join(toks), n)


def looks_unsegmented(text: str) -> bool:
    """For eval items (no `lang`): mostly CJK/Thai characters -> character n-grams."""
    letters = sum(1 for _ in _WORD.finditer(text)) or 1
    return len(_CJK.findall(text)) > 0.3 * max(1, len(text.replace(" ", ""))) or letters == 0


def _read_items(path: Path, fields: list[str]) -> list[str]:
    if path.suffix == ".parquet":
        t = pq.read_table(path)
        out = []
        for f in fields:
            if f in t.schema.names:
                out += [x for x in t.column(f).to_pylist() if isinstance(x, str)]
        return out
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            for f in fields:
                v = rec.get(f)
                if isinstance(v, str):
                    out.append(v)
                elif isinstance(v, list):
                    out += [x for x in v if isinstance(x, str)]
    return out


def eval_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(x for x in p.rglob("*") if x.suffix in (".jsonl", ".json", ".parquet"))
        elif p.exists():
            files.append(p)
        else:
            raise InputMissing(f"eval set not found: {p}")
    return files


@dataclass
class EvalIndex:
    """Sorted n-gram hashes with the benchmark each came from."""

    names: list[str]
    hashes: np.ndarray                       # sorted uint64
    bench: np.ndarray                        # int32, aligned with hashes
    items: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, cfg: DecontamConfig) -> EvalIndex:
        names, hs, bs, items, skipped = [], [], [], {}, {}
        for f in eval_files(cfg.evals):
            name = f.stem
            if name not in names:
                names.append(name)
            bi = names.index(name)
            texts = _read_items(f, cfg.text_fields)
            items[name] = items.get(name, 0) + len(texts)
            for t in texts:
                cm = looks_unsegmented(t)
                h = ngram_hashes(units(t, cm)[0], cfg.char_ngram if cm else cfg.ngram, cm)
                if len(h) == 0:
                    skipped[name] = skipped.get(name, 0) + 1
                    continue
                hs.append(h)
                bs.append(np.full(len(h), bi, np.int32))
        h = np.concatenate(hs) if hs else np.empty(0, np.uint64)
        b = np.concatenate(bs) if bs else np.empty(0, np.int32)
        order = np.argsort(h, kind="stable")
        return cls(names, h[order], b[order], items, skipped)

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Benchmark index per hash, -1 where absent."""
        if len(self.hashes) == 0 or len(h) == 0:
            return np.full(len(h), -1, np.int32)
        pos = np.searchsorted(self.hashes, h)
        pos = np.minimum(pos, len(self.hashes) - 1)
        return np.where(self.hashes[pos] == h, self.bench[pos], -1)


class Decontaminator:
    """Stage: reject (or cut spans from) documents overlapping the eval sets."""

    name = STAGE

    def __init__(self, cfg: DecontamConfig, index: EvalIndex | None = None):
        self.cfg = cfg
        self.index = index if index is not None else EvalIndex.build(cfg)

    def _check(self, text: str, lang: str | None) -> tuple[str | None, str | None, str | None]:
        """(benchmark, detail, new_text or None)."""
        cm = is_char_lang(lang)
        n = self.cfg.char_ngram if cm else self.cfg.ngram
        toks, spans = units(text, cm)
        h = ngram_hashes(toks, n, cm)
        hit = self.index.lookup(h)
        found = np.flatnonzero(hit >= 0)
        if len(found) < self.cfg.min_matches:
            return None, None, None
        counts = np.bincount(hit[found], minlength=len(self.index.names))
        order = sorted(range(len(counts)), key=lambda i: (-counts[i], self.index.names[i]))
        bench = self.index.names[order[0]]
        detail = ", ".join(f"{self.index.names[i]}: {counts[i]} {n}-grams" for i in order if counts[i])
        if self.cfg.mode == "reject":
            return bench, detail, None
        covered = np.zeros(len(toks) + 1, np.int32)
        np.add.at(covered, found, 1)
        np.add.at(covered, found + n, -1)
        mask = np.cumsum(covered)[:len(toks)] > 0
        pieces, last = [], 0
        i = 0
        while i < len(toks):
            if mask[i]:
                j = i
                while j + 1 < len(toks) and mask[j + 1]:
                    j += 1
                pieces.append(text[last:spans[i][0]])
                last = spans[j][1]
                i = j + 1
            else:
                i += 1
        pieces.append(text[last:])
        return bench, detail, "".join(pieces)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = conform(batch)
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist()
        reasons, details, new_texts, mask = [], [], list(texts), []
        for i, (t, lg) in enumerate(zip(texts, langs, strict=True)):
            bench, detail, cut = self._check(t or "", lg)
            bad = bench is not None and (cut is None or not _WORD.search(cut))
            if bench is not None and cut is not None and not bad:
                new_texts[i] = cut
            mask.append(bad)
            reasons.append(f"contaminated:{bench}" if bench else None)
            details.append(detail)
        if self.cfg.mode == "remove_span":
            col = pa.array(new_texts, pa.string())
            batch = batch.set_column(batch.schema.get_field_index("text"), "text", col)
            n_chars = pa.array([len(x) if x is not None else None for x in new_texts], pa.int64())
            batch = batch.set_column(batch.schema.get_field_index("n_chars"), "n_chars", n_chars)
        return reject(batch, pa.array(mask, pa.bool_()), STAGE, pa.array(reasons, pa.string()),
                      pa.array(details, pa.string()))
