"""Quality filters on equal rules: ours (`QualityStage`, datatrove-compatible mode) vs datatrove 0.10.1.

    python -m bench.filters_vs_datatrove                 # >= 10,000 English docs, cached corpus
    python -m bench.filters_vs_datatrove --docs 2000     # a smaller run

Corpus (built once, cached in $Q3_DATA/cache/filters_corpus/en.jsonl): real English text from Debian
packages fetched with `apt-get download` like `q3 data sample` — English man pages (`manpages`,
`manpages-dev`; each whole page and each of its sections), `debian-reference-en` (its plain-text
edition cut into ~3 KB runs of paragraphs) and `fortunes` / `fortunes-min` (one doc per fortune, and runs of ten).

Equal rules: both sides use the published default thresholds of GopherRepetitionFilter,
GopherQualityFilter, C4QualityFilter and FineWebQualityFilter, and the SAME word and sentence
tokenisation: datatrove's English tokenizer (spaCy `blank("en")` + sentencizer) is replaced by
`DatatroveCompatTokenizer`, which splits exactly like our stage (`dataproc.stages.quality`
`compat_tokens` / `compat_sentences`). Ours runs with `datatrove_compat=true` (datatrove's rule
variants, see docs/dataproc.md). Agreement is measured per filter on the keep/drop decision and on
the first failing rule (datatrove stops at the first; ours lists all, in datatrove's order).

Ours in compat mode is one compiled pass per Arrow batch (quality_kernels.compat_signals: a numba
tokeniser over the UTF-8 code points, character classes built from Python's `re`); the bench checks
that its token lists equal the regex's on every document and that the stage output equals the
document-by-document reference path (`QualityStage._call_python`).

Speed: docs per CPU-second, one core, same process, back to back. datatrove is timed twice: with the
shared regex tokenizer (equal work) and with its own default spaCy tokenizer (what it runs out of
the box). Results: bench/results/filters_vs_datatrove.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import time
from pathlib import Path

from q3.log import print_table
from q3.paths import ROOT, data_dir

PACKAGES = ["manpages", "manpages-dev", "debian-reference-en", "fortunes", "fortunes-min"]
FAMILIES = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/&()-]{2,}$")


# ---- corpus ----------------------------------------------------------------------------------
def _split_sections(text: str) -> list[str]:
    """Man page -> its sections (an all-caps heading line at column 0 starts one)."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if _HEADING.match(line) and out[-1]:
            out.append([])
        out[-1].append(line)
    return ["\n".join(s).strip() for s in out]


