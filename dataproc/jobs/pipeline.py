"""`q3 data run`: ingest -> normalise -> language ID -> quality filters -> PII, kept/rejected Parquet.

The same module is a spark-submit application:

    spark-submit --master spark://HOST:7077 --py-files q3.zip \\
        dataproc/jobs/pipeline.py --config demo output=/shared/q3/pipeline

(`--config` and key=value overrides exactly as for `q3 data run`.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a file (spark-submit): the project comes from --py-files,
    try:                        # or from the checkout this file lives in
        import dataproc  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dataproc.config import PipelineConfig  # noqa: E402
from q3.config import load_config  # noqa: E402
from q3.log import print_table  # noqa: E402


def print_summary(stats: dict, output: str, seconds: float) -> None:
    rows = []
    for s in stats["stages"]:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(s["rejected_by_reason"].items(), key=lambda x: -x[1]))
        rows.append([s["stage"], s["in"], s["out"], s["rejected"], reasons or "-"])
    print_table("Stages: documents in/out, rejected by reason", ["stage", "in", "out", "rejected", "reasons"], rows)
    langs = sorted(stats["kept_by_lang"].items(), key=lambda kv: -kv[1]["docs"])
    print_table("Kept by language", ["lang", "docs", "chars"],
                [[lang, v["docs"], v["chars"]] for lang, v in langs])
    print(f"{stats['input_docs']:,} documents in, {stats['kept_docs']:,} kept, "
          f"{stats['rejected_docs']:,} rejected in {seconds:.1f}s")
    if stats.get("skipped"):
        print("(the committed output is up to date: same config and input; nothing recomputed)")
    out = Path(output).resolve()
    print(f"output: {out}  (kept/, rejected/ partitioned by lang; stats.json)")


def check_read(stats: dict, output: str, allow_empty: bool = False) -> None:
    """The one empty-run rule (`q3.errors`): every input row rejected at read is a failed run, with
    the reasons and one row's detail (the fields it has, the byte that is not UTF-8) to fix it by."""
    from dataproc.runner import read_output
    from q3.errors import require_nonempty

    read = next((s for s in stats["stages"] if s["stage"] == "read"), None)   # absent: none rejected there
    kept_at_read = stats["input_docs"] - (read["rejected"] if read else 0)
    if stats["input_docs"] == 0:
        why = "the input files hold no rows (check input=)"
    else:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(
            (read or {}).get("rejected_by_reason", {}).items(), key=lambda x: -x[1]))
        why = f"every input row was rejected at read ({reasons})"
        if kept_at_read == 0:
            rej = read_output(output, "rejected", ["url", "detail"]).slice(0, 1).to_pylist()
            if rej and rej[0]["detail"]:
                why += f"; e.g. {rej[0]['url']}: {rej[0]['detail']}"
    require_nonempty(kept_at_read if stats["input_docs"] else 0,
                     f"0 of {stats['input_docs']:,} input rows read", why, allow_empty=allow_empty)


def run_pipeline(cfg: PipelineConfig, spark=None) -> dict:
    from dataproc import runner

    return runner.run(cfg, spark=spark)


def cli(config: str | None, overrides: list[str]) -> int:
    from dataproc.runner import resolve_paths

    cfg = resolve_paths(load_config(PipelineConfig, "pipeline", config or "default", overrides))
    t0 = time.time()
    stats = run_pipeline(cfg)
    print_summary(stats, cfg.output, time.time() - t0)
    check_read(stats, cfg.output, cfg.allow_empty)
    return 0


def main(argv: list[str] | None = None) -> int:
    from q3.verbs import script_main

    return script_main(cli, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
