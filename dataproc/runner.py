"""Runners of the corpus pipeline: one logic, two engines.

    files --(read_file)--> Arrow batches --(stage chain)--> rows with reason/stage --> kept | rejected

`process_file` is the whole per-file logic. The local runner calls it in a loop; the Spark runner
calls it inside `mapInArrow` over a DataFrame of file paths. Everything after that (where files go,
counters, commits) is shared, so both engines give the same rows.

Resumability: the input files are split into deterministic chunks (`chunk_files`); each chunk is
committed atomically as its own part under `<output>.parts/<fingerprint>/chunk-NNNNN` (tmp dir +
rename + `_Q3_SUCCESS` with its counters). A rerun skips committed chunks, redoes the rest, and the
final commit assembles the parts into `<output>/{kept,rejected}/lang=*/` + `stats.json`, atomically.
The fingerprint is the job key of `q3.commit` (config minus engine settings, the input files'
content fingerprint, the code version), so a changed config or input never reuses old parts.

Layout of the output (both engines):
    <output>/kept/lang=<lang>/*.parquet       DOC_SCHEMA rows (lang in the path, hive style)
    <output>/rejected/lang=<lang>/*.parquet   + reason, stage, detail
    <output>/stats.json                       per-stage in/out by reason and language, per-language kept
    <output>/_Q3_SUCCESS                      marker (fingerprint, counts)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dataproc.config import InputSpec, PipelineConfig
from dataproc.stage import chain, conform, split
from q3.atomic import atomic_dir, clean_stale, is_committed, read_marker
from q3.commit import JobKey, commit, job_key, reuse_if_committed
from q3.config import ConfigError
from q3.log import get_logger, progress
from q3.schemas import STAGE_OUTPUT_SCHEMA, UNKNOWN_LANG, content_id

log = get_logger("dataproc.runner")
REJECT_COLS = ["reason", "stage", "detail"]
WORK_SCHEMA = pa.schema([("spec", pa.int32()), ("path", pa.string())])

# ---------------------------------------------------------------- the per-file logic (both engines)

_CHAINS: dict[str, Callable[[pa.RecordBatch], pa.RecordBatch]] = {}


def stage_chain(cfg: PipelineConfig) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """The stage chain of `cfg`, built once per process (models load once per Spark worker)."""
    key = cfg.model_dump_json()
    fn = _CHAINS.get(key)
    if fn is None:
        from dataproc.stages import build_stages

        fn = _CHAINS[key] = chain(build_stages(cfg))
    return fn


def _read_error(path: str, source: str, err: BaseException, after: int) -> pa.RecordBatch:
    """A reader crash becomes one rejected row naming the file and where it stopped; the rows the
    reader yielded before it are kept (readers isolate bad records themselves, so this is the net
    for a reader bug, not for bad data)."""
    row = {"id": content_id(f"read_error:{path}#{after}"), "text": "", "source": source,
           "url": f"{path}#{after + 1}", "lang": UNKNOWN_LANG, "n_chars": 0, "reason": "read_error",
           "stage": "read", "detail": f"reader stopped after {after} rows: {type(err).__name__}: {err}"[:500]}
    return conform(pa.Table.from_pylist([row]))


def _finish(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Fill what every output row must have: n_chars and a lang (partition key)."""
    names = batch.schema.names
    n_chars = pc.coalesce(batch.column("n_chars"), pc.utf8_length(pc.fill_null(batch.column("text"), "")).cast(pa.int64()))
    lang = pc.fill_null(batch.column("lang"), UNKNOWN_LANG)
    batch = batch.set_column(names.index("n_chars"), STAGE_OUTPUT_SCHEMA.field("n_chars"), n_chars)
    return batch.set_column(names.index("lang"), STAGE_OUTPUT_SCHEMA.field("lang"), lang)


