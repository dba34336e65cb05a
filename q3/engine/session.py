"""The Spark session factory: local mode by default, the cluster's settings under spark-submit.

Under `spark-submit` the master and resources come from the submit command (spark.master is
already set in the JVM's conf), so we only add what the code needs (Arrow, batch sizes). Run
directly, we start `local[*]` with driver memory sized for the machine. Profiles in conf/cluster/
add settings per cluster kind.

Spark's web UI is off for local runs and tests (no port to bind, no thread pool) and on in the
cluster profiles (`spark.ui.enabled: true` in conf/cluster/standalone|yarn|k8s.yaml); when it is on
its URL is logged. Long jobs log their progress per stage (tasks done/total) every
`Q3_SPARK_PROGRESS_S` seconds (default 10; Spark's own console bar is off: it writes a line per
refresh into log files).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import psutil
from pydantic import Field

from q3.config import Q3Config, load_config
from q3.log import get_logger, progress_enabled

log = get_logger("q3.spark")


class ClusterProfile(Q3Config):
    """conf/cluster/<name>.yaml: how to reach a cluster kind and the spark.* settings it needs."""

    description: str = ""
    master: str | None = None           # used when run directly; under spark-submit --master wins
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)


def load_cluster_profile(name: str = "local", overrides: list[str] | None = None) -> ClusterProfile:
    """Load a profile by name (conf/cluster/<name>.yaml) or path."""
    return load_config(ClusterProfile, "cluster", name, overrides)


def _local_memory() -> str:
    """Give the local driver (which is also the executor) ~40% of RAM, capped at 16 GiB."""
    gib = psutil.virtual_memory().total / 2**30
    return f"{max(1, min(16, int(gib * 0.4)))}g"


def _under_submit() -> bool:
    return "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"


def get_spark(app: str = "q3", conf: dict[str, Any] | None = None, master: str | None = None,
              profile: str | None = None):
    """Return a SparkSession (reusing an active one). `conf` are extra spark.* settings; `profile`
    names a conf/cluster/ profile whose master/conf apply first (explicit arguments win, and under
    spark-submit whatever the submit command set wins over both)."""
    if profile is not None:
        prof = load_cluster_profile(profile)
        conf = {**{k: str(v) for k, v in prof.conf.items()}, **(conf or {})}
        if not _under_submit():
            master = master or prof.master
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    under_submit = _under_submit()
    if master:
        builder = builder.master(master)
    elif not under_submit:
        builder = builder.master(os.environ.get("Q3_SPARK_MASTER", "local[*]"))
    settings: dict[str, Any] = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "2048",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(max(2, (os.cpu_count() or 2) * 2)),
    }
    if not under_submit and not master:
        settings["spark.driver.memory"] = _local_memory()
    settings.update(conf or {})
    submitted: set[str] = set()
    if under_submit:   # the submit command's --conf/--master/--*-memory are the user's explicit choice
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()   # attach to spark-submit's JVM so SparkConf sees its settings
        submitted = {k for k, _ in SparkConf().getAll()}
    for k, v in settings.items():
        if k not in submitted:
            builder = builder.config(k, str(v))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("Q3_SPARK_LOG", "WARN"))
    if spark.sparkContext.uiWebUrl:
        log.info("Spark UI: %s", spark.sparkContext.uiWebUrl)
    if progress_enabled():
        StageProgress(spark.sparkContext, float(os.environ.get("Q3_SPARK_PROGRESS_S", "10"))).start()
    return spark


class StageProgress(threading.Thread):
    """Logs the tasks done/total of each running Spark stage every `interval` s while it advances
    (the jobs are otherwise silent for minutes). A daemon thread; ends when the context stops."""

    def __init__(self, sc, interval: float = 10.0):
        super().__init__(name="q3-spark-progress", daemon=True)
        self.sc, self.interval = sc, interval
        self.seen: dict[int, int] = {}       # stage id -> tasks done at the last line
        self.lines: list[str] = []           # what was logged (tests)
        self.stopped = threading.Event()

    def poll(self) -> list[str]:
        """One look at the active stages: a line for each whose done count changed."""
        tracker, out = self.sc.statusTracker(), []
        for sid in sorted(tracker.getActiveStageIds()):
            info = tracker.getStageInfo(sid)
            if info is None or info.numTasks == 0:
                continue
            done = info.numCompletedTasks
            if self.seen.get(sid) == done:
                continue
            self.seen[sid] = done
            what = info.name.split(" at ")[0]                # "parquet at ...", "$anonfun$... at ..."
            what = "" if what.startswith("$") else f" ({what})"
            out.append(f"spark stage {sid}{what}: {done}/{info.numTasks} tasks "
                       f"({100 * done / info.numTasks:.0f}%), {info.numActiveTasks} running, "
                       f"{info.numFailedTasks} failed")
        return out

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                if self.sc._jsc is None:                  # the context was stopped
                    return
                lines = self.poll()
            except Exception:  # noqa: BLE001 - the JVM went away mid-call: stop quietly
                return
            for line in lines:
                log.info(line)
            self.lines += lines
