"""Heuristic quality filters: Gopher quality + repetition, C4, FineWeb — language-aware.

Every signal of every enabled rule family is computed for every document and written into the
`quality` struct (q3.schemas.QUALITY_TYPE); a document failing any rule is rejected with the
first failing rule as `reason` (e.g. `gopher_min_words`, `c4_lorem_ipsum`, `fineweb_line_punct`)
and all failing rules in `quality.failed`. `quality.score` = fraction of evaluated rules passed.

Thresholds are the published defaults (as implemented by datatrove, so results are comparable).
Language-aware: for scripts written without spaces (CJK, Thai, ...) a "word" is one ideograph /
kana / Thai character or a run of other letters, and the rules about word length and stop words
are skipped; stop-word rules apply only to languages with a stop-word list. Documents whose `lang`
starts with a skip prefix (code) get signals but are never dropped.

Per document this is one tokenisation (one regex `findall`) and a few passes over ints; regexes
are compiled once, words are interned to ints and every n-gram rule
is one compiled call (quality_kernels, numba). In datatrove_compat mode a whole batch is one
compiled pass instead (quality_kernels.compat_signals over the Arrow UTF-8 buffer: the same tokens
as the regex, no Python strings per word) and rules are numpy over columns (_call_compiled); the
per-document path (_call_python) is its reference and serves C4 rewriting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.config import QualityConfig
from dataproc.stage import conform, reject
from dataproc.stages import quality_compat as dt
from dataproc.stages import quality_kernels as qk
from dataproc.stages.quality_kernels import ngram_chars
from q3.schemas import QUALITY_TYPE

# Stop words: Gopher's English list, and equally small lists of the most frequent function words
# for a few more languages (all must be lowercase).
STOP_WORDS: dict[str, list[str]] = {
    "eng": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "deu": ["der", "die", "das", "und", "zu", "von", "mit", "ist", "nicht", "ein"],
    "fra": ["le", "la", "les", "de", "et", "un", "une", "est", "pour", "des"],
    "spa": ["el", "la", "de", "que", "y", "en", "los", "se", "del", "las"],
    "ita": ["il", "la", "di", "che", "e", "per", "un", "del", "della", "non"],
    "por": ["o", "a", "de", "que", "e", "do", "da", "em", "para", "não"],
    "nld": ["de", "het", "een", "van", "en", "is", "dat", "niet", "op", "te"],
    "rus": ["и", "в", "не", "на", "что", "с", "по", "для", "это", "или"],
}

_UNSEG_CHARS = ("\u0e00-\u0e7f\u0e80-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff"
                "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff")
# Tokens: word (letters/digits, with inner ' - ’) or a run of symbols. Unsegmented scripts: one char.
_TOKENS = re.compile(r"(\w+(?:['’\-]\w+)*)|[^\w\s]+")
_TOKENS_UNSEG = re.compile(rf"([{_UNSEG_CHARS}]|[^\W{_UNSEG_CHARS}]+(?:['’\-][^\W{_UNSEG_CHARS}]+)*)|[^\w\s]+")
_NUMERIC_TOKEN = re.compile(r"(?<!\S)[\d_]+(?:['’\-][\d_]+)*(?!\S)")
_ALPHA_WS_WORD = re.compile(r"\S*[^\W\d_]\S*")
_PARA_SPLIT = re.compile(r"\n{2,}")
_LINE_SPLIT = re.compile(r"\n+")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# C4's END_PUNCTUATION, plus the CJK/Arabic/Devanagari full stops so other languages can pass.
_C4_END = (".", "?", "!", '"', "'", "。", "！", "？", "」", "』", "؟", "।", "۔", "॥")
# FineWeb's stop chars: sentence-final marks of many scripts (a subset of datatrove's
# TERMINAL_PUNCTUATION; like it, no quotes, brackets or ellipsis).
_FW_END = (".", "!", "?", "。", "！", "？", "؟", "।", "॥", "۔", "‼", "⁇", "⁈", "⁉", "։", "።", "፧", "፨", "᙮", "᠃", "᠉", "꓿", "꘎", "꘏", "꛳", "꛷", "﹒", "﹖", "﹗", "．", "｡",
           "܀", "܁", "܂", "߹", "᥄", "᥅", "᱾", "᱿")
_SENT_END = re.compile(r"[.!?。！？؟।]+(?=\s|$)")

_FIELDS = [f.name for f in QUALITY_TYPE]
_PII = [n for n in _FIELDS if n.startswith("pii_")]


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    dup = dup_chars = 0
    for x in items:
        if x in seen:
            dup += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup, dup_chars


class QualityStage:
    name = "quality"

    def __init__(self, cfg: QualityConfig | None = None) -> None:
        self.cfg = cfg or QualityConfig()
        self.families = set(self.cfg.enabled)
        stop = self.cfg.stop_words if self.cfg.stop_words is not None else STOP_WORDS
        self.stop = {k: frozenset(w.lower() for w in v) for k, v in stop.items()}
        self.unseg = tuple(self.cfg.unsegmented_scripts)
        self.skip = tuple(self.cfg.skip_prefixes)
        self.alpha_over_tokens = self.cfg.gopher_quality.alpha_ratio_over == "tokens"
        self.ngram_top = sorted(self.cfg.gopher_repetition.top_ngrams.items())
        self.ngram_dup = sorted(self.cfg.gopher_repetition.dup_ngrams.items())
        self.compat = self.cfg.datatrove_compat
        if self.compat:   # datatrove: Gopher's English stop words for every document, case-sensitive
            self.dt_stop = frozenset(stop.get("eng", STOP_WORDS["eng"]))

    # ---- one document ------------------------------------------------------------------------
    def measure(self, text: str, lang: str | None) -> tuple[dict[str, Any], list[tuple[str, str]], str | None]:
        """(signals, failed rules as (reason, detail), rewritten text or None) for one document."""
        if self.compat:
            return self._measure_compat(text)
        lang = lang or ""
        script = lang.partition("_")[2]
        unseg = script in self.unseg
        families = self.families
        q: dict[str, Any] = {}
        failed: list[tuple[str, str]] = []
        n_text = max(len(text), 1)

        toks = (_TOKENS_UNSEG if unseg else _TOKENS).findall(text)
        words = [w for w in toks if w]              # tokens with a letter/digit (non-symbol words)
        n_tok = max(len(toks), 1)
        n_words = len(words)
        q["n_words"] = n_words
        lines = text.splitlines()
        n_lines = max(len(lines), 1)
        q["n_lines"] = len(lines)
        if unseg or self.alpha_over_tokens:
            numeric = len(_NUMERIC_TOKEN.findall(" ".join(words)))   # tokens without a letter
            if unseg:   # symbols are covered by their own rules; count letters among real tokens
                q["alpha_word_ratio"] = (n_words - numeric) / max(n_words, 1)
            else:       # datatrove's variant: punctuation tokens count as words without a letter
                q["alpha_word_ratio"] = (n_words - numeric) / n_tok
        else:   # Gopher's definition: whitespace-separated words holding at least one letter
            q["alpha_word_ratio"] = len(_ALPHA_WS_WORD.findall(text)) / max(len(text.split()), 1)
        q["mean_word_len"] = (sum(map(len, words)) / n_words) if n_words else 0.0
        q["hash_word_ratio"] = text.count("#") / n_tok
        q["ellipsis_word_ratio"] = (text.count("...") + text.count("…")) / n_tok
        q["symbol_word_ratio"] = max(q["hash_word_ratio"], q["ellipsis_word_ratio"])
        q["bullet_line_ratio"] = sum(1 for s in lines if s.lstrip().startswith(("•", "-"))) / n_lines
        q["ellipsis_line_ratio"] = sum(1 for s in lines if s.rstrip().endswith(("...", "…"))) / n_lines
        stop = self.stop.get(lang.partition("_")[0])
        if stop is not None:
            q["stopword_count"] = len(stop.intersection(map(str.lower, set(words))))

        if "gopher_quality" in families:
            self._gopher_quality(q, failed, unseg, stop is not None)
        if "gopher_repetition" in families:
            self._repetition(text, n_text, words, q, failed, self.cfg.unsegmented_ngram_scale if unseg else 1)
        rewritten = self._c4(lines, unseg, q, failed) if "c4" in families else None
        if "fineweb" in families:
            # FineWeb (datatrove) divides by all tokens, punctuation included
            self._fineweb(text, lines, len(toks), q, failed, unseg)
        return q, failed, rewritten

    def _gopher_quality(self, q: dict, failed: list, unseg: bool, stop: bool) -> None:
        g = self.cfg.gopher_quality
        n_words = q["n_words"]
        if g.min_words and n_words < g.min_words:
            failed.append(("gopher_min_words", f"{n_words} words < {g.min_words}"))
        if g.max_words and n_words > g.max_words:
            failed.append(("gopher_max_words", f"{n_words} words > {g.max_words}"))
        if not unseg and n_words:
            if g.min_avg_word_len and q["mean_word_len"] < g.min_avg_word_len:
                failed.append(("gopher_min_avg_word_len", f"{q['mean_word_len']:.2f}"))
            if g.max_avg_word_len and q["mean_word_len"] > g.max_avg_word_len:
                failed.append(("gopher_max_avg_word_len", f"{q['mean_word_len']:.2f}"))
        if g.max_symbol_word_ratio is not None:
            if q["hash_word_ratio"] > g.max_symbol_word_ratio:
                failed.append(("gopher_hash_ratio", f"{q['hash_word_ratio']:.3f}"))
            if q["ellipsis_word_ratio"] > g.max_symbol_word_ratio:
                failed.append(("gopher_ellipsis_ratio", f"{q['ellipsis_word_ratio']:.3f}"))
        if g.max_bullet_lines_ratio is not None and q["bullet_line_ratio"] > g.max_bullet_lines_ratio:
            failed.append(("gopher_bullet_lines", f"{q['bullet_line_ratio']:.3f}"))
        if g.max_ellipsis_lines_ratio is not None and q["ellipsis_line_ratio"] > g.max_ellipsis_lines_ratio:
            failed.append(("gopher_ellipsis_lines", f"{q['ellipsis_line_ratio']:.3f}"))
        if g.min_alpha_words_ratio is not None and q["alpha_word_ratio"] < g.min_alpha_words_ratio:
            failed.append(("gopher_alpha_words", f"{q['alpha_word_ratio']:.3f}"))
        if g.min_stop_words and stop and not unseg and q["stopword_count"] < g.min_stop_words:
            failed.append(("gopher_stop_words", f"{q['stopword_count']} < {g.min_stop_words}"))

    def _measure_compat(self, text: str) -> tuple[dict[str, Any], list[tuple[str, str]], str | None]:
        """datatrove 0.10.1's variants of the same rules (quality_compat), English for every document."""
        families = self.families
        q: dict[str, Any] = {}
        failed: list[tuple[str, str]] = []
        toks = dt.compat_tokens(text)      # punctuation tokens are words here, as in datatrove
        n_tok = len(toks)
        joined = "\n".join(toks)
        symbols = dt.SYMBOL_TOKEN.findall(joined)
        n_words = n_tok - len(symbols)
        q["n_words"] = n_words
        lines = text.splitlines()
        n_lines = max(len(lines), 1)
        q["n_lines"] = len(lines)
        q["alpha_word_ratio"] = len(dt.ALPHA_TOKEN.findall(joined)) / max(n_tok, 1)
        q["mean_word_len"] = ((len(joined) - n_tok + 1 - sum(map(len, symbols))) / n_words) if n_words else 0.0
        q["hash_word_ratio"] = text.count("#") / max(n_tok, 1)
        q["ellipsis_word_ratio"] = (text.count("...") + text.count("…")) / max(n_tok, 1)
        q["symbol_word_ratio"] = max(q["hash_word_ratio"], q["ellipsis_word_ratio"])
        q["bullet_line_ratio"] = sum(1 for s in lines if s.lstrip().startswith(("•", "-"))) / n_lines
        q["ellipsis_line_ratio"] = sum(1 for s in lines if s.rstrip().endswith(("...", "…"))) / n_lines
        q["stopword_count"] = len(self.dt_stop.intersection(toks))
        if "gopher_quality" in families:
            self._gopher_quality(q, failed, unseg=False, stop=True)
        if "gopher_repetition" in families:
            if not text:
                failed.append(("gopher_empty", "empty text"))
            else:
                self._repetition(text, len(text), toks, q, failed, compat=True)
        rewritten = self._c4(lines, False, q, failed) if "c4" in families else None
        if "fineweb" in families:
            self._fineweb(text, lines, n_tok, q, failed)
        return q, failed, rewritten

    def _repetition(self, text: str, n_text: int, words: list[str], q: dict, failed: list,
                    scale: int = 1, compat: bool = False) -> None:
        r = self.cfg.gopher_repetition
        paras = _PARA_SPLIT.split(text.strip())
        dup, dup_chars = _find_duplicates(paras)
        q["dup_para_frac"] = dup / max(len(paras), 1)
        q["dup_para_char_frac"] = dup_chars / n_text
        rlines = _LINE_SPLIT.split(text)
        dup, dup_chars = _find_duplicates(rlines)
        q["dup_line_frac"] = dup / max(len(rlines), 1)
        q["dup_line_char_frac"] = dup_chars / n_text
        for key, thr, reason in (("dup_para_frac", r.dup_para_frac, "gopher_dup_para_frac"),
                                 ("dup_para_char_frac", r.dup_para_char_frac, "gopher_dup_para_char_frac"),
                                 ("dup_line_frac", r.dup_line_frac, "gopher_dup_line_frac"),
                                 ("dup_line_char_frac", r.dup_line_char_frac, "gopher_dup_line_char_frac")):
            if thr is not None and q[key] > thr:
                failed.append((reason, f"{q[key]:.3f} > {thr}"))
        # n-grams over word ids, counted by one compiled call (quality_kernels). Characters of a
        # gram = the sum of its words' lengths (as datatrove's repeated n-grams, which join words
        # without separator; its top n-gram joins them with spaces: compat mode adds those).
        n = len(words)
        if n < 2:
            for k, _ in self.ngram_top:
                q[f"top_{k}gram_frac"] = 0.0
            for k, _ in self.ngram_dup:
                q[f"dup_{k}gram_frac"] = 0.0
            return
        # word ids in order of first occurrence: exact and the same in every process (Python's str
        # hash is salted per process, so Spark workers would disagree). A dict beats Arrow's
        # dictionary_encode here: its fixed cost per call dominates on typical documents.
        vocab = {w: i for i, w in enumerate(dict.fromkeys(words), 1)}
        ids = np.fromiter(map(vocab.__getitem__, words), np.uint64, n)
        wlen = np.fromiter(map(len, words), np.int64, n)
        # Unsegmented scripts: tokens are characters, so an n-word gram spans ~scale*n tokens.
        top_k = np.array([k * scale for k, _ in self.ngram_top], np.int64)
        dup_k = np.array([k * scale for k, _ in self.ngram_dup], np.int64)
        top_chars, dup_chars = ngram_chars(ids, wlen, top_k, dup_k, compat)
        for (name, thr), chars in zip(self.ngram_top, top_chars.tolist(), strict=True):
            q[f"top_{name}gram_frac"] = frac = chars / n_text
            if frac > thr:
                failed.append((f"gopher_top_{name}gram", f"{frac:.3f} > {thr}"))
        for (name, thr), chars in zip(self.ngram_dup, dup_chars.tolist(), strict=True):
            q[f"dup_{name}gram_frac"] = frac = chars / n_text
            if frac > thr:
                failed.append((f"gopher_dup_{name}gram", f"{frac:.3f} > {thr}"))

    def _c4(self, lines: list[str], unseg: bool, q: dict, failed: list) -> str | None:
        c = self.cfg.c4
        kept: list[str] = []
        sentences = 0
        doc_reason = None
        tok = _TOKENS_UNSEG if unseg else None
        compat = self.compat
        ends = dt.C4_END if compat else _C4_END
        for line in lines:
            line = line.strip()
            if compat:   # datatrove: words and the long-word test before citations are removed
                words = line.split()
            if c.remove_citations and "[" in line:
                line = _CITATION.sub("", line)
            # cheapest test first: most dropped lines lack terminal punctuation
            if not line.endswith(ends) or line.endswith("..."):
                continue
            if not compat:
                words = line.split()
            if len(line) > c.max_word_len and any(len(w) > c.max_word_len for w in words):
                continue
            n_words = sum(1 for t in tok.findall(line) if t) if tok is not None else len(words)
            if n_words < c.min_words_per_line:
                continue
            low = line.lower()
            if c.lorem_ipsum and "lorem ipsum" in low:
                doc_reason = doc_reason or ("c4_lorem_ipsum", line[:80])
            if c.drop_javascript_lines and "javascript" in low:
                continue
            if c.curly_bracket and "{" in line:
                doc_reason = doc_reason or ("c4_curly_bracket", line[:80])
            if c.drop_policy_lines and any(p in low for p in _POLICY):
                continue
            sentences += dt.n_sentences(line) if compat else max(len(_SENT_END.findall(line)), 1)
            kept.append(line)
        q["c4_sentences"] = sentences
        q["c4_line_ratio"] = len(kept) / max(len(lines), 1)
        if doc_reason:
            failed.append(doc_reason)
        if c.min_sentences is not None and sentences < c.min_sentences:
            failed.append(("c4_min_sentences", f"{sentences} < {c.min_sentences}"))
        return "\n".join(kept).strip() if c.rewrite_text else None

    def _fineweb(self, text: str, lines: list[str], n_words: int, q: dict, failed: list,
                 unseg: bool = False) -> None:
        f = self.cfg.fineweb
        short = f.short_line_length_unsegmented if unseg else f.short_line_length
        if self.compat:   # datatrove: lines split at "\n" only, its TERMINAL_PUNCTUATION
            nonempty = [ln for ln in text.split("\n") if ln.strip()]
            if not nonempty:
                failed.append(("fineweb_empty", "no non-empty line"))
            stop_chars = dt.FW_END
        else:
            nonempty = [ln for ln in lines if ln.strip()]
            stop_chars = _FW_END
        n = max(len(nonempty), 1)
        q["line_punct_ratio"] = ratio = sum(1 for ln in nonempty if ln.endswith(stop_chars)) / n
        if f.line_punct_thr is not None and ratio < f.line_punct_thr and not (
                ratio == 0 and f.line_punct_exclude_zero):
            failed.append(("fineweb_line_punct", f"{ratio:.3f} < {f.line_punct_thr}"))
        q["short_line_ratio"] = ratio = sum(1 for ln in nonempty if len(ln) <= short) / n
        if f.short_line_thr is not None and ratio > f.short_line_thr:
            failed.append(("fineweb_short_lines", f"{ratio:.3f} > {f.short_line_thr}"))
        q["char_dup_ratio"] = ratio = _find_duplicates(nonempty)[1] / max(len(text) - text.count("\n"), 1)
        if f.char_dup_ratio is not None and ratio > f.char_dup_ratio:
            failed.append(("fineweb_char_dup", f"{ratio:.3f} > {f.char_dup_ratio}"))
        q["list_ratio"] = ratio = text.count("\n") / max(n_words, 1)
        if f.new_line_ratio is not None and ratio > f.new_line_ratio:
            failed.append(("fineweb_list_ratio", f"{ratio:.3f} > {f.new_line_ratio}"))

    # ---- a batch -----------------------------------------------------------------------------
    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = conform(batch)
        if self.compat and not ("c4" in self.families and self.cfg.c4.rewrite_text):
            return self._call_compiled(batch)
        return self._call_python(batch)

    def _call_python(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Document by document through measure() (every mode; the reference of _call_compiled)."""
        batch = conform(batch)
        names = batch.schema.names
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist()
        cols: dict[str, list] = {f: [] for f in _FIELDS}
        reasons: list[str | None] = []
        details: list[str | None] = []
        new_texts: list[str | None] = []
        rewrote = False
        skip = self.skip
        for text, lang in zip(texts, langs, strict=True):
            if text is None:
                q, failed, rewritten = {}, [], None
            else:
                q, failed, rewritten = self.measure(text, lang)
            n_rules = self._n_rules(q)
            q["score"] = max(0.0, 1.0 - len(failed) / n_rules) if n_rules else 1.0
            q["failed"] = [r for r, _ in failed]
            for f in _FIELDS:
                cols[f].append(q.get(f))
            exempt = bool(lang) and lang.startswith(skip)
            reasons.append(failed[0][0] if failed and not exempt else None)
            details.append(failed[0][1] if failed and not exempt else None)
            if rewritten is not None and not failed:
                rewrote = True
                new_texts.append(rewritten)
            else:
                new_texts.append(text)
        batch = _set_quality(batch, {f: pa.array(cols[f], QUALITY_TYPE.field(f).type) for f in _FIELDS})
        if rewrote:
            text = pa.array(new_texts, pa.string())
            batch = batch.set_column(names.index("text"), "text", text)
            batch = batch.set_column(names.index("n_chars"), "n_chars",
                                     pc.fill_null(pc.utf8_length(text).cast(pa.int64()), 0))
        mask = pc.is_valid(pa.array(reasons, pa.string()))
        return reject(batch, mask, self.name, pa.array(reasons, pa.string()), pa.array(details, pa.string()))

    def _call_compiled(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """datatrove_compat mode over a whole batch: one compiled pass (quality_kernels.compat_signals)
        gives every count; signals, rules, `failed`, score and reason are then numpy over columns.
        Same values as _call_python (tests/dataproc/test_quality_compiled.py)."""
        sig, valid = dt.compat_signals(
            batch.column("text"), self.dt_stop, _POLICY, self.cfg.c4, self.cfg.fineweb.short_line_length,
            [k for k, _ in self.ngram_top], [k for k, _ in self.ngram_dup])
        q, present, rules = _compat_rules(self, sig, valid)
        n = batch.num_rows
        fails = np.array([m for _, m, _ in rules], np.bool_).reshape(len(rules), n)
        n_failed = fails.sum(axis=0)
        doc_idx, rule_idx = np.nonzero(fails.T)          # doc-major: each doc's rules in rule order
        offsets = np.concatenate([[0], np.cumsum(n_failed)]).astype(np.int32)
        rule_names = pa.array([name for name, _, _ in rules], pa.string())
        failed = pa.ListArray.from_arrays(pa.array(offsets), rule_names.take(pa.array(rule_idx)))
        n_rules = sum((present[k] for k in _SCORED if k in present), np.zeros(n, np.int64))
        score = np.where(n_rules > 0, np.maximum(0.0, 1.0 - n_failed / np.maximum(n_rules, 1)), 1.0)
        lang = batch.column("lang")
        exempt = np.zeros(n, np.bool_)
        for prefix in self.skip:
            exempt |= pc.fill_null(pc.starts_with(lang, prefix), False).to_numpy(zero_copy_only=False)
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        first = np.argmax(fails, axis=0) if len(rules) else np.zeros(n, np.int64)
        texts = batch.column("text")
        for i in np.flatnonzero((n_failed > 0) & ~exempt).tolist():
            name, _, detail = rules[first[i]]
            reasons[i] = name
            # C4's document rules quote the line: rare, taken from the reference path
            details[i] = detail(i) if detail is not None else dict(
                self._measure_compat(texts[i].as_py())[1])[name]
        children: dict[str, pa.Array] = {"score": pa.array(score.astype(np.float32)), "failed": failed}
        for f in _FIELDS:
            if f in q:
                t = QUALITY_TYPE.field(f).type
                vals = q[f].astype(np.int32 if pa.types.is_integer(t) else np.float32)
                children[f] = pa.array(vals, t, mask=~present[f])
        batch = _set_quality(batch, children)
        reason = pa.array(reasons, pa.string())
        return reject(batch, pc.is_valid(reason), self.name, reason, pa.array(details, pa.string()))

    @staticmethod
    def _n_rules(q: dict) -> int:
        """How many rules were evaluated, for the score: one per rule-backing signal present."""
        return sum(1 for k in _SCORED if q.get(k) is not None)


# Signals that each back one rule (used to count evaluated rules for `score`).
_SCORED = ("n_words", "mean_word_len", "hash_word_ratio", "ellipsis_word_ratio", "bullet_line_ratio",
           "ellipsis_line_ratio", "alpha_word_ratio", "stopword_count", "dup_para_frac", "dup_para_char_frac",
           "dup_line_frac", "dup_line_char_frac", "top_2gram_frac", "top_3gram_frac", "top_4gram_frac",
           "dup_5gram_frac", "dup_6gram_frac", "dup_7gram_frac", "dup_8gram_frac", "dup_9gram_frac",
           "dup_10gram_frac", "c4_sentences", "line_punct_ratio", "short_line_ratio", "char_dup_ratio",
           "list_ratio")


def _set_quality(batch: pa.RecordBatch, children: dict[str, pa.Array]) -> pa.RecordBatch:
    """Replace the `quality` struct: the given fields, PII counts carried over, the rest null."""
    old = batch.column("quality")
    arrays = []
    for field in QUALITY_TYPE:
        if field.name in _PII:   # PII counts belong to the pii stage: carry them over
            arrays.append(pc.struct_field(old, field.name) if old.null_count < len(old)
                          else pa.nulls(len(old), field.type))
        else:
            arrays.append(children.get(field.name, pa.nulls(len(old), field.type)))
    quality = pa.StructArray.from_arrays(arrays, fields=list(QUALITY_TYPE))
    return batch.set_column(batch.schema.names.index("quality"), "quality", quality)


_Rule = tuple[str, np.ndarray, "Callable[[int], str] | None"]


def _compat_rules(stage: QualityStage, sig: np.ndarray,
                  valid: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[_Rule]]:
    """(signal columns, where each is present, rules as (reason, fails, detail of doc i)) from the
    kernel's counts: _measure_compat's formulas and rule order, over columns."""
    cfg = stage.cfg
    g, r, c4, fw = cfg.gopher_quality, cfg.gopher_repetition, cfg.c4, cfg.fineweb
    col = sig.T
    n_tok = col[qk.S_N_TOK]
    per_tok = np.maximum(n_tok, 1)
    n_words = n_tok - col[qk.S_N_SYM]
    n_lines = col[qk.S_N_LINES]
    q = {"n_words": n_words, "n_lines": n_lines,
         "alpha_word_ratio": col[qk.S_ALPHA] / per_tok,
         "mean_word_len": np.where(n_words > 0, (col[qk.S_TOK_CHARS] - col[qk.S_SYM_CHARS])
                                   / np.maximum(n_words, 1), 0.0),
         "hash_word_ratio": col[qk.S_HASH] / per_tok, "ellipsis_word_ratio": col[qk.S_ELLIPSIS] / per_tok,
         "bullet_line_ratio": col[qk.S_BULLET] / np.maximum(n_lines, 1),
         "ellipsis_line_ratio": col[qk.S_ELL_LINES] / np.maximum(n_lines, 1),
         "stopword_count": col[qk.S_STOP]}
    q["symbol_word_ratio"] = np.maximum(q["hash_word_ratio"], q["ellipsis_word_ratio"])
    present = dict.fromkeys(q, valid)
    rules: list[_Rule] = []

    def rule(name: str, fails: np.ndarray, detail: Callable[[int], str] | None) -> None:
        rules.append((name, fails & valid, detail))

    def over(key: str, thr: float, when: np.ndarray = valid) -> tuple[np.ndarray, Callable[[int], str]]:
        return when & (q[key] > thr), lambda i: f"{float(q[key][i]):.3f} > {thr}"

    fams = stage.families
    if "gopher_quality" in fams:
        if g.min_words:
            rule("gopher_min_words", n_words < g.min_words, lambda i: f"{int(n_words[i])} words < {g.min_words}")
        if g.max_words:
            rule("gopher_max_words", n_words > g.max_words, lambda i: f"{int(n_words[i])} words > {g.max_words}")
        mwl = q["mean_word_len"]
        if g.min_avg_word_len:
            rule("gopher_min_avg_word_len", (n_words > 0) & (mwl < g.min_avg_word_len), lambda i: f"{mwl[i]:.2f}")
        if g.max_avg_word_len:
            rule("gopher_max_avg_word_len", (n_words > 0) & (mwl > g.max_avg_word_len), lambda i: f"{mwl[i]:.2f}")
        for key, reason, thr in (
                ("hash_word_ratio", "gopher_hash_ratio", g.max_symbol_word_ratio),
                ("ellipsis_word_ratio", "gopher_ellipsis_ratio", g.max_symbol_word_ratio),
                ("bullet_line_ratio", "gopher_bullet_lines", g.max_bullet_lines_ratio),
                ("ellipsis_line_ratio", "gopher_ellipsis_lines", g.max_ellipsis_lines_ratio)):
            if thr is not None:
                v = q[key]
                rule(reason, v > thr, lambda i, v=v: f"{float(v[i]):.3f}")
        if g.min_alpha_words_ratio is not None:
            alpha = q["alpha_word_ratio"]
            rule("gopher_alpha_words", alpha < g.min_alpha_words_ratio, lambda i: f"{float(alpha[i]):.3f}")
        if g.min_stop_words:
            sw = q["stopword_count"]
            rule("gopher_stop_words", sw < g.min_stop_words, lambda i: f"{int(sw[i])} < {g.min_stop_words}")
    if "gopher_repetition" in fams:
        n_text = col[qk.S_LEN]
        has_text = valid & (n_text > 0)
        rule("gopher_empty", n_text == 0, lambda i: "empty text")
        per_char = np.maximum(n_text, 1)
        rep = {"dup_para_frac": col[qk.S_DUP_PARAS] / np.maximum(col[qk.S_N_PARAS], 1),
               "dup_para_char_frac": col[qk.S_DUP_PARA_CHARS] / per_char,
               "dup_line_frac": col[qk.S_DUP_RLINES] / np.maximum(col[qk.S_N_RLINES], 1),
               "dup_line_char_frac": col[qk.S_DUP_RLINE_CHARS] / per_char}
        q.update(rep)
        for key, thr in (("dup_para_frac", r.dup_para_frac), ("dup_para_char_frac", r.dup_para_char_frac),
                         ("dup_line_frac", r.dup_line_frac), ("dup_line_char_frac", r.dup_line_char_frac)):
            if thr is not None:
                rule(f"gopher_{key}", *over(key, thr, has_text))
        grams = [(f"top_{k}gram", thr) for k, thr in stage.ngram_top] + \
                [(f"dup_{k}gram", thr) for k, thr in stage.ngram_dup]
        for j, (name, thr) in enumerate(grams):
            q[f"{name}_frac"] = col[qk.N_FIXED + j] / per_char
            rep[f"{name}_frac"] = q[f"{name}_frac"]
            rule(f"gopher_{name}", *over(f"{name}_frac", thr, has_text))
        present.update(dict.fromkeys(rep, has_text))
    if "c4" in fams:
        q["c4_sentences"] = sent = col[qk.S_C4_SENT]
        q["c4_line_ratio"] = col[qk.S_C4_KEPT] / np.maximum(n_lines, 1)
        present.update(c4_sentences=valid, c4_line_ratio=valid)
        rule("c4_lorem_ipsum", col[qk.S_C4_DOC] == qk.C4_LOREM, None)
        rule("c4_curly_bracket", col[qk.S_C4_DOC] == qk.C4_CURLY, None)
        if c4.min_sentences is not None:
            rule("c4_min_sentences", sent < c4.min_sentences, lambda i: f"{int(sent[i])} < {c4.min_sentences}")
    if "fineweb" in fams:
        nf = col[qk.S_FW_LINES]
        per_line = np.maximum(nf, 1)
        rule("fineweb_empty", nf == 0, lambda i: "no non-empty line")
        q["line_punct_ratio"] = punct = col[qk.S_FW_PUNCT] / per_line
        q["short_line_ratio"] = col[qk.S_FW_SHORT] / per_line
        q["char_dup_ratio"] = col[qk.S_FW_DUP_CHARS] / np.maximum(col[qk.S_LEN] - col[qk.S_NEWLINES], 1)
        q["list_ratio"] = col[qk.S_NEWLINES] / per_tok
        present.update(dict.fromkeys(("line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"), valid))
        if fw.line_punct_thr is not None:
            low = punct < fw.line_punct_thr
            if fw.line_punct_exclude_zero:
                low &= punct != 0
            rule("fineweb_line_punct", low, lambda i: f"{float(punct[i]):.3f} < {fw.line_punct_thr}")
        for key, reason, thr in (("short_line_ratio", "fineweb_short_lines", fw.short_line_thr),
                                 ("char_dup_ratio", "fineweb_char_dup", fw.char_dup_ratio),
                                 ("list_ratio", "fineweb_list_ratio", fw.new_line_ratio)):
            if thr is not None:
                rule(reason, *over(key, thr))
    return q, present, rules
