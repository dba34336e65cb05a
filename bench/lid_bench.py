"""LID bench: our langid stage vs bare fastText predict (lines/s), and accuracy on the sample.

    python -m bench.lid_bench                      # sample from $Q3_DATA/sample (built if missing)
    python -m bench.lid_bench --sample /work/sample --lines 20000

1. Throughput: the same lines (the sample's non-empty lines) through (a) bare fastText
   `model.predict(list_of_lines)` -- the ceiling -- and (b) `LangIdStage` on Arrow batches (label
   mapping, script decision, thresholds, reject columns included). Target: (b) >= 80% of (a).
2. Accuracy: every man page of the sample through `LangIdStage`, `lang` compared with the
   language from the path (`lang_hint`), per language; also the share kept at the thresholds.
Results are printed and written to bench/results/lid_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pyarrow as pa

from dataproc.config import LangIdConfig
from dataproc.stage import conform
from dataproc.stages.langid import LangIdStage, load_model
from q3.log import print_table
from q3.paths import ROOT, data_dir


def load_sample(path: Path | None) -> list[dict]:
    sample = path or data_dir() / "sample"
    if not (sample / "docs.jsonl").is_file():
        from dataproc.sample import SampleConfig, build_sample

        sample = build_sample(SampleConfig(output=str(sample)))
    with open(sample / "docs.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def throughput(lines: list[str], batch: int, repeats: int) -> dict:
    stage = LangIdStage(LangIdConfig())
    model = load_model(stage.model_path)
    batches = [conform(pa.Table.from_pydict({"text": lines[i:i + batch]}))
               for i in range(0, len(lines), batch)]
    model.predict(lines[:100])
    stage(batches[0])   # warm both
    bare, ours = [], []
    # Interleaved repeats, CPU time of this process (the shared machine's load distorts wall time),
    # best of each.
    for _ in range(repeats):
        t = time.process_time()
        for i in range(0, len(lines), batch):
            model.predict([x.replace("\n", " ") for x in lines[i:i + batch]], k=1)
        bare.append(time.process_time() - t)
        t = time.process_time()
        for b in batches:
            stage(b)
        ours.append(time.process_time() - t)
    b, o = min(bare), min(ours)
    return {"lines": len(lines), "bare_lines_per_s": len(lines) / b, "stage_lines_per_s": len(lines) / o,
            "ratio": b / o}


def accuracy(docs: list[dict], batch: int) -> tuple[dict, dict]:
    stage = LangIdStage(LangIdConfig())
    per: dict[str, dict[str, int]] = {}
    confusions: dict[str, dict[str, int]] = {}
    natural = [d for d in docs if not d["lang_hint"].startswith("code_")]
    for i in range(0, len(natural), batch):
        chunk = natural[i:i + batch]
        out = stage(conform(pa.Table.from_pydict({"text": [d["text"] for d in chunk]})))
        for d, lang, reason in zip(chunk, out.column("lang").to_pylist(), out.column("reason").to_pylist(),
                                   strict=True):
            hint = d["lang_hint"]
            p = per.setdefault(hint, {"docs": 0, "correct": 0, "kept": 0, "kept_correct": 0})
            p["docs"] += 1
            p["correct"] += lang == hint
            p["kept"] += reason is None
            p["kept_correct"] += reason is None and lang == hint
            if lang != hint:
                c = confusions.setdefault(hint, {})
                c[lang] = c.get(lang, 0) + 1
    return per, confusions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=Path, default=None)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    docs = load_sample(args.sample)
    lines = [ln for d in docs for ln in d["text"].splitlines() if ln.strip()][: args.lines]

    tp = throughput(lines, args.batch, args.repeats)
    print_table("LID throughput (same lines, one process, CPU time)", ["", "lines/s"],
                [["bare fastText predict", round(tp["bare_lines_per_s"])],
                 ["LangIdStage", round(tp["stage_lines_per_s"])],
                 ["ratio stage/bare", round(tp["ratio"], 3)]])

    per, conf = accuracy(docs, args.batch)
    rows = []
    for lang, p in sorted(per.items()):
        top = sorted(conf.get(lang, {}).items(), key=lambda kv: -kv[1])[:2]
        rows.append([lang, p["docs"], round(p["correct"] / p["docs"], 3), round(p["kept"] / p["docs"], 3),
                     ", ".join(f"{k}:{v}" for k, v in top) or "-"])
    total = sum(p["docs"] for p in per.values())
    correct = sum(p["correct"] for p in per.values())
    macro = sum(p["correct"] / p["docs"] for p in per.values()) / max(1, len(per))
    rows.append(["ALL (micro)", total, round(correct / max(1, total), 3),
                 round(sum(p["kept"] for p in per.values()) / max(1, total), 3), f"macro acc {macro:.3f}"])
    print_table("LID accuracy on the sample's man pages vs the language from the path",
                ["lang", "docs", "accuracy", "kept@thr", "top confusions"], rows)

    result = {"throughput": tp, "accuracy": per, "confusions": conf, "micro_accuracy": correct / max(1, total),
              "macro_accuracy": macro, "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "load_avg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = ROOT / "bench" / "results" / "lid_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
