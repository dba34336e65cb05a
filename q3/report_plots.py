"""Pictures of a corpus run for the demo report and the inspection notebook.

Reads only the files the steps commit (no area imports, like `q3.demo.summarise`):

    <data>/pipeline/stats.json                 documents in/out per stage, rejected by reason
    <data>/dedup/stats.json                    cluster-size histogram, removed per language
    <data>/labeling/labeled/docs/lang=*/       labels struct per document (Parquet)
    <data>/mix/manifests/*.yaml                stage-mixing weights, tokens per dataset
    kept documents (furthest committed step)   documents and Qwen3 tokens per language

    pngs = corpus_plots(Path("data/demo"), Path("runs/demo/plots"))
    html_report(rows, pngs, Path("runs/demo/REPORT.html"))

Figures are built with `matplotlib.figure.Figure` (no pyplot state, no backend switch), so the
notebook can show the very same figures inline and the report code can run in any process. A
plot whose input is missing is skipped, never an error: a report must not fail the demo.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

MAX_BARS = 40           # more categories than this: the smallest are merged into one "other" bar
STAGE_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _compact(x: float, _pos: int | None = None) -> str:
    """Axis ticks: 1,500 -> 1.5k, 2,000,000 -> 2M (full figures are on the bars themselves)."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.0f}"


def palette(n: int) -> list[str]:
    """n distinct colours (tab20 past 8, so two datasets never share one)."""
    if n <= len(STAGE_COLOURS):
        return STAGE_COLOURS[:n]
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab20"]
    return [to_hex(cmap(i % 20)) for i in range(n)]


# ------------------------------------------------------------------------------------ readers

def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _parquet_rows(directory: Path, columns: list[str]) -> dict[str, list]:
    """Columns of a corpus folder (lang=*/part-*.parquet) as Python lists."""
    from q3.engine.io import read_corpus

    if not directory.is_dir() or not any(directory.rglob("*.parquet")):
        return {}
    t = read_corpus(directory, columns)
    return {c: t.column(c).to_pylist() for c in t.column_names}


def kept_docs_dir(data: Path) -> tuple[Path, str] | None:
    """The kept documents of the furthest committed corpus step, and that step's name."""
    for sub, name in (("labeling/labeled/docs", "labelled"), ("dedup/kept", "after dedup"),
                      ("pipeline/kept", "after the pipeline")):
        p = data / sub
        if p.is_dir() and any(p.rglob("*.parquet")):
            return p, name
    return None


def tokens_per_language(docs: Path, batch: int = 256) -> tuple[Counter, Counter]:
    """(documents, Qwen3 tokens) per language of the kept documents under `docs`.

    Counted with the project's tokenizer (Rust `tokenizers`, batched): on the demo's corpus this
    takes seconds; the tokenised datasets group languages, so they cannot give this split."""
    from q3.tokenizer import encode_batch

    rows = _parquet_rows(docs, ["lang", "text"])
    n_docs: Counter = Counter(rows.get("lang", []))
    n_tok: Counter = Counter()
    langs, texts = rows.get("lang", []), rows.get("text", [])
    for i in range(0, len(texts), batch):
        for lang, ids in zip(langs[i:i + batch], encode_batch([t or "" for t in texts[i:i + batch]]), strict=True):
            n_tok[lang] += len(ids)
    return n_docs, n_tok


# ------------------------------------------------------------------------------------ drawing

def _top(items: dict[str, float], n: int = MAX_BARS) -> list[tuple[str, float]]:
    """Largest first; past `n`, the rest become one 'other (k)' bar so the axis stays readable."""
    ranked = sorted(items.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) <= n:
        return ranked
    rest = ranked[n - 1:]
    return ranked[:n - 1] + [(f"other ({len(rest)})", sum(v for _, v in rest))]


def _hbar(ax, pairs: list[tuple[str, float]], colour: str = STAGE_COLOURS[0], fmt: str = "{:,.0f}",
          colours: list[str] | None = None) -> None:
    """Horizontal bars, largest on top, each labelled with its value."""
    labels = [p[0] for p in pairs][::-1]
    values = [p[1] for p in pairs][::-1]
    bars = ax.barh(labels, values, color=(colours[::-1] if colours else colour))
    top = max(values, default=0) or 1
    for b, v in zip(bars, values, strict=True):
        ax.text(b.get_width() + top * 0.01, b.get_y() + b.get_height() / 2, fmt.format(v), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.18)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))      # counts: no 0.25 documents
    ax.xaxis.set_major_formatter(FuncFormatter(_compact))
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def _figure(width: float, rows: int, per_row: float = 0.24, base: float = 1.6, cols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, base + per_row * max(rows, 1)), dpi=100)
    axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, axes


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_axis_off()