def build_corpus(cache: Path | None = None) -> Path:
    """English docs as JSONL (text, url); built once from Debian packages, then reused."""
    from dataproc.sample import fetch_packages, lang_from_man_path
    from dataproc.troff import troff_to_text

    cache = cache or data_dir() / "cache"
    out = cache / "filters_corpus" / "en.jsonl"
    if out.exists():
        return out
    roots = fetch_packages(PACKAGES, cache)
    missing = [p for p in PACKAGES if p not in roots]
    if missing:
        raise RuntimeError(f"could not fetch {missing} with apt-get download")
    docs: list[tuple[str, str]] = []
    for pkg in ("manpages", "manpages-dev"):
        for path in sorted((roots[pkg] / "usr/share/man").rglob("*")):
            rel = "/" + str(path.relative_to(roots[pkg]))
            if path.is_symlink() or not path.is_file() or lang_from_man_path(rel) != "eng_Latn":
                continue
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            text = troff_to_text(raw.decode("utf-8", "replace")).strip()
            if len(text) < 20:
                continue
            docs.append((f"{pkg}:{rel}", text))
            docs += [(f"{pkg}:{rel}#s{i}", s) for i, s in enumerate(_split_sections(text)) if len(s) >= 100]
    ref = roots["debian-reference-en"] / "usr/share/debian-reference/debian-reference.en.txt.gz"
    text = gzip.decompress(ref.read_bytes()).decode("utf-8", "replace")
    chunk: list[str] = []
    for para in text.split("\n\n"):   # ~3 KB documents of whole paragraphs
        chunk.append(para)
        if sum(map(len, chunk)) >= 3000:
            docs.append((f"debian-reference:{len(docs)}", "\n\n".join(chunk).strip()))
            chunk = []
    for pkg in ("fortunes", "fortunes-min"):
        for path in sorted((roots[pkg] / "usr/share/games/fortunes").glob("*")):
            if path.suffix or not path.is_file():
                continue   # .dat index files
            items = [f.strip() for f in path.read_text("utf-8", "replace").split("\n%\n") if f.strip()]
            docs += [(f"{pkg}:{path.name}:{i}", f) for i, f in enumerate(items)]
            docs += [(f"{pkg}:{path.name}:run{i}", "\n\n".join(items[i:i + 10]))
                     for i in range(0, len(items), 10)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for url, text in docs:
            f.write(json.dumps({"url": url, "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def load_corpus(n_docs: int | None = None) -> list[dict]:
    with open(build_corpus(), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    if n_docs and n_docs < len(docs):   # an even stride over every source
        step = len(docs) / n_docs
        docs = [docs[int(i * step)] for i in range(n_docs)]
    return docs


# ---- datatrove on the same tokenisation --------------------------------------------------------
_DT_REASON = {   # datatrove's reason -> ours (per filter)
    "gopher_quality": {
        "gopher_short_doc": "gopher_min_words", "gopher_long_doc": "gopher_max_words",
        "gopher_below_avg_threshold": "gopher_min_avg_word_len",
        "gopher_above_avg_threshold": "gopher_max_avg_word_len",
        "gopher_too_many_hashes": "gopher_hash_ratio", "gopher_too_many_ellipsis": "gopher_ellipsis_ratio",
        "gopher_too_many_bullets": "gopher_bullet_lines", "gopher_too_many_end_ellipsis": "gopher_ellipsis_lines",
        "gopher_below_alpha_threshold": "gopher_alpha_words", "gopher_enough_stop_words": "gopher_stop_words"},
    "gopher_repetition": {
        "empty": "gopher_empty", **{r: f"gopher_{r}" for r in (
            "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")},
        **{f"top_{n}_gram": f"gopher_top_{n}gram" for n in (2, 3, 4)},
        **{f"duplicated_{n}_n_grams": f"gopher_dup_{n}gram" for n in range(5, 11)}},
    "c4": {"lorem_ipsum": "c4_lorem_ipsum", "curly_bracket": "c4_curly_bracket",
           "too_few_sentences": "c4_min_sentences"},
    "fineweb": {"empty": "fineweb_empty", "line_punct_ratio": "fineweb_line_punct",
                "short_line_ratio": "fineweb_short_lines", "char_dup_ratio": "fineweb_char_dup",
                "list_ratio": "fineweb_list_ratio"},
}
_FAMILY_OF = {ours: fam for fam, m in _DT_REASON.items() for ours in m.values()}


def _compat_tokenizer():
    from datatrove.utils.word_tokenizers import WordTokenizer

    from dataproc.stages.quality_compat import compat_sentence_spans, compat_sentences, compat_tokens

    class DatatroveCompatTokenizer(WordTokenizer):
        """datatrove's word/sentence tokenizer interface over our tokenisation (same words on both sides)."""

        def word_tokenize(self, text: str) -> list[str]:
            return compat_tokens(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return compat_sentences(text)

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return compat_sentence_spans(text)

    return DatatroveCompatTokenizer("en")


@contextlib.contextmanager
def shared_tokenizer():
    """Make datatrove's split_into_words/sentences use our tokenisation (they look the loader up per call)."""
    import datatrove.utils.word_tokenizers as wt

    tok = _compat_tokenizer()
    old = wt.load_word_tokenizer
    wt.load_word_tokenizer = lambda language: tok
    try:
        yield
    finally:
        wt.load_word_tokenizer = old


def datatrove_filters() -> dict:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    return {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
            "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}


def run_datatrove(docs: list[dict]) -> tuple[list[dict[str, str | None]], float]:
    """First failing reason (ours' name; None = kept) per filter per doc, and CPU seconds.
    Every filter sees every document (each on its own Document: C4 rewrites the text)."""
    from datatrove.data import Document

    filters = datatrove_filters()
    out: list[dict[str, str | None]] = []
    t = time.process_time()
    for i, d in enumerate(docs):
        row: dict[str, str | None] = {}
        for fam, f in filters.items():
            r = f.filter(Document(text=d["text"], id=str(i)))
            row[fam] = None if r is True else _DT_REASON[fam][r[1]]
        out.append(row)
    return out, time.process_time() - t


def run_ours(docs: list[dict], compat: bool = True) -> tuple[list[dict[str, str | None]], float]:
    """Our stage on one Arrow batch (as the pipeline calls it); first failing rule per filter."""
    import pyarrow as pa

    from dataproc.config import QualityConfig
    from dataproc.stages.quality import QualityStage

    stage = QualityStage(QualityConfig(datatrove_compat=compat))
    batch = pa.RecordBatch.from_pydict({"text": [d["text"] for d in docs], "lang": ["eng_Latn"] * len(docs)})
    t = time.process_time()
    res = stage(batch)
    cpu = time.process_time() - t
    failed = res.column("quality").field("failed").to_pylist()
    out = []
    for reasons in failed:
        row: dict[str, str | None] = dict.fromkeys(FAMILIES)
        for r in reasons or []:
            fam = _FAMILY_OF[r]
            row[fam] = row[fam] or r
        out.append(row)
    return out, cpu


def check_compiled(docs: list[dict]) -> dict:
    """The proof behind the compiled pass: its tokeniser gives the regex's token list on every
    document, and the whole stage output (signals, failed, reason, detail) equals the
    document-by-document reference path."""
    import pyarrow as pa

    from dataproc.config import QualityConfig
    from dataproc.stage import conform
    from dataproc.stages.quality import QualityStage
    from dataproc.stages.quality_compat import compat_token_spans, compat_tokens

    texts = [d["text"] for d in docs]
    counts, starts, ends = compat_token_spans(pa.array(texts))
    same_tokens = n_tokens = k = 0
    for text, c in zip(texts, counts.tolist(), strict=True):
        ours = [text[a:b] for a, b in zip(starts[k:k + c].tolist(), ends[k:k + c].tolist(), strict=True)]
        same_tokens += ours == compat_tokens(text)
        n_tokens += c
        k += c
    stage = QualityStage(QualityConfig(datatrove_compat=True))
    batch = conform(pa.table({"text": texts, "lang": ["eng_Latn"] * len(texts)}))
    fast, ref = stage._call_compiled(batch), stage._call_python(batch)
    differ = [n for n in ref.schema.names if not fast.column(n).equals(ref.column(n))]
    return {"docs": len(texts), "tokens": n_tokens, "same_token_lists": same_tokens, "columns_differing": differ}


def agreement(docs: list[dict], dt: list[dict], ours: list[dict]) -> tuple[list[dict], dict]:
    """Per filter and per rule: share of docs where both sides decide alike; disagreement classes."""
    rows = []
    classes: dict[tuple[str, str, str], list[str]] = {}
    n = len(docs)
    for fam in FAMILIES:
        same = sum(1 for a, b in zip(dt, ours, strict=True) if (a[fam] is None) == (b[fam] is None))
        first = sum(1 for a, b in zip(dt, ours, strict=True) if a[fam] == b[fam])
        rows.append({"filter": fam, "rule": "(keep/drop)", "dt_drops": sum(a[fam] is not None for a in dt),
                     "ours_drops": sum(b[fam] is not None for b in ours), "agree": same / n, "first_rule": first / n})
        for rule in _DT_REASON[fam].values():
            a_n = sum(a[fam] == rule for a in dt)
            b_n = sum(b[fam] == rule for b in ours)
            if not a_n and not b_n:
                continue
            agree = sum(1 for a, b in zip(dt, ours, strict=True) if (a[fam] == rule) == (b[fam] == rule)) / n
            rows.append({"filter": fam, "rule": rule, "dt_drops": a_n, "ours_drops": b_n, "agree": agree,
                         "first_rule": ""})
        for d, a, b in zip(docs, dt, ours, strict=True):
            if a[fam] != b[fam]:
                classes.setdefault((fam, a[fam] or "keep", b[fam] or "keep"), []).append(d["url"])
    return rows, classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=12_000, help="documents (evenly strided over the corpus)")
    ap.add_argument("--spacy-docs", type=int, default=2_000,
                    help="documents for the datatrove-with-spaCy (out of the box) timing; 0: skip")
    args = ap.parse_args()
    docs = load_corpus(args.docs)
    chars = sum(len(d["text"]) for d in docs)
    print(f"{len(docs):,} English documents, {chars / 1e6:.1f} M chars, load average {os.getloadavg()[0]:.1f}")
    # interleaved: ours, datatrove, ours again (the faster of our two runs vs datatrove's one)
    ours, ours_first = run_ours(docs)   # the first includes per-process setup (char tables, numba cache)
    with shared_tokenizer():
        dt, dt_cpu = run_datatrove(docs)
    _, ours_cpu2 = run_ours(docs)
    ours_cpu = min(ours_first, ours_cpu2)
    _, native_cpu = run_ours(docs, compat=False)
    rows, classes = agreement(docs, dt, ours)
    check = check_compiled(docs)
    print(f"compiled tokeniser: the regex's token list on {check['same_token_lists']:,} of {check['docs']:,} "
          f"documents ({check['tokens']:,} tokens); compiled pass vs per-document reference, columns "
          f"differing: {check['columns_differing'] or 'none'}")
    print_table("per-rule decision agreement (datatrove stops at the first failing rule of a filter)",
                ["filter", "rule", "datatrove drops", "ours drops", "agree", "same first rule"],
                [[r["filter"], r["rule"], r["dt_drops"], r["ours_drops"], f"{100 * r['agree']:.2f}%",
                  f"{100 * r['first_rule']:.2f}%" if r["first_rule"] != "" else ""] for r in rows])
    print("disagreement classes (filter, datatrove, ours): count, examples")
    for (fam, a, b), urls in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        print(f"  {fam:18s} {a:26s} {b:26s} {len(urls):5d}  {', '.join(urls[:2])}")
    speed = [
        {"side": "ours, datatrove_compat (same rules)", "cpu_s": ours_cpu, "docs_per_cpu_s": len(docs) / ours_cpu},
        {"side": "ours, default (language-aware)", "cpu_s": native_cpu, "docs_per_cpu_s": len(docs) / native_cpu},
        {"side": "datatrove 0.10.1, same tokenizer", "cpu_s": dt_cpu, "docs_per_cpu_s": len(docs) / dt_cpu},
    ]
    sp = None
    if args.spacy_docs:
        sub = docs[:: max(1, len(docs) // args.spacy_docs)][: args.spacy_docs]
        sp_dt, sp_cpu = run_datatrove(sub)
        ours_dec, ours_sub = run_ours(sub)
        sp_rows, _ = agreement(sub, sp_dt, ours_dec)
        sp = {"docs": len(sub), "datatrove_spacy_cpu_s": sp_cpu, "ours_cpu_s": ours_sub,
              "ratio": (len(sub) / ours_sub) / (len(sub) / sp_cpu),
              "agree_keep_drop": {r["filter"]: r["agree"] for r in sp_rows if r["rule"] == "(keep/drop)"}}
        print(f"datatrove with its own spaCy tokenizer vs ours (compat), keep/drop agreement on {len(sub):,} docs: "
              + ", ".join(f"{k} {100 * v:.2f}%" for k, v in sp["agree_keep_drop"].items()))
        speed.append({"side": f"datatrove 0.10.1, spaCy (default), {len(sub):,} docs", "cpu_s": sp_cpu,
                      "docs_per_cpu_s": len(sub) / sp_cpu})
    print_table("speed, one core", ["side", "CPU s", "docs per CPU-second"],
                [[s["side"], f"{s['cpu_s']:.2f}", f"{s['docs_per_cpu_s']:,.0f}"] for s in speed])
    ratio = dt_cpu / ours_cpu
    print(f"ours, first run (with per-process setup): {ours_first:.2f} CPU s")
    print(f"ours / datatrove (same tokenizer): {ratio:.1f}x per core"
          + (f"; ours / datatrove with spaCy: {sp['ratio']:.1f}x ({sp['docs']:,} docs)" if sp else "")
          + f"; load average {os.getloadavg()[0]:.1f}")
    res = ROOT / "bench" / "results"
    res.mkdir(exist_ok=True)
    (res / "filters_vs_datatrove.json").write_text(json.dumps({
        "docs": len(docs), "chars": chars, "rows": rows, "speed": speed, "ratio_same_tokenizer": ratio,
        "ours_first_run_cpu_s": ours_first, "compiled_check": check,
        "spacy": sp, "classes": {" | ".join(k): {"count": len(v), "examples": v[:3]} for k, v in classes.items()},
        "load": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
