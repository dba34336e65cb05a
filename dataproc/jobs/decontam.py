"""`q3 data decontam`: reject documents (or cut spans) overlapping evaluation sets by n-grams.

    q3 data decontam [--config default] input=data/dedup/kept output=data/decontam \
        decontam.evals=[evals/mmlu.jsonl,evals/gsm8k.parquet] decontam.mode=reject
    spark-submit dataproc/jobs/decontam.py --config conf/dedup/default.yaml ...

The eval index is built once on the driver and broadcast; the `Decontaminator` stage runs in
`mapInArrow` (Spark) or on local batches. Output (atomic): kept/ (by lang), rejected/ (reason
`contaminated:<benchmark>`), stats.json (rejected and span-cut documents per benchmark). A rerun
with the same config, input and eval sets (by content, `q3.commit`) skips.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataproc.dedup.config import DedupConfig
from dataproc.dedup.decontam import Decontaminator, EvalIndex
from dataproc.stage import split
from q3.commit import commit, job_key, reuse_if_committed
from q3.config import load_config
from q3.errors import require_nonempty, require_path
from q3.log import print_table
from q3.schemas import DOC_SCHEMA, STAGE_OUTPUT_SCHEMA


def _stage_fn(cfg_json: str, bc):
    def fn(it):
        from dataproc.dedup.config import DecontamConfig
        stage = Decontaminator(DecontamConfig.model_validate_json(cfg_json), bc.value)
        for b in it:
            yield stage(b)
    return fn


def run_decontam(input_dir: str | Path, output_dir: str | Path, cfg: DedupConfig, spark=None) -> dict[str, Any]:
    """Decontaminate `input_dir` into `output_dir`; an output committed under the same job key (the
    decontam config, the content of the input and of the eval sets, the code) is reused."""
    t0 = time.time()
    out = Path(output_dir)
    key = job_key("decontam", {"decontam": cfg.decontam.model_dump(mode="json")},
                  inputs=[input_dir, *cfg.decontam.evals])
    if reuse_if_committed(out, key) is not None and (out / "stats.json").exists():
        return json.loads((out / "stats.json").read_text())
    index = EvalIndex.build(cfg.decontam)
    with commit(out, key, {"stage": "decontam", "input": str(input_dir)}) as tmp:
        if cfg.runner == "local":
            from dataproc.jobs.dedup import read_docs_local
            docs = read_docs_local(input_dir)
            stage = Decontaminator(cfg.decontam, index)
            res = pa.Table.from_batches([stage(b) for b in docs.to_batches(max_chunksize=cfg.batch_size)],
                                        schema=STAGE_OUTPUT_SCHEMA) if docs.num_rows else STAGE_OUTPUT_SCHEMA.empty_table()
            kept, rejected = split(res)
            if kept.num_rows:
                pq.write_to_dataset(kept.select(DOC_SCHEMA.names), str(tmp / "kept"), partitioning=["lang"],
                                    partitioning_flavor="hive")
            (tmp / "rejected").mkdir(parents=True, exist_ok=True)
            pq.write_table(rejected, str(tmp / "rejected" / "part-0.parquet"))
            reasons = pc.value_counts(rejected.column("reason")).to_pylist() if rejected.num_rows else []
            by_reason = {r["values"]: r["counts"] for r in reasons}
            n_in = res.num_rows
        else:
            from pyspark.sql import functions as F
            from pyspark.sql.pandas.types import from_arrow_schema

            from q3.engine.session import get_spark
            spark = spark or get_spark("q3-decontam")
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_size))
            docs = spark.read.parquet(str(input_dir))
            for f in DOC_SCHEMA:
                if f.name not in docs.columns:
                    docs = docs.withColumn(f.name, F.lit(None).cast(from_arrow_schema(pa.schema([f]))[0].dataType))
            docs = docs.select(*DOC_SCHEMA.names)
            bc = spark.sparkContext.broadcast(index)
            res = docs.mapInArrow(_stage_fn(cfg.decontam.model_dump_json(), bc),
                                  from_arrow_schema(STAGE_OUTPUT_SCHEMA))
            res.write.parquet(str(tmp / "work_all"))
            res = spark.read.parquet(str(tmp / "work_all"))
            live = F.col("reason").isNull()
            res.where(live).select(*DOC_SCHEMA.names).write.partitionBy("lang").parquet(str(tmp / "kept"))
            res.where(~live).write.parquet(str(tmp / "rejected"))
            by_reason = {r["reason"]: r["count"] for r in res.where(~live).groupBy("reason").count().collect()}
            n_in = res.count()
            import shutil
            shutil.rmtree(tmp / "work_all", ignore_errors=True)
        stats = {"docs_in": n_in, "rejected": by_reason, "benchmarks": index.items,
                 "eval_items_too_short": index.skipped, "ngram_index": int(len(index.hashes)),
                 "mode": cfg.decontam.mode, "seconds": round(time.time() - t0, 2)}
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    print_table("decontam: rejected per benchmark", ["reason", "docs"], sorted(by_reason.items()))
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