def fig_pipeline(stats: dict[str, Any]) -> Figure | None:
    """Documents left after each pipeline stage, and what each stage rejected, by reason."""
    stages = stats.get("stages", [])
    if not stages:
        return None
    reasons: list[tuple[str, float]] = []
    colours: list[str] = []
    for i, s in enumerate(stages):
        for r, n in s.get("rejected_by_reason", {}).items():
            reasons.append((f"{s['stage']}: {r}", n))
            colours.append(STAGE_COLOURS[i % len(STAGE_COLOURS)])
    order = sorted(range(len(reasons)), key=lambda k: -reasons[k][1])[:MAX_BARS]
    fig, (ax1, ax2) = _figure(12, max(len(stages), len(order)), cols=2)
    flow = [("read", stats.get("input_docs", stages[0]["in"]))] + [(s["stage"], s["out"]) for s in stages]
    _hbar(ax1, flow)       # pipeline order, top to bottom
    ax1.set_title("documents left after each stage")
    ax1.set_xlabel("documents")
    if order:
        _hbar(ax2, [reasons[k] for k in order], colours=[colours[k] for k in order])
        ax2.set_title(f"rejected: {stats.get('rejected_docs', 0):,} documents by stage: reason")
        ax2.set_xlabel("documents")
    else:
        _empty(ax2, "nothing rejected")
    fig.suptitle(f"corpus pipeline: {stats.get('input_docs', 0):,} read, {stats.get('kept_docs', 0):,} kept")
    fig.tight_layout()
    return fig


def fig_languages(n_docs: dict[str, int], n_tokens: dict[str, int], where: str = "") -> Figure | None:
    """Kept documents and Qwen3 tokens per language, side by side, in the same language order."""
    if not n_docs:
        return None
    ranked = _top({k: float(v) for k, v in n_tokens.items()} if n_tokens else dict(n_docs))
    names = [k for k, _ in ranked]
    other = {k for k in n_docs if k not in names}
    docs = [(k, float(n_docs.get(k, 0) if not k.startswith("other (") else sum(n_docs[o] for o in other)))
            for k in names]
    fig, (ax1, ax2) = _figure(12, len(names), cols=2)
    _hbar(ax1, docs)
    ax1.set_title("kept documents per language (ordered by tokens)")
    _hbar(ax2, ranked, colour=STAGE_COLOURS[2], fmt="{:,.0f}")
    ax2.set_title("Qwen3 tokens per language")
    ax2.set_yticklabels([])
    fig.suptitle(f"{sum(n_docs.values()):,} documents, {sum(n_tokens.values()):,} tokens in {len(n_docs)} "
                 f"languages {where}".strip())
    fig.tight_layout()
    return fig


def fig_dedup(stats: dict[str, Any]) -> Figure | None:
    """Cluster-size histogram (log scale: singletons dwarf the rest) and removals per language."""
    hist = stats.get("cluster_size_histogram", [])
    if not hist:
        return None
    per_lang = [r for r in stats.get("per_lang", []) if r.get("exact_removed", 0) + r.get("near_removed", 0) > 0]
    fig, (ax1, ax2) = _figure(12, 8, cols=2, base=2.0)
    sizes = [h["size"] for h in hist]
    x = range(len(sizes))
    bars = ax1.bar([i - 0.2 for i in x], [h["clusters"] for h in hist], width=0.4, label="clusters",
                   color=STAGE_COLOURS[0])
    bars2 = ax1.bar([i + 0.2 for i in x], [h["docs"] for h in hist], width=0.4, label="documents",
                    color=STAGE_COLOURS[1])
    for b in [*bars, *bars2]:
        ax1.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{int(b.get_height()):,}", ha="center",
                 va="bottom", fontsize=8)
    ax1.set_xticks(list(x), sizes)
    ax1.set_yscale("log")
    ax1.set_xlabel("cluster size (documents per duplicate cluster)")
    ax1.set_title("duplicate clusters by size (log scale)")
    ax1.legend(fontsize=8)
    ax1.spines[["top", "right"]].set_visible(False)
    if per_lang:
        per_lang = sorted(per_lang, key=lambda r: -(r["exact_removed"] + r["near_removed"]))[:MAX_BARS][::-1]
        langs = [r["lang"] or "?" for r in per_lang]
        ax2.barh(langs, [r["exact_removed"] for r in per_lang], label="exact", color=STAGE_COLOURS[3])
        ax2.barh(langs, [r["near_removed"] for r in per_lang], left=[r["exact_removed"] for r in per_lang],
                 label="near (MinHash-LSH)", color=STAGE_COLOURS[4])
        ax2.legend(fontsize=8)
        ax2.tick_params(axis="y", labelsize=8)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("documents removed")
        ax2.set_title("duplicates removed per language")
        ax2.spines[["top", "right"]].set_visible(False)
    else:
        _empty(ax2, "no duplicates removed")
    fig.suptitle(f"dedup: {stats.get('docs_in', 0):,} in, {stats.get('exact_duplicate', 0):,} exact + "
                 f"{stats.get('near_duplicate', 0):,} near duplicates removed")
    fig.tight_layout()
    return fig


