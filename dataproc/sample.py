"""`q3 data sample`: a real multilingual sample corpus from what Debian's package registry gives.

Debian's `manpages-<lang>` packages hold man pages translated into ~25 languages; the language is
known from the install path (`/usr/share/man/<locale>/manN/...`), which makes them a labelled test
set for language ID as well as real text for every stage. Python's own standard library adds code.

    q3 data sample                       # -> $Q3_DATA/sample/{docs.jsonl, raw/<lang>/<name>.txt}
    q3 data sample per_language=50       # smaller
    q3 data sample force=true            # rebuild

Packages are fetched with `apt-get download` (no root install, nothing leaves the cache dir),
unpacked with `dpkg-deb -x` into `$Q3_DATA/cache/manpages/`, and converted with the project's own
troff-to-text converter (dataproc/troff.py), so no groff is needed. Selection is deterministic
(pages ordered by a hash of their path), so two builds from the same packages are identical.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import sysconfig
from pathlib import Path

from pydantic import Field

from dataproc.troff import troff_to_text
from q3.atomic import atomic_dir, is_committed, read_marker
from q3.config import Q3Config, config_hash, load_config
from q3.debs import DebUnavailable, download_deb, require_tools, unpack_deb
from q3.log import get_logger, print_table, progress
from q3.paths import data_dir

log = get_logger("dataproc.sample")

DEFAULT_PACKAGES = [
    "manpages", "manpages-dev", "manpages-cs", "manpages-da", "manpages-de", "manpages-el", "manpages-es",
    "manpages-fi", "manpages-fr", "manpages-hu", "manpages-id", "manpages-it", "manpages-ja",
    "manpages-mk", "manpages-nb", "manpages-nl", "manpages-pl", "manpages-pt-br", "manpages-ro",
    "manpages-ru", "manpages-sr", "manpages-sv", "manpages-tr", "manpages-uk", "manpages-vi",
    "manpages-zh",
]

# Locale directory under /usr/share/man -> ISO 639-3 + ISO 15924 script (DESIGN.md `lang`).
LOCALE_LANG = {
    "": "eng_Latn", "en": "eng_Latn", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "es": "spa_Latn", "fi": "fin_Latn", "fr": "fra_Latn", "hu": "hun_Latn",
    "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "mk": "mkd_Cyrl",
    "nb": "nob_Latn", "nn": "nno_Latn", "no": "nob_Latn", "nl": "nld_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "pt_BR": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sk": "slk_Latn",
    "sl": "slv_Latn", "sr": "srp_Cyrl", "sr@latin": "srp_Latn", "sv": "swe_Latn",
    "tr": "tur_Latn", "uk": "ukr_Cyrl", "vi": "vie_Latn", "zh_CN": "cmn_Hans", "zh_SG": "cmn_Hans",
    "zh_TW": "cmn_Hant", "zh_HK": "cmn_Hant", "zh": "cmn_Hans", "ca": "cat_Latn", "eo": "epo_Latn",
    "et": "est_Latn", "gl": "glg_Latn", "lt": "lit_Latn", "lv": "lvs_Latn", "ar": "arb_Arab",
    "he": "heb_Hebr", "fa": "pes_Arab", "bg": "bul_Cyrl", "be": "bel_Cyrl", "hr": "hrv_Latn",
}
CODE_LANG = "code_Python"


class SampleConfig(Q3Config):
    packages: list[str] = Field(default_factory=lambda: list(DEFAULT_PACKAGES))
    per_language: int = 300          # at most this many man pages per language
    min_chars: int = 300             # skip stubs shorter than this (after conversion)
    max_chars: int = 60_000          # skip very long pages: keeps the sample small and balanced
    code_files: int = 300            # Python stdlib files (lang_hint code_Python)
    code_max_bytes: int = 60_000
    output: str | None = None        # default: $Q3_DATA/sample
    cache: str | None = None         # default: $Q3_DATA/cache
    write_raw: bool = True           # also write raw/<lang>/<name>.txt
    force: bool = False


def locale_to_lang(locale: str) -> str | None:
    """`de`, `de.UTF-8`, `pt_BR`, `sr@latin`, `zh_CN.UTF-8` -> the corpus `lang` code (or None)."""
    base, _, mod = locale.partition("@")
    base = base.split(".")[0]
    key = f"{base}@{mod}" if mod else base
    if key in LOCALE_LANG:
        return LOCALE_LANG[key]
    return LOCALE_LANG.get(base) if not mod else None


def lang_from_man_path(path: str) -> str | None:
    """Language of a man page from its install path: /usr/share/man/<locale>/manN/x.N.gz."""
    parts = Path(path).parts
    if "man" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("man")
    rest = parts[i + 1:]
    if len(rest) >= 2 and rest[0].startswith("man") and rest[0][3:4].isdigit():
        return LOCALE_LANG[""]
    if len(rest) >= 3 and rest[1].startswith("man"):
        return locale_to_lang(rest[0])
    return None


def fetch_packages(packages: list[str], cache: Path) -> dict[str, Path]:
    """Download (once) and unpack each package; returns package -> unpacked root."""
    try:
        require_tools("`q3 data sample`")
    except DebUnavailable as e:
        raise RuntimeError(str(e)) from None
    debs = cache / "debs"
    roots: dict[str, Path] = {}
    for pkg in progress(packages, "packages", unit="pkg"):
        root = cache / "manpages" / pkg
        if not is_committed(root):
            try:
                deb = download_deb(pkg, debs)
            except DebUnavailable as e:
                log.warning("skipping %s: %s", pkg, e)
                continue
            with atomic_dir(root, {"deb": deb.name}) as tmp:
                unpack_deb(deb, tmp)
        roots[pkg] = root
    return roots


def _stable_key(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=8).hexdigest()


def _read_page(path: Path) -> str | None:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None   # a few old pages are in legacy encodings; not worth guessing for a sample


def collect_manpages(roots: dict[str, Path], cfg: SampleConfig) -> list[dict]:
    """Choose up to `per_language` pages per language, deterministically, and convert them."""
    candidates: dict[str, list[tuple[str, str, Path]]] = {}
    for pkg, root in sorted(roots.items()):
        deb = read_marker(root).get("deb", pkg)
        for path in sorted((root / "usr/share/man").rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue   # symlinks are aliases of another page
            rel = "/" + str(path.relative_to(root))
            lang = lang_from_man_path(rel)
            if lang is None:
                continue
            candidates.setdefault(lang, []).append((_stable_key(rel), f"debian:{deb}:{rel}", path))
    docs: list[dict] = []
    for lang in progress(sorted(candidates), "languages", unit="lang"):
        taken = 0
        for _, url, path in sorted(candidates[lang]):
            if taken >= cfg.per_language:
                break
            src = _read_page(path)
            if src is None:
                continue
            text = troff_to_text(src)
            if not (cfg.min_chars <= len(text) <= cfg.max_chars):
                continue
            name = path.name.removesuffix(".gz")
            docs.append({"text": text, "url": url, "source": "debian-manpages", "lang_hint": lang,
                         "_name": name})
            taken += 1
    return docs


def collect_python(cfg: SampleConfig) -> list[dict]:
    """Python source files from the running interpreter's standard library (deterministic pick)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in stdlib.rglob("*.py"):
        rel = p.relative_to(stdlib).as_posix()
        if rel.startswith(("test/", "idlelib/idle_test/", "site-packages/", "lib2to3/tests/")) or "/tests/" in rel:
            continue
        try:
            size = p.stat().st_size
        except OSError:
            continue
        if 1000 <= size <= cfg.code_max_bytes:
            files.append((_stable_key(rel), rel, p))
    docs = []
    for _, rel, p in sorted(files)[: cfg.code_files]:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        docs.append({"text": text, "url": f"python-stdlib:{ver}/{rel}", "source": "python-stdlib",
                     "lang_hint": CODE_LANG, "_name": rel.replace("/", "__")})
    return docs


