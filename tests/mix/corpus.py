"""Real multilingual test documents in DOC_SCHEMA, partitioned by `lang`: the project's sample
corpus (`dataproc.sample`: Debian manpages in ~25 languages + Python stdlib sources) as kept
documents with lang = lang_hint, a quality score and (for 70%) annotation labels, derived
deterministically from the id so label predicates have something to select."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from q3.schemas import DOC_SCHEMA, content_id


def _sample_records(per_lang: int, max_chars: int) -> list[dict]:
    """Records {text, url, source, lang_hint} from the project's sample builder (`q3 data sample`).

    Same settings as tests/dataproc's fixture, so one build per machine serves both (under Q3_DATA).
    """
    from dataproc.sample import SampleConfig, build_sample
    from q3.paths import data_dir

    out = build_sample(SampleConfig(per_language=40, code_files=40, output=str(data_dir() / "sample-tests")))
    by_lang: dict[str, list[dict]] = {}
    with (out / "docs.jsonl").open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            by_lang.setdefault(r["lang_hint"], []).append(r)
    recs = []
    for lang in sorted(by_lang):
        for r in by_lang[lang][:per_lang]:
            recs.append({"text": r["text"][:max_chars], "url": r.get("url", ""), "source": r.get("source", "sample"),
                         "lang_hint": lang})
    return recs


def _unit(key: str, salt: str) -> float:
    return int(hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=4).hexdigest(), 16) / 2**32


def build_corpus(out: Path, per_lang: int = 6, max_chars: int = 40_000) -> Path:
    """Write kept documents (DOC_SCHEMA) to out/lang=<code>/part-0.parquet; returns out."""
    if (out / "_DONE").exists():
        return out
    rows = []
    for r in _sample_records(per_lang, max_chars):
        did = content_id(r["text"])
        labelled = _unit(did, "labelled") < 0.7          # labels come later; some stay null
        is_code = r["lang_hint"].startswith("code_")
        rows.append({
            "id": did, "text": r["text"], "source": r["source"], "url": r["url"], "lang": r["lang_hint"],
            "lang_score": 1.0, "n_chars": len(r["text"]),
            "quality": {"score": _unit(did, "q")},
            "labels": None if not labelled else {
                "edu_score": round(5 * _unit(did, "edu"), 2),
                "domain": "code" if is_code else ["science", "technology", "reference"][int(3 * _unit(did, "d"))],
                "quality_score": _unit(did, "ql"), "has_code": is_code, "has_math": _unit(did, "m") < 0.2,
                "reasoning_score": _unit(did, "r"), "safety": "safe"},
            "dup_cluster": None, "n_tokens": None,
        })
    table = pa.Table.from_pylist(rows, schema=DOC_SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    for lang in sorted(set(table.column("lang").to_pylist())):
        part = table.filter(pa.compute.equal(table.column("lang"), lang)).drop(["lang"])
        (out / f"lang={lang}").mkdir(exist_ok=True)
        pq.write_table(part, out / f"lang={lang}" / "part-0.parquet")
    (out / "_DONE").write_text(json.dumps({"docs": len(rows)}))
    return out
