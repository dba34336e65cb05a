"""The Spark session factory: local mode by default, the cluster's settings under spark-submit.

Under `spark-submit` the master and resources come from the submit command (spark.master is
already set in the JVM's conf), so we only add what the code needs (Arrow, batch sizes). Run
directly, we start `local[*]` with driver memory sized for the machine. Profiles in conf/cluster/
add settings per cluster kind.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import psutil


def _local_memory() -> str:
    """Give the local driver (which is also the executor) ~40% of RAM, capped at 16 GiB."""
    gib = psutil.virtual_memory().total / 2**30
    return f"{max(1, min(16, int(gib * 0.4)))}g"


def get_spark(app: str = "q3", conf: dict[str, Any] | None = None, master: str | None = None):
    """Return a SparkSession (reusing an active one). `conf` are extra spark.* settings."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    under_submit = "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"
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
    for k, v in settings.items():
        builder = builder.config(k, str(v))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("Q3_SPARK_LOG", "WARN"))
    return spark