def build_sample(cfg: SampleConfig) -> Path:
    """Build (or reuse) the sample; returns its directory (holding docs.jsonl and raw/)."""
    out = Path(cfg.output) if cfg.output else data_dir() / "sample"
    cache = Path(cfg.cache) if cfg.cache else data_dir() / "cache"
    key = config_hash(cfg.model_dump(exclude={"force", "output", "cache"}))
    if not cfg.force and is_committed(out) and read_marker(out).get("config_hash") == key:
        log.info("sample already built at %s (config %s); nothing to do", out, key)
        _summary(read_marker(out)["counts"], out)
        return out
    roots = fetch_packages(cfg.packages, cache)
    if cfg.packages and not roots:
        raise RuntimeError("no manpages package could be downloaded (apt-get download failed for all of "
                           f"{', '.join(cfg.packages)}); check network access to the Debian mirror")
    docs = collect_manpages(roots, cfg) + collect_python(cfg)
    docs.sort(key=lambda d: (d["lang_hint"], d["url"]))
    counts: dict[str, dict[str, int]] = {}
    meta = {"config_hash": key, "config": cfg.model_dump(), "counts": counts}
    with atomic_dir(out, meta) as tmp:
        used: set[str] = set()
        with (tmp / "docs.jsonl").open("w", encoding="utf-8") as f:
            for d in docs:
                lang, name = d["lang_hint"], d.pop("_name")
                c = counts.setdefault(lang, {"docs": 0, "chars": 0})
                c["docs"] += 1
                c["chars"] += len(d["text"])
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                if cfg.write_raw:
                    stem = name
                    i = 1
                    while f"{lang}/{stem}" in used:   # same page name in two sections/packages
                        i += 1
                        stem = f"{name}~{i}"
                    used.add(f"{lang}/{stem}")
                    dst = tmp / "raw" / lang / f"{stem}.txt"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_text(d["text"], encoding="utf-8")
    _summary(counts, out)
    return out


def _summary(counts: dict[str, dict[str, int]], out: Path) -> None:
    rows = [(lang, c["docs"], c["chars"]) for lang, c in sorted(counts.items())]
    rows.append(("TOTAL", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    print_table(f"sample corpus: {out}/docs.jsonl", ["lang", "docs", "chars"], rows)


def cli(config: str | None, overrides: list[str]) -> int:
    cfg = load_config(SampleConfig, "sample", config, overrides)
    build_sample(cfg)
    return 0
