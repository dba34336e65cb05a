"""The corpus pipeline on the corpus engine (q3/engine/): one logic, both runners.

    (spec, path) work items --map_batches(stage chain factory)--> STAGE_OUTPUT rows --write_split--> kept | rejected

`process_file` is the whole per-file logic: read one input file and run the stage chain on it.
`map_batches` runs it over the chunk's work items, by a local loop or by Spark `mapInArrow` over a
DataFrame of paths (`runner: auto` picks by the input's size); `write_split` writes the chunk's
kept/ and rejected/ and checks kept + rejected = rows read (counted by the readers in the same pass,
`q3.engine.shared.Tally`). Everything after that (parts, counters, the final commit) is shared.

Resumability: the input files are split into deterministic chunks (`chunk_files`); each chunk is
committed atomically as its own part under `<output>.parts/<fingerprint>/chunk-NNNNN` (tmp dir +
rename + `_Q3_SUCCESS` with its counters). A rerun skips committed chunks, redoes the rest, and the
final commit (`q3.engine.job.run_committed`) assembles the parts into `<output>/{kept,rejected}/lang=*/`
+ `stats.json`, atomically. The fingerprint is the job key of `q3.commit` (config minus engine
settings, the input files' content fingerprint, the code version), so a changed config or input
never reuses old parts, and an unchanged rerun skips before reading anything.

Layout of the output (both runners):
    <output>/kept/lang=<lang>/*.parquet       DOC_SCHEMA rows (lang in the path, hive style)
    <output>/rejected/lang=<lang>/*.parquet   + reason, stage, detail
    <output>/stats.json                       per-stage in/out by reason and language, per-language kept
    <output>/_Q3_SUCCESS                      marker (fingerprint, counts)
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataproc.config import InputSpec, PipelineConfig
from dataproc.stage import chain, conform
from q3.atomic import atomic_dir, clean_stale, is_committed, read_marker
from q3.commit import JobKey, job_key
from q3.config import ConfigError
from q3.engine.io import read_corpus
from q3.engine.job import run_committed
from q3.engine.map import map_batches
from q3.engine.runner import choose_runner
from q3.engine.schema import conform as conform_to
from q3.engine.schema import spark_schema
from q3.engine.shared import Tally
from q3.engine.write import SplitCounts, write_split
from q3.log import get_logger, progress
from q3.schemas import DOC_SCHEMA, STAGE_OUTPUT_SCHEMA, UNKNOWN_LANG, content_id

log = get_logger("dataproc.runner")
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


def process_file(cfg: PipelineConfig, spec_index: int, path: str,
                 on_read: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
    """Read one input file and run the stage chain on it; yields STAGE_OUTPUT_SCHEMA batches.
    `on_read(n)` is told the rows of each batch the reader yields (a read error is one row).

    Only reading is guarded: a stage that raises is a bug in our code and fails the run, instead of
    turning a batch of good documents into one `read_error` row."""
    spec = cfg.input[spec_index]
    run = stage_chain(cfg)
    size = cfg.spark.batch_size
    for batch in _read_guarded(path, spec):
        if on_read is not None:
            on_read(batch.num_rows)
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


WORK_SCHEMA = pa.schema([("spec", pa.int32()), ("path", pa.string())])


def work_key(spec_index: int, path: str) -> str:
    return f"{spec_index}:{path}"


def files_fn(cfg_json: str, conf_archive: str | None, read: Tally
             ) -> Callable[[pa.RecordBatch], Iterator[pa.RecordBatch]]:
    """The batch-function factory of `map_batches` (both runners): a batch of (spec, path) work
    items -> the stage outputs of their files, streamed; the rows each file's reader yielded go to
    `read` (keyed by work item, so a Spark task that runs again counts its files once)."""
    _use_shipped_conf(conf_archive)
    cfg = PipelineConfig.model_validate_json(cfg_json)
    stage_chain(cfg)    # build (load the models) once per process, before the first file

    def fn(work: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        for row in work.to_pylist():
            rows: list[int] = []
            yield from process_file(cfg, row["spec"], row["path"], on_read=rows.append)
            read.set(work_key(row["spec"], row["path"]), sum(rows))

    return fn


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
    semantic = cfg.model_dump(mode="json", exclude={"runner", "auto", "spark", "output", "allow_empty", "keep_parts"})
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

def read_output(path: str | Path, kind: str = "kept", columns: list[str] | None = None) -> pa.Table:
    """kept/ or rejected/ of a run (or a part) read back by `q3.engine.io.read_corpus`, sorted by
    (id, url, reason): DOC_SCHEMA columns, STAGE_OUTPUT_SCHEMA for rejected (a thin alias that the
    tests, `check_read` and the part counters share)."""
    d = Path(path) / kind
    schema = STAGE_OUTPUT_SCHEMA if kind == "rejected" else DOC_SCHEMA
    t = pa.Table.from_batches([conform_to(read_corpus(d, keep_extra=True), schema)]) if d.exists() \
        else schema.empty_table()
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


# ---------------------------------------------------------------- running

def _die_in_chunk(chunk: int, outputs: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Test hook (Q3_RUNNER_DIE_IN_CHUNK=N): die hard, like kill -9, in the middle of chunk N (local
    runner), after its first batch went to the writer and chunks before it committed."""
    stop = os.environ.get("Q3_RUNNER_DIE_IN_CHUNK")
    if not stop or int(stop) != chunk:
        yield from outputs
        return
    for i, b in enumerate(outputs):
        if i == 1:
            os._exit(137)
        yield b


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


