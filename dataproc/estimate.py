"""`q3 data estimate`: core-hours, shuffle bytes and cluster size of the corpus pipeline for a token target.

    q3 data estimate tokens=36T hours=72
    q3 data estimate tokens=36T cores=4096
    q3 data estimate tokens=500B keep.quality=0.3 mix.cjk=0.3

The per-core rates come from bench/results/stage_costs.json (`python -m bench.stage_costs`, the
stages' real code on the scaled sample); everything else is an assumption with a key (defaults and
their sources: docs/scale.md). Volumes flow backwards from the token target: the tokenised output is
`tokens x bytes/token`, and each earlier stage sees its output divided by the keep rates after it.
Map stages cost bytes / (measured bytes per CPU-second); the global dedup phases cost documents /
(measured docs per CPU-second) times a log2 growth factor (sorting by band key; union rounds); a
stage that shuffles is also charged its shuffle bytes / `shuffle_mib_per_core_s`; `overhead` multiplies
the functions' CPU for what a runner adds around them (reading/writing Parquet, Arrow conversions,
task scheduling: measured 1.6x for the local pipeline runner, ~3x for Spark dedup; docs/scale.md).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from q3.config import ConfigError, Q3Config, load_config
from q3.errors import InputMissing
from q3.paths import ROOT

MEASURED = ROOT / "bench" / "results" / "stage_costs.json"
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}

# stage -> (its input volume, how its cost grows with the corpus). Order = pipeline order.
STAGES: dict[str, tuple[str, str]] = {
    "read": ("raw", "linear"),
    "normalise": ("raw", "linear"),
    "langid": ("raw", "linear"),
    "quality": ("lid_kept", "linear"),
    "pii": ("quality_kept", "linear"),
    "dedup_exact": ("quality_kept", "linear, shuffle"),
    "dedup_signatures": ("quality_kept", "linear"),
    "dedup_lsh_buckets": ("dedup_docs", "n log n, shuffle"),
    "dedup_verify": ("dedup_docs", "~pairs, shuffle"),
    "dedup_components": ("dedup_docs", "edges x rounds"),
    "dedup_lines": ("dedup_kept", "linear, shuffle, memory"),
    "decontam": ("lines_kept", "linear"),
    "label": ("lines_kept", "linear"),
    "tokenise": ("final", "linear"),
}
PER_DOC = {"dedup_lsh_buckets", "dedup_verify", "dedup_components"}
GROWS_LOG = {"dedup_lsh_buckets", "dedup_components"}
LANG_GROUPS = ("latin", "cjk", "other", "code")
CJK = {"cmn_Hans", "cmn_Hant", "jpn_Jpan", "kor_Hang", "yue_Hant"}


def parse_count(v: Any) -> float:
    """'36T', '800B', '5e12', 1e9 -> a float count; ValueError with the accepted forms otherwise."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        x = float(v)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGTP]?)\s*", str(v), flags=re.I)
        if not m:
            raise ValueError(f"{v!r} is not a count: use a number with an optional K/M/B/T suffix, e.g. 36T")
        x = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not x > 0 or math.isinf(x):
        raise ValueError(f"{v!r}: must be a positive, finite count")
    return x


class KeepRates(Q3Config):
    """Share of what a stage receives that it passes on (documents; for lines: characters)."""

    lid: float = Field(0.85, gt=0, le=1)        # confident LID in a target language (FineWeb-2: ~0.8-0.9)
    quality: float = Field(0.5, gt=0, le=1)     # Gopher + C4 + FineWeb rules (FineWeb keeps ~0.5 of LID-kept)
    dedup: float = Field(0.45, gt=0, le=1)      # exact + MinHash over CommonCrawl dumps (RefinedWeb/FineWeb: ~0.4-0.5)
    lines: float = Field(0.95, gt=0, le=1)      # characters left by line dedup (boilerplate lines)
    decontam: float = Field(0.999, gt=0, le=1)  # documents not overlapping eval sets


class LangMix(Q3Config):
    """Share of the output tokens per script group (sum 1); sets the blended bytes per token."""

    latin: float = Field(0.65, ge=0, le=1)      # *_Latn languages incl. English
    cjk: float = Field(0.15, ge=0, le=1)        # Chinese, Japanese, Korean
    other: float = Field(0.10, ge=0, le=1)      # Cyrillic, Greek, Arabic, Indic, ...
    code: float = Field(0.10, ge=0, le=1)       # source code


