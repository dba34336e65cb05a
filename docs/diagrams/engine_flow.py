"""Draw docs/diagrams/engine_flow.png: data flow through the corpus engine (docs/engine.md).

    PYTHONPATH=$PWD python docs/diagrams/engine_flow.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {   # name: (x, y, w, h, text, colour)
    "input": (0.2, 3.0, 2.2, 1.1, "input: upstream kept/\n(+ its commit id)\nor raw files", "#eeeeee"),
    "key": (0.2, 5.0, 2.2, 1.1, "job key (q3.commit)\nconfig + input fingerprint\n+ code version", "#fde9c9"),
    "skip": (3.0, 5.0, 2.4, 1.1, "committed under\nthe same key?\n-> skip, say so", "#fde9c9"),
    "runner": (3.0, 3.0, 2.4, 1.1, "runner: auto | local | spark\n(input bytes / rows,\ncluster configured?)", "#dbe8f6"),
    "read": (6.0, 3.9, 2.6, 1.0, "read_corpus / scan_corpus\nDOC_SCHEMA, hive lang=", "#dbe8f6"),
    "map": (6.0, 2.3, 2.6, 1.2, "map_batches(fn_factory, schema)\nlocal loop | Spark mapInArrow\n(one batch function)", "#dbe8f6"),
    "write": (9.2, 3.0, 2.6, 1.2, "write_split\nkept/lang=*  rejected/lang=*\nkept + rejected = input", "#dbe8f6"),
    "commit": (9.2, 5.0, 2.6, 1.1, "run_committed\natomic rename + marker\n(key, commit id, stats)", "#fde9c9"),
    "down": (12.4, 5.0, 2.0, 1.1, "downstream job:\nits input fingerprint\n= this commit id", "#eeeeee"),
}
ARROWS = [("input", "key"), ("key", "skip"), ("input", "runner"), ("skip", "runner"), ("runner", "read"),
          ("read", "map"), ("map", "write"), ("write", "commit"), ("commit", "down")]


def _anchor(name: str, other: str) -> tuple[float, float]:
    x, y, w, h = BOXES[name][:4]
    ox, oy, ow, oh = BOXES[other][:4]
    cx, cy, ocx, ocy = x + w / 2, y + h / 2, ox + ow / 2, oy + oh / 2
    if abs(ocx - cx) > abs(ocy - cy) * 1.5:
        return (x + w if ocx > cx else x), cy
    return cx, (y + h if ocy > cy else y)


def main() -> Path:
    fig, ax = plt.subplots(figsize=(14.8, 4.6))
    for x, y, w, h, text, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#555555"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)
    for a, b in ARROWS:
        ax.add_patch(FancyArrowPatch(_anchor(a, b), _anchor(b, a), arrowstyle="-|>", mutation_scale=14,
                                     color="#333333"))
    ax.text(7.3, 1.7, "the same factory, schema and writer on both runners -> the same rows",
            ha="center", fontsize=8.5, style="italic")
    ax.set_xlim(0, 14.6)
    ax.set_ylim(1.4, 6.4)
    ax.axis("off")
    ax.set_title("q3.engine: one corpus engine for every job (pipeline, dedup, decontam, label, tokenise, synth)")
    out = Path(__file__).with_suffix(".png")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


if __name__ == "__main__":
    print(main())