def _read_guarded(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    """read_file, with a reader crash turned into one `read_error` row after what it yielded."""
    from dataproc.readers import read_file
    from dataproc.readers.common import source_name

    n = 0
    try:
        for batch in read_file(path, spec):
            n += batch.num_rows
            yield batch
    except Exception as e:  # noqa: BLE001 - a reader failure is data, not a crash of the run
        log.warning("reading %s failed after %d rows: %s: %s", path, n, type(e).__name__, e)
        yield _read_error(path, source_name(spec), e, n)


def process_file(cfg: PipelineConfig, spec_index: int, path: str) -> Iterator[pa.RecordBatch]:
    """Read one input file and run the stage chain on it; yields STAGE_OUTPUT_SCHEMA batches.

    Only reading is guarded: a stage that raises is a bug in our code and fails the run, instead of
    turning a batch of good documents into one `read_error` row."""
    spec = cfg.input[spec_index]
    run = stage_chain(cfg)
    size = cfg.spark.batch_size
    for batch in _read_guarded(path, spec):
        for sub in pa.Table.from_batches([conform(batch)]).to_batches(max_chunksize=size):
            if sub.num_rows:
                yield _finish(run(sub))


def _use_shipped_conf(archive: str | None) -> None:
    """On an executor that imports the project from a --py-files zip there is no conf/ next to the
    code: use the copy the driver shipped with SparkContext.addArchive (see _ship_conf)."""
    from q3 import paths

    if archive is None or (paths.CONF_DIR / "languages.yaml").is_file():
        return
    from pyspark import SparkFiles

    shipped = Path(SparkFiles.get(archive))
    if shipped.is_dir():
        paths.CONF_DIR = shipped
        os.environ["Q3_CONF"] = str(shipped)


def process_paths(cfg_json: str, batches: Iterable[pa.RecordBatch],
                  conf_archive: str | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: batches of (spec, path) -> stage outputs."""
    _use_shipped_conf(conf_archive)
    cfg = PipelineConfig.model_validate_json(cfg_json)
    for b in batches:
        for row in b.to_pylist():
            yield from process_file(cfg, row["spec"], row["path"])


# ---------------------------------------------------------------- planning

def plan(cfg: PipelineConfig) -> list[tuple[int, str]]:
    """Every (input spec index, file path), in a deterministic order."""
    from dataproc.readers import list_inputs

    if not cfg.input:
        raise ConfigError("pipeline: no `input` configured (a path, or a list of {path, format, ...})")
    items: list[tuple[int, str]] = []
    for i, spec in enumerate(cfg.input):
        found = sorted(str(p) for p in list_inputs(spec))
        if not found:
            raise ConfigError(f"pipeline: input[{i}].path {spec.path!r} matches no files")
        items += [(i, p) for p in found]
    return items


def chunked(items: list[tuple[int, str]], size: int) -> list[list[tuple[int, str]]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def fingerprint(cfg: PipelineConfig, items: list[tuple[int, str]]) -> JobKey:
    """What the output depends on (`q3.commit`): config (not the engine), the input files' content
    fingerprint (their upstream commit, or names + sizes + mtimes) and the code version."""
    semantic = cfg.model_dump(mode="json", exclude={"runner", "spark", "output", "allow_empty"})
    semantic["inputs"] = semantic.pop("input")
    return job_key("pipeline", semantic, inputs=[p for _, p in items])


def resolve_paths(cfg: PipelineConfig) -> PipelineConfig:
    """Expand `~` and environment variables in input/output paths; `${Q3_DATA}` defaults to the
    project's data dir, so configs can say `${Q3_DATA}/sample/raw` wherever the data lives."""
    from q3.paths import data_dir

    os.environ.setdefault("Q3_DATA", str(data_dir()))

    def expand(p: str) -> str:
        return os.path.expanduser(os.path.expandvars(p))

    inputs = [spec.model_copy(update={"path": expand(spec.path)}) for spec in cfg.input]
    return cfg.model_copy(update={"input": inputs, "output": expand(cfg.output)})


def parts_dir(cfg: PipelineConfig) -> Path:
    out = Path(cfg.output)
    return out.parent / f"{out.name}.parts"


# ---------------------------------------------------------------- writing and counting (both engines)

def _write_lang_partitioned(table: pa.Table, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if table.num_rows == 0:
        return
    table = table.sort_by("id")
    ds.write_dataset(table, where, format="parquet", partitioning=["lang"], partitioning_flavor="hive",
                     basename_template="part-{i}.parquet", existing_data_behavior="overwrite_or_ignore")


def write_tables(outputs: Iterable[pa.RecordBatch], where: Path) -> None:
    """Local engine: split stage outputs into kept/ and rejected/, partitioned by lang."""
    batches = list(outputs)
    table = pa.Table.from_batches(batches, schema=STAGE_OUTPUT_SCHEMA)
    kept, rejected = split(table)
    _write_lang_partitioned(kept, where / "kept")
    _maybe_fail_midway()
    _write_lang_partitioned(rejected, where / "rejected")


def read_output(path: str | Path, kind: str = "kept", columns: list[str] | None = None) -> pa.Table:
    """Read kept/ or rejected/ of a run (or a part) back, lang as a plain string, sorted by id."""
    d = Path(path) / kind
    files = sorted(d.rglob("*.parquet"))
    if not files:
        schema = STAGE_OUTPUT_SCHEMA if kind == "rejected" else pa.schema(
            [f for f in STAGE_OUTPUT_SCHEMA if f.name not in REJECT_COLS])
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    read_cols = None if columns is None else [c for c in columns if c != "lang"]
    tables = []
    for f in files:
        t = pq.read_table(f, columns=read_cols)
        lang = f.parent.name.split("=", 1)[1] if f.parent.name.startswith("lang=") else UNKNOWN_LANG
        tables.append(t.append_column("lang", pa.array([lang] * t.num_rows, pa.string())))
    t = pa.concat_tables(tables, promote_options="default")
    if columns is not None:
        t = t.select(columns)
    keys = [(k, "ascending") for k in ("id", "url", "reason") if k in t.schema.names]
    return t.sort_by(keys) if keys else t


def part_counts(part: Path) -> dict[str, Any]:
    """Counters of one committed part, from its files: rows by (stage, reason, lang) and kept chars."""
    kept = read_output(part, "kept", ["lang", "n_chars"])
    rej = read_output(part, "rejected", ["lang", "stage", "reason"])
    by_lang = kept.group_by("lang").aggregate([("lang", "count"), ("n_chars", "sum")]).to_pylist()
    rejected = rej.group_by(["stage", "reason", "lang"]).aggregate([("lang", "count")]).to_pylist()
    return {
        "kept_by_lang": {r["lang"]: {"docs": r["lang_count"], "chars": r["n_chars_sum"] or 0} for r in by_lang},
        "rejected": [[r["stage"], r["reason"], r["lang"], r["lang_count"]] for r in rejected],
    }


def merge_stats(counts: list[dict[str, Any]], stage_names: list[str]) -> dict[str, Any]:
    """Per-stage in/out by reason and by language, from the parts' counters."""
    kept: dict[str, dict[str, int]] = {}
    rej: dict[tuple[str, str, str], int] = {}
    for c in counts:
        for lang, v in c["kept_by_lang"].items():
            k = kept.setdefault(lang, {"docs": 0, "chars": 0})
            k["docs"] += v["docs"]
            k["chars"] += v["chars"]
        for stage, reason, lang, n in c["rejected"]:
            rej[(stage, reason, lang)] = rej.get((stage, reason, lang), 0) + n
    n_kept = sum(v["docs"] for v in kept.values())
    n_rej = sum(rej.values())
    seen = [s for s in dict.fromkeys(s for s, _, _ in sorted(rej)) if s not in stage_names]
    order = seen + stage_names   # reader rejects ("read") come before the first stage
    stages = []
    live = n_kept + n_rej
    for s in order:
        mine = {k: v for k, v in rej.items() if k[0] == s}
        by_reason: dict[str, int] = {}
        by_lang: dict[str, int] = {}
        for (_, reason, lang), n in sorted(mine.items()):
            by_reason[reason] = by_reason.get(reason, 0) + n
            by_lang[lang] = by_lang.get(lang, 0) + n
        out = live - sum(mine.values())
        stages.append({"stage": s, "in": live, "out": out, "rejected": sum(mine.values()),
                       "rejected_by_reason": by_reason, "rejected_by_lang": by_lang})
        live = out
    return {"input_docs": n_kept + n_rej, "kept_docs": n_kept, "rejected_docs": n_rej,
            "kept_chars": sum(v["chars"] for v in kept.values()),
            "stages": stages, "kept_by_lang": dict(sorted(kept.items()))}


# ---------------------------------------------------------------- engines

def _stop_after() -> int | None:
    v = os.environ.get("Q3_RUNNER_DIE_IN_CHUNK")
    return int(v) if v else None


_CURRENT_CHUNK = -1


def _maybe_fail_midway() -> None:
    """Test hook: die hard (like kill -9) halfway through writing chunk N, after N-1 committed."""
    n = _stop_after()
    if n is not None and n == _CURRENT_CHUNK:
        os._exit(137)


def _run_chunk_local(cfg: PipelineConfig, chunk: list[tuple[int, str]], tmp: Path) -> None:
    def outputs() -> Iterator[pa.RecordBatch]:
        for spec_index, path in chunk:
            yield from process_file(cfg, spec_index, path)

    write_tables(outputs(), tmp)


def _ship_conf(spark) -> str | None:
    """Send conf/ (zipped) to every executor once per application: stages read it there (the
    language registry). Returns the archive's name, which executors resolve with SparkFiles."""
    import tempfile
    import zipfile

    from q3 import paths

    sc = spark.sparkContext
    if not paths.CONF_DIR.is_dir():
        return None
    if sc.applicationId not in _SHIPPED:
        name = f"q3conf-{sc.applicationId}.zip"
        dest = Path(tempfile.mkdtemp(prefix="q3conf-")) / name
        with zipfile.ZipFile(dest, "w") as zf:
            for f in sorted(paths.CONF_DIR.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(paths.CONF_DIR).as_posix())
        sc.addArchive(str(dest))
        _SHIPPED[sc.applicationId] = name
    return _SHIPPED[sc.applicationId]


_SHIPPED: dict[str, str] = {}


def _run_chunk_spark(spark, cfg: PipelineConfig, chunk: list[tuple[int, str]], tmp: Path) -> None:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    archive = _ship_conf(spark)
    cfg_json = cfg.model_dump_json()
    n_parts = cfg.spark.partitions or max(1, min(len(chunk), spark.sparkContext.defaultParallelism * 2))
    paths = spark.createDataFrame([(i, p) for i, p in chunk], "spec int, path string").repartition(n_parts)
    out = paths.mapInArrow(lambda it: process_paths(cfg_json, it, archive), from_arrow_schema(STAGE_OUTPUT_SCHEMA))
    out = out.persist(StorageLevel.MEMORY_AND_DISK)   # written twice (kept, rejected): run the stages once
    try:
        (out.filter(F.col("reason").isNull()).drop(*REJECT_COLS)
            .write.mode("overwrite").partitionBy("lang").parquet(str(tmp / "kept")))
        _maybe_fail_midway()
        (out.filter(F.col("reason").isNotNull())
            .write.mode("overwrite").partitionBy("lang").parquet(str(tmp / "rejected")))
    finally:
        out.unpersist()
    for kind in ("kept", "rejected"):   # Spark's own markers are noise next to ours
        for junk in list((tmp / kind).glob("_SUCCESS")) + list((tmp / kind).rglob(".*.crc")):
            junk.unlink()


def spark_conf_for(cfg: PipelineConfig) -> tuple[dict[str, str], str | None]:
    from q3.engine.session import load_cluster_profile

    profile = load_cluster_profile(cfg.spark.cluster)
    conf = dict(profile.conf)
    conf.setdefault("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.spark.batch_size))
    return conf, profile.master


def run(cfg: PipelineConfig, spark=None) -> dict[str, Any]:
    """Run the pipeline of `cfg` with its engine; returns the stats (also in <output>/stats.json)."""
    global _CURRENT_CHUNK
    cfg = resolve_paths(cfg)
    items = plan(cfg)
    key = fingerprint(cfg, items)
    fp = key.id
    out = Path(cfg.output)
    if reuse_if_committed(out, key) is not None:
        return json.loads((out / "stats.json").read_text())
    chunks = chunked(items, cfg.chunk_files)
    pdir = parts_dir(cfg) / fp
    todo = [i for i in range(len(chunks)) if not is_committed(pdir / f"chunk-{i:05d}")]
    log.info("%d input files in %d chunks; %d already committed, %d to run (%s engine)",
             len(items), len(chunks), len(chunks) - len(todo), len(todo), cfg.runner)
    if todo and cfg.runner == "spark" and spark is None:
        from q3.engine.session import get_spark

        conf, master = spark_conf_for(cfg)
        spark = get_spark("q3-pipeline", conf=conf, master=master)
    for i in progress(todo, desc="chunks", unit="chunk"):
        _CURRENT_CHUNK = i
        part = pdir / f"chunk-{i:05d}"
        meta: dict[str, Any] = {"chunk": i, "files": [p for _, p in chunks[i]], "fingerprint": fp}
        with atomic_dir(part, meta) as tmp:
            if cfg.runner == "spark":
                _run_chunk_spark(spark, cfg, chunks[i], tmp)
            else:
                _run_chunk_local(cfg, chunks[i], tmp)
            meta["counts"] = part_counts(tmp)
    _CURRENT_CHUNK = -1
    return _commit(cfg, key, pdir, len(chunks))


def _stage_names(cfg: PipelineConfig) -> list[str]:
    from dataproc.stages import build_stages

    return [getattr(s, "name", type(s).__name__) for s in build_stages(cfg)]


def _commit(cfg: PipelineConfig, key: JobKey, pdir: Path, n_chunks: int) -> dict[str, Any]:
    """Assemble the committed parts into the final output (one atomic rename)."""
    out = Path(cfg.output)
    counts = []
    fp = key.id
    meta: dict[str, Any] = {"fingerprint": fp, "chunks": n_chunks, "config": cfg.model_dump(mode="json")}
    with commit(out, key, meta) as tmp:
        for i in range(n_chunks):
            part = pdir / f"chunk-{i:05d}"
            counts.append(read_marker(part)["counts"])
            for kind in ("kept", "rejected"):
                (tmp / kind).mkdir(exist_ok=True)
                for f in sorted((part / kind).rglob("*.parquet")):
                    dest = tmp / kind / f.parent.name / f"c{i:05d}-{f.name}"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(f, dest)   # same filesystem: no copy
                    except OSError:
                        shutil.copy2(f, dest)
        stats = merge_stats(counts, _stage_names(cfg))
        stats["fingerprint"] = fp
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=False))
        meta.update({k: stats[k] for k in ("input_docs", "kept_docs", "rejected_docs")})
    if not cfg.keep_parts:
        shutil.rmtree(parts_dir(cfg), ignore_errors=True)
    clean_stale(out)
    return stats