class EstimateConfig(Q3Config):
    """Cost model of the corpus pipeline to a token target (docs/scale.md)."""

    tokens: float = 36e12                       # output tokens after the whole pipeline (36T, 800B, 5e12)
    cores: int | None = Field(None, ge=1)       # cluster cores: prints the wall time
    hours: float | None = Field(None, gt=0)     # target wall time: prints the cores needed
    languages: int = Field(119, ge=1)           # languages in the corpus (Qwen3: 119); dedup scope=lang runs per language
    largest_language_share: float = Field(0.4, gt=0, le=1)   # share of documents in the largest scope (English)
    doc_bytes: float = Field(3000, gt=0)        # mean raw document size in bytes (CommonCrawl text: 2-4 KB)
    efficiency: float = Field(0.75, gt=0, le=1)   # parallel efficiency at cluster scale (stragglers, skew)
    overhead: float = Field(1.5, ge=1)          # runner cost over the stage functions' CPU (Parquet, Arrow, tasks)
    shuffle_mib_per_core_s: float = Field(25.0, gt=0)   # Spark shuffle write + read per core (serialise, disk, network)
    keep: KeepRates = Field(default_factory=KeepRates)
    mix: LangMix = Field(default_factory=LangMix)
    input: str = "bench/results/stage_costs.json"   # measured per-core rates: `python -m bench.stage_costs` writes it (relative: to the repo)

    @field_validator("tokens", mode="before")
    @classmethod
    def _count(cls, v: Any) -> float:
        return parse_count(v)

    @model_validator(mode="after")
    def _mix_sums(self) -> EstimateConfig:
        s = sum(getattr(self.mix, g) for g in LANG_GROUPS)
        if abs(s - 1.0) > 1e-6:
            raise ValueError(f"mix shares sum to {s:.3f}, not 1")
        return self


