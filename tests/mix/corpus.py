"""Real multilingual test documents in DOC_SCHEMA, partitioned by `lang`.

Preferred source: the project's sample builder (`dataproc.sample`, Debian manpages in ~25
languages + Python sources). Until that module is on this branch, the same kind of real text is
read straight from the machine: the installed manpages under /usr/share/man/<locale>/ (roff
source, real prose in each language) and the Python standard library's sources (code).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from q3.schemas import DOC_SCHEMA, content_id

LOCALES = {
    "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "es": "spa_Latn", "fi": "fin_Latn",
    "fr": "fra_Latn", "hr": "hrv_Latn", "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn",
    "ja": "jpn_Jpan", "ko": "kor_Hang", "nl": "nld_Latn", "pl": "pol_Latn", "pt": "por_Latn",
    "ro": "ron_Latn", "ru": "rus_Cyrl", "sl": "slv_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn",
    "tr": "tur_Latn", "uk": "ukr_Cyrl", "zh_CN": "cmn_Hans", "zh_TW": "cmn_Hant", "man1": "eng_Latn",
}


def _sample_records(per_lang: int, max_chars: int) -> list[dict]:
    try:  # the project's own sample builder, once the ingest branch is merged
        from dataproc.sample import sample_records  # type: ignore[attr-defined]
        return sample_records(per_lang=per_lang, max_chars=max_chars)
    except (ImportError, AttributeError):
        pass
    recs: list[dict] = []
    man = Path("/usr/share/man")
    for loc, lang in sorted(LOCALES.items()):
        d = man / loc if loc == "man1" else man / loc / "man1"
        files = sorted(d.glob("*.gz"))[: per_lang * 3] if d.is_dir() else []
        got = 0
        for f in files:
            try:
                text = gzip.decompress(f.read_bytes()).decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if len(text) < 400:
                continue
            recs.append({"text": text[:max_chars], "url": str(f), "source": "manpages", "lang_hint": lang})
            got += 1
            if got >= per_lang:
                break
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(stdlib.glob("*.py"))[: per_lang * 2]:
        text = f.read_text(encoding="utf-8", errors="replace")
        if len(text) >= 400:
            recs.append({"text": text[:max_chars], "url": str(f), "source": "python", "lang_hint": "code_Python"})
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
