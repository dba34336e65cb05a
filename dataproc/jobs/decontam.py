"""`q3 data decontam`: reject documents (or cut spans) overlapping evaluation sets by n-grams.

    q3 data decontam [--config default] input=data/dedup/kept output=data/decontam \
        decontam.evals=[evals/mmlu.jsonl,evals/gsm8k.parquet] decontam.mode=reject
    spark-submit dataproc/jobs/decontam.py --config conf/dedup/default.yaml ...

On the corpus engine (q3/engine/): the eval index is built once on the driver and handed to the
`Decontaminator` batch function (`Shared`: a Spark broadcast, shipped once per executor, or the
index itself locally); `map_batches` runs it by a local loop or `mapInArrow` (`runner: auto` picks
by the input's size) and `write_split` writes kept/ (by lang) and rejected/ (reason
`contaminated:<benchmark>`, by lang), kept + rejected = input checked. stats.json: documents in,
rejected per benchmark, the index's size. A rerun with the same config, input and eval sets (by
content, `q3.commit`) skips; a killed run leaves nothing committed and reruns from the start.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataproc.dedup.config import DecontamConfig, DedupConfig
from dataproc.dedup.decontam import Decontaminator, EvalIndex
from q3.commit import job_key
from q3.config import load_config
from q3.engine.io import corpus_size, read_corpus, scan_corpus
from q3.engine.job import run_committed
from q3.engine.map import map_batches
from q3.engine.runner import choose_runner
from q3.engine.shared import Shared
from q3.engine.write import write_split
from q3.errors import require_nonempty, require_path
from q3.log import print_table
from q3.schemas import STAGE_OUTPUT_SCHEMA


def decontam_fn(cfg_json: str, index: Shared[EvalIndex]) -> Decontaminator:
    """The batch-function factory (both runners): the stage over the shared eval index."""
    return Decontaminator(DecontamConfig.model_validate_json(cfg_json), index.value)


def _die_midway(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Test hook (Q3_DECONTAM_DIE_MIDWAY=1): die hard, like kill -9, once the first batch went to
    the writer (local runner): a half-written output that must never be taken as done."""
    for i, b in enumerate(batches):
        if i == 1 and os.environ.get("Q3_DECONTAM_DIE_MIDWAY") == "1":
            os._exit(137)
        yield b


def run_decontam(input_dir: str | Path, output_dir: str | Path, cfg: DedupConfig, spark=None) -> dict[str, Any]:
    """Decontaminate `input_dir` into `output_dir`; an output committed under the same job key (the
    decontam config, the content of the input and of the eval sets, the code) is reused."""
    key = job_key("decontam", {"decontam": cfg.decontam.model_dump(mode="json")},
                  inputs=[input_dir, *cfg.decontam.evals])

    def body(tmp: Path, meta: dict[str, Any]) -> dict[str, Any]:
        n_in = corpus_size(input_dir)[1]
        runner = "local" if n_in == 0 else choose_runner(  # nothing to read: no Spark for it
            cfg.runner, [input_dir], cfg.auto, cfg.cluster, job="decontam").runner
        index = EvalIndex.build(cfg.decontam)
        session = None
        if runner == "spark":
            from q3.engine.session import get_spark

            session = spark or get_spark("q3-decontam")
            source = read_corpus(input_dir, spark=session)
        else:
            source = scan_corpus(input_dir, batch_size=cfg.batch_size)
        shared = Shared(index, session)
        fn = functools.partial(decontam_fn, cfg.decontam.model_dump_json(), shared)
        result = map_batches(fn, source, STAGE_OUTPUT_SCHEMA, runner=runner, batch_size=cfg.batch_size)
        counts = write_split(result if runner == "spark" else _die_midway(result), tmp, n_in=n_in, job="decontam")
        shared.unpersist()
        meta["runner"] = runner
        return {"docs_in": n_in, "docs_kept": counts.kept, "docs_rejected": counts.rejected,
                "rejected": counts.by_reason, "benchmarks": index.items,
                "eval_items_too_short": index.skipped, "ngram_index": int(len(index.hashes)),
                "mode": cfg.decontam.mode}

    stats = run_committed(output_dir, key, body, meta={"stage": "decontam", "input": str(input_dir)})
    print_table("decontam: rejected per benchmark", ["reason", "docs"], sorted(stats["rejected"].items()))
    return stats


def cli(config: str | None, overrides: list[str]) -> int:
    """Remove documents overlapping evaluation sets by n-grams. Keys: input, output, decontam.*"""
    cfg = load_config(DedupConfig, "dedup", config or "default", overrides)
    require_path(cfg.input, "input", "kept documents: the Parquet output of `q3 data run` (<output>/kept)")
    stats = run_decontam(cfg.input, cfg.output, cfg)
    require_nonempty(stats["docs_in"], "0 documents in", f"input {cfg.input} holds no rows",
                     allow_empty=cfg.allow_empty)
    return 0


if __name__ == "__main__":
    from q3.verbs import script_main

    sys.exit(script_main(cli, __doc__))