def load_measured(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    p = p if p.is_absolute() else ROOT / p
    if not p.is_file():
        raise InputMissing(f"measured stage costs not found: {p} (run `python -m bench.stage_costs`)")
    try:
        data = json.loads(p.read_text())
        sizes = data["sizes"]
        largest = max(sizes, key=lambda s: s["docs"])
        largest["stages"]["read"]["bytes_per_cpu_s"]     # noqa: B018  the minimum a model needs
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{p}: not a stage_costs.json ({type(e).__name__}: {e})") from None
    return data


def group_bytes_per_token(measured: dict[str, Any]) -> dict[str, float]:
    """Mean UTF-8 bytes per Qwen3 token per script group, from the sample's languages."""
    per: dict[str, list[float]] = {g: [] for g in LANG_GROUPS}
    for lang, bpt in measured.get("sample_bytes_per_token", {}).items():
        g = ("code" if lang.startswith("code_") else "cjk" if lang in CJK
             else "latin" if lang.endswith("_Latn") else "other")
        per[g].append(bpt)
    fallback = {"latin": 4.0, "cjk": 3.0, "other": 5.0, "code": 3.5}   # if the sample lacks a group
    return {g: (sum(v) / len(v) if v else fallback[g]) for g, v in per.items()}


def estimate(cfg: EstimateConfig, measured: dict[str, Any]) -> dict[str, Any]:
    """Per-stage volume, core-hours and shuffle bytes; totals; cluster size or wall time."""
    bpt_g = group_bytes_per_token(measured)
    bpt = sum(getattr(cfg.mix, g) * bpt_g[g] for g in LANG_GROUPS)
    k = cfg.keep
    final = cfg.tokens * bpt
    vol = {"final": final}
    vol["lines_kept"] = final / k.decontam
    vol["dedup_kept"] = vol["lines_kept"] / k.lines
    vol["quality_kept"] = vol["dedup_kept"] / k.dedup
    vol["lid_kept"] = vol["quality_kept"] / k.quality
    vol["raw"] = vol["lid_kept"] / k.lid
    sizes = sorted(measured["sizes"], key=lambda s: s["docs"])
    big = sizes[-1]
    st = big["stages"]
    n_meas = big["docs"]
    dedup_docs = vol["quality_kept"] / cfg.doc_bytes
    exact = st.get("dedup_exact", {}).get("exact_duplicates", 0) / n_meas
    lsh_docs = dedup_docs * (1 - exact)              # the LSH phases see exact survivors only
    scope_docs = max(lsh_docs * cfg.largest_language_share, 2.0)
    growth = math.log2(scope_docs) / math.log2(max(n_meas, 2))
    bands = st.get("dedup_lsh_buckets", {}).get("bands", 20)
    cand = st.get("dedup_lsh_buckets", {}).get("candidate_edges", 0) / n_meas
    verified = st.get("dedup_verify", {}).get("verified_edges", 0) / n_meas
    rounds = max(3, math.ceil(math.log2(max(st.get("dedup_components", {}).get("largest_cluster", 2), 2))) + 2)
    units = st.get("dedup_lines", {}).get("unit_hashes_per_doc", 0.0)
    shuffle = {
        "dedup_exact": dedup_docs * 32,                                   # (scope, hash, rk, score)
        "dedup_lsh_buckets": lsh_docs * bands * 20,                       # (scope, band key, rk) per band
        "dedup_verify": lsh_docs * cand * (16 + 2 * cfg.doc_bytes),       # pairs joined with both texts
        "dedup_components": lsh_docs * verified * 16 * rounds,            # edge list per star round
        "dedup_lines": vol["dedup_kept"] / cfg.doc_bytes * units * 16,    # (unit hash, count)
    }
    rows = []
    for name, (volume, scaling) in STAGES.items():
        m = st.get(name)
        if m is None:
            continue
        if name in PER_DOC:
            docs = lsh_docs
            cpu_s = docs / m["docs_per_cpu_s"] * (growth if name in GROWS_LOG else 1.0)
            nbytes = docs * cfg.doc_bytes
        else:
            nbytes = vol[volume]
            cpu_s = nbytes / m["bytes_per_cpu_s"]
            docs = nbytes / cfg.doc_bytes
        cpu_s = cpu_s * cfg.overhead + shuffle.get(name, 0.0) / (cfg.shuffle_mib_per_core_s * 2**20)   # shuffles are charged too
        rows.append({"stage": name, "input_bytes": nbytes, "docs": docs, "core_hours": cpu_s / 3600,
                     "shuffle_bytes": shuffle.get(name, 0.0), "scaling": scaling,
                     "measured_mib_per_cpu_s": m["bytes_per_cpu_s"] / 2**20,
                     "measured_docs_per_cpu_s": m["docs_per_cpu_s"]})
    total = sum(r["core_hours"] for r in rows)
    for r in rows:
        r["share"] = r["core_hours"] / total if total else 0.0
    out: dict[str, Any] = {
        "tokens": cfg.tokens, "bytes_per_token": bpt, "bytes_per_token_groups": bpt_g,
        "raw_bytes": vol["raw"], "raw_docs": vol["raw"] / cfg.doc_bytes, "final_bytes": final,
        "stages": rows, "core_hours": total, "shuffle_bytes": sum(shuffle.values()),
        "effective_core_hours": total / cfg.efficiency, "lsh_growth_factor": growth,
        "components_rounds": rounds, "measured_at": measured.get("measured_at"),
    }
    if cfg.hours:
        out["cores_needed"] = math.ceil(out["effective_core_hours"] / cfg.hours)
    if cfg.cores:
        out["wall_hours"] = out["effective_core_hours"] / cfg.cores
    return out


def _si(x: float, unit: str = "") -> str:
    for div, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {s}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def print_estimate(cfg: EstimateConfig, e: dict[str, Any]) -> None:
    from q3.log import print_table

    print(f"target {_si(e['tokens'])} tokens, {cfg.languages} languages; {e['bytes_per_token']:.2f} bytes/token "
          f"(mix {cfg.mix.model_dump()}); raw input {_si(e['raw_bytes'], 'B')} = {_si(e['raw_docs'])} docs "
          f"of {cfg.doc_bytes:,.0f} B; rates measured {e['measured_at']} ({cfg.input})")
    print_table("cost per stage", ["stage", "input", "docs", "MiB/s/core", "docs/s/core", "core-hours",
                                   "share", "shuffle", "grows"],
                [[r["stage"], _si(r["input_bytes"], "B"), _si(r["docs"]), round(r["measured_mib_per_cpu_s"], 2),
                  round(r["measured_docs_per_cpu_s"]), round(r["core_hours"]), f"{r['share']:.1%}",
                  _si(r["shuffle_bytes"], "B") if r["shuffle_bytes"] else "-", r["scaling"]] for r in e["stages"]])
    print(f"total {e['core_hours']:,.0f} core-hours (runner overhead x{cfg.overhead:g}, shuffles at "
          f"{cfg.shuffle_mib_per_core_s:g} MiB/s/core; {e['effective_core_hours']:,.0f} at {cfg.efficiency:.0%} "
          f"parallel efficiency); shuffle {_si(e['shuffle_bytes'], 'B')}; LSH/components growth x"
          f"{e['lsh_growth_factor']:.2f} over the measured size, {e['components_rounds']} components rounds")
    if "cores_needed" in e:
        print(f"cluster for {cfg.hours:g} h wall: {e['cores_needed']:,} cores")
    if "wall_hours" in e:
        print(f"wall time on {cfg.cores:,} cores: {e['wall_hours']:,.1f} h ({e['wall_hours'] / 24:,.1f} days)")


def cli(config: str | None, overrides: list[str]) -> int:
    """Print the cost model (core-hours, shuffle bytes, cluster size) for a token target."""
    cfg = load_config(EstimateConfig, "estimate", config, overrides)
    print_estimate(cfg, estimate(cfg, load_measured(cfg.input)))
    return 0


if __name__ == "__main__":
    import sys

    from q3.verbs import script_main

    sys.exit(script_main(cli, __doc__, prog="q3 data estimate"))
