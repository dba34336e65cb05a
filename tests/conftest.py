"""Shared fixtures. Tests use real components: Spark local mode, megatron-core on CPU, real data."""

import os

os.environ.setdefault("Q3_PROGRESS", "0")

import pytest


@pytest.fixture(scope="session")
def spark():
    """One real Spark local-mode session for the whole test run (JVM start-up is seconds)."""
    from q3.engine.session import get_spark

    session = get_spark("q3-tests", conf={"spark.sql.shuffle.partitions": "4"}, master="local[2]")
    yield session
    session.stop()