def label_columns(docs: Path) -> dict[str, list]:
    """{dimension: values} of the `labels` struct of labelled documents (None where unlabelled)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from q3.engine.io import read_corpus

    if not docs.is_dir() or not any(docs.rglob("*.parquet")):
        return {}
    t = read_corpus(docs, ["lang", "labels"])
    lab = t.column("labels").combine_chunks()
    scalar = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string)
    cols = {f.name: pc.struct_field(lab, f.name).to_pylist() for f in lab.type   # no maps (extra, versions)
            if any(test(f.type) for test in scalar)}
    cols["lang"] = t.column("lang").to_pylist()
    return cols


def fig_labels(cols: dict[str, list]) -> Figure | None:
    """One panel per label dimension: histograms of scores, counts of categories and flags."""
    dims = [k for k in cols if k != "lang" and any(v is not None for v in cols[k])]
    if not dims:
        return None
    ncols = 4
    nrows = (len(dims) + ncols - 1) // ncols
    fig = Figure(figsize=(14, 3.2 * nrows), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, dim in zip(axes, dims, strict=False):
        vals = [v for v in cols[dim] if v is not None]
        if isinstance(vals[0], bool):
            n = Counter(vals)
            ax.bar(["no", "yes"], [n[False], n[True]], color=[STAGE_COLOURS[7], STAGE_COLOURS[2]])
            for i, v in enumerate([n[False], n[True]]):
                ax.text(i, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
        elif isinstance(vals[0], int | float):
            ax.hist(vals, bins=20, color=STAGE_COLOURS[0])
            ax.axvline(sum(vals) / len(vals), color=STAGE_COLOURS[3], ls="--", lw=1,
                       label=f"mean {sum(vals) / len(vals):.2f}")
            ax.legend(fontsize=7)
            ax.set_xlabel("score")
        else:
            ranked = _top(dict(Counter(str(v) for v in vals)), 12)
            _hbar(ax, ranked)
        ax.set_title(f"{dim} ({len(vals):,} labelled)", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[len(dims):]:
        ax.set_axis_off()
    fig.suptitle(f"label distributions per dimension ({len(cols['lang']):,} documents)")
    fig.tight_layout()
    return fig


def fig_stage_mix(manifests: dict[str, Any]) -> Figure | None:
    """Sampling weight of each dataset per stage (stacked to 1), annotated with its tokens."""
    if not manifests:
        return None
    names = list(dict.fromkeys(d.name for m in manifests.values() for d in m.datasets))
    colour = dict(zip(names, palette(len(names)), strict=True))
    fig, (ax1, ax2) = _figure(13, len(manifests), per_row=0.7, base=2.4, cols=2)
    stages = list(manifests)[::-1]
    seen: set[str] = set()
    for y, st in enumerate(stages):
        left = 0.0
        for d in manifests[st].datasets:
            ax1.barh(y, d.weight, left=left, color=colour[d.name], edgecolor="white",
                     label=None if d.name in seen else d.name)
            seen.add(d.name)
            if d.weight >= 0.06:
                ax1.text(left + d.weight / 2, y, f"{d.weight:.2f}", ha="center", va="center", fontsize=8,
                         color="white")
            left += d.weight
    ax1.set_yticks(range(len(stages)), [f"{s}\n{manifests[s].target_tokens:,} tok target" for s in stages],
                   fontsize=8)
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("sampling weight")
    ax1.set_title("stage mix: weight per dataset")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(len(names), 5))
    # tokens available per dataset (0-token datasets show as a red 0: they silently got weight 0)
    first = {d.name: d.n_tokens for m in manifests.values() for d in m.datasets}
    pairs = sorted(first.items(), key=lambda kv: -kv[1])[:MAX_BARS]
    _hbar(ax2, [(k, float(v)) for k, v in pairs], colours=[colour[k] for k, _ in pairs])
    for lbl in ax2.get_yticklabels():
        if first.get(lbl.get_text(), 1) == 0:
            lbl.set_color("red")
    ax2.set_title("tokens available per dataset (red: empty, weight 0)")
    ax2.set_xlabel("tokens")
    fig.suptitle("stage-mixing manifests")
    fig.tight_layout()
    return fig


def load_manifests(directory: Path) -> dict[str, Any]:
    from q3.manifest import load_manifest

    return {p.stem: load_manifest(p) for p in sorted(directory.glob("*.yaml"))} if directory.is_dir() else {}


# ------------------------------------------------------------------------------------ outputs

def save(fig: Figure | None, path: Path) -> Path | None:
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def corpus_plots(data: Path, out: Path) -> list[Path]:
    """PNG plots of the corpus steps committed under `data` (the demo's data dir), written to
    `out`; returns the PNGs made, in report order. Missing inputs: that plot is skipped."""
    data, out = Path(data), Path(out)
    kept = kept_docs_dir(data)

    def languages() -> Figure | None:
        if kept is None:
            return None
        docs, toks = tokens_per_language(kept[0])
        return fig_languages(docs, toks, f"({kept[1]})")

    makers: list[tuple[str, Callable[[], Figure | None]]] = [
        ("pipeline.png", lambda: fig_pipeline(_json(data / "pipeline" / "stats.json"))),
        ("languages.png", languages),
        ("dedup.png", lambda: fig_dedup(_json(data / "dedup" / "stats.json"))),
        ("labels.png", lambda: fig_labels(label_columns(data / "labeling" / "labeled" / "docs"))),
        ("stage_mix.png", lambda: fig_stage_mix(load_manifests(data / "mix" / "manifests"))),
    ]
    pngs = []
    for name, make in makers:
        p = save(make(), out / name)
        if p is not None:
            pngs.append(p)
    return pngs


CAPTIONS = {
    "pipeline": "documents kept and rejected per stage and reason",
    "languages": "kept documents and tokens per language",
    "dedup": "dedup cluster sizes and removals per language",
    "labels": "label distributions per dimension",
    "stage_mix": "stage-mixing weights and tokens per dataset",
    "training_curves": "training loss per stage",
    "post_training_curves": "post-training: RL reward and entropy, distillation divergence",
}


def caption(png: Path) -> str:
    return CAPTIONS.get(png.stem, png.stem.replace("_", " "))


def markdown_images(pngs: Sequence[Path], report_dir: Path) -> list[str]:
    """REPORT.md lines embedding the PNGs by path relative to the report."""
    lines = []
    for p in pngs:
        rel = Path(p).resolve().relative_to(Path(report_dir).resolve()) if Path(p).resolve().is_relative_to(
            Path(report_dir).resolve()) else Path(p).resolve()
        lines += [f"### {caption(p)}", "", f"![{caption(p)}]({rel.as_posix()})", ""]
    return lines


def html_report(markdown_rows: Sequence[Sequence[Any]], pngs: Sequence[Path], out: Path,
                header: Sequence[str] = ("step", "what", "status", "seconds", "result"),
                title: str = "Q3 demo report", notes: Sequence[str] = ()) -> Path:
    """A self-contained HTML report (the table, notes, PNGs embedded as data URIs, so the file can
    be mailed or opened from anywhere). `out`: the .html path (e.g. runs/demo/REPORT.html)."""
    out = Path(out)
    esc = html.escape

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}"
        return esc(str(v))

    status_col = list(header).index("status") if "status" in header else -1
    rows = []
    for r in markdown_rows:
        cls = ""
        if status_col >= 0:
            s = str(r[status_col])
            cls = ' class="ok"' if s == "ok" else (' class="skip"' if s == "skipped" else ' class="fail"')
        rows.append(f"<tr{cls}>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    figs = []
    for p in pngs:
        b64 = base64.b64encode(Path(p).read_bytes()).decode()
        figs.append(f'<figure><img alt="{esc(caption(p))}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{esc(caption(p))} <small>({esc(Path(p).name)})</small></figcaption></figure>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
tr.ok td:nth-child({status_col + 1}) {{ color: #2a7a2a; }}
tr.fail td {{ background: #fde8e8; }}
tr.skip td {{ color: #888; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-weight: 600; margin-top: .3em; }}
code {{ background: #f4f4f4; padding: 0 3px; }}
</style></head><body>
<h1>{esc(title)}</h1>
{"".join(f"<p>{esc(n)}</p>" for n in notes)}
<table><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in header)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{chr(10).join(figs)}
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