def run_chunk(cfg: PipelineConfig, chunk: list[tuple[int, str]], tmp: Path, runner: str, spark=None,
              index: int = 0) -> SplitCounts:
    """One chunk through the engine: its work items -> map_batches(files_fn) -> write_split(tmp),
    kept + rejected checked against the rows the readers yielded in that same pass."""
    work = pa.table({"spec": pa.array([i for i, _ in chunk], pa.int32()), "path": [p for _, p in chunk]},
                    schema=WORK_SCHEMA)
    size = cfg.spark.batch_size
    if runner == "spark":
        read = Tally(spark)
        factory = functools.partial(files_fn, cfg.model_dump_json(), _ship_conf(spark), read)
        n_parts = cfg.spark.partitions or max(1, min(len(chunk), spark.sparkContext.defaultParallelism * 2))
        source = spark.createDataFrame(work.to_pylist(), spark_schema(WORK_SCHEMA)).repartition(n_parts)
        result = map_batches(factory, source, STAGE_OUTPUT_SCHEMA, runner="spark", batch_size=size)
    else:
        read = Tally()
        factory = functools.partial(files_fn, cfg.model_dump_json(), None, read)
        result = _die_in_chunk(index, map_batches(factory, work, STAGE_OUTPUT_SCHEMA, runner="local",
                                                  batch_size=size))
    counts = write_split(result, tmp, job=f"pipeline chunk {index}")
    missing = {work_key(i, p) for i, p in chunk} - set(read.value)
    if missing:   # a file the batch function never finished: its rows cannot be accounted for
        raise RuntimeError(f"pipeline chunk {index}: no read count for {sorted(missing)[:3]}")
    return counts.check(read.total(), f"pipeline chunk {index}")


def spark_conf_for(cfg: PipelineConfig) -> tuple[dict[str, str], str | None]:
    from q3.engine.session import load_cluster_profile

    profile = load_cluster_profile(cfg.spark.cluster)
    conf = dict(profile.conf)
    conf.setdefault("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.spark.batch_size))
    return conf, profile.master


def run(cfg: PipelineConfig, spark=None) -> dict[str, Any]:
    """Run the pipeline of `cfg`; returns the stats (also in <output>/stats.json). An output
    committed under the same key is reused (`skipped: true`); committed chunks are not redone."""
    cfg = resolve_paths(cfg)
    items = plan(cfg)
    key = fingerprint(cfg, items)
    meta: dict[str, Any] = {"fingerprint": key.id, "config": cfg.model_dump(mode="json")}
    stats = run_committed(cfg.output, key, lambda tmp, m: _run_chunks(cfg, items, key, tmp, m, spark),
                          meta=meta)
    if not stats.get("skipped"):
        if not cfg.keep_parts:
            shutil.rmtree(parts_dir(cfg), ignore_errors=True)
        clean_stale(cfg.output)
    return stats


def _run_chunks(cfg: PipelineConfig, items: list[tuple[int, str]], key: JobKey, tmp: Path,
                meta: dict[str, Any], spark=None) -> dict[str, Any]:
    """The uncommitted chunks, each through the engine and committed as a part; then the parts
    assembled into `tmp` (the final output, committed by run_committed)."""
    chunks = chunked(items, cfg.chunk_files)
    pdir = parts_dir(cfg) / key.id
    todo = [i for i in range(len(chunks)) if not is_committed(pdir / f"chunk-{i:05d}")]
    runner = "local"
    if todo:
        choice = choose_runner(cfg.runner, [p for _, p in items], cfg.auto, cfg.spark.cluster, job="pipeline")
        runner = choice.runner
        if runner == "spark" and spark is None:
            from q3.engine.session import get_spark

            conf, master = spark_conf_for(cfg)
            spark = get_spark("q3-pipeline", conf=conf, master=master)
    log.info("%d input files in %d chunks; %d already committed, %d to run (%s runner)",
             len(items), len(chunks), len(chunks) - len(todo), len(todo), runner)
    for i in progress(todo, desc="chunks", unit="chunk"):
        part = pdir / f"chunk-{i:05d}"
        pmeta: dict[str, Any] = {"chunk": i, "files": [p for _, p in chunks[i]], "fingerprint": key.id}
        with atomic_dir(part, pmeta) as ptmp:
            run_chunk(cfg, chunks[i], ptmp, runner, spark, index=i)
            pmeta["counts"] = part_counts(ptmp)
    stats = _assemble(cfg, pdir, len(chunks), tmp)
    stats["fingerprint"] = key.id
    meta.update({"chunks": len(chunks), "runner": runner})
    return stats


def _stage_names(cfg: PipelineConfig) -> list[str]:
    from dataproc.stages import build_stages

    return [getattr(s, "name", type(s).__name__) for s in build_stages(cfg)]


def _assemble(cfg: PipelineConfig, pdir: Path, n_chunks: int, tmp: Path) -> dict[str, Any]:
    """Link the committed parts' files into the final output's kept/ and rejected/ (no copy, no
    rewrite) and merge their counters into the stats."""
    counts = []
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
    return merge_stats(counts, _stage_names(cfg))
