"""Spark jobs show progress per stage; the web UI is off locally and on in the cluster profiles."""

from __future__ import annotations

from q3.engine.session import StageProgress, load_cluster_profile


def test_stage_progress_lines_and_ui_off_locally(spark):
    assert spark.sparkContext.uiWebUrl is None              # local / tests: no UI, no port bound
    # (a lambda: pickled by value, the workers cannot import this test module)
    mon = StageProgress(spark.sparkContext, interval=0.2)
    mon.start()
    try:
        assert spark.sparkContext.parallelize(range(8), 8).map(lambda x: __import__("time").sleep(0.4) or x).sum() == 28
    finally:
        mon.stopped.set()
        mon.join(5)
    assert mon.lines, "no progress line while an 8-task stage ran for seconds"
    assert all(" tasks (" in x and "/8 tasks" in x for x in mon.lines), mon.lines
    done = [int(x.split(": ")[1].split("/")[0]) for x in mon.lines]
    assert done == sorted(done) and done[0] < 8


def test_ui_on_in_cluster_profiles():
    assert load_cluster_profile("local").conf["spark.ui.enabled"] is False
    for name in ("standalone", "yarn", "k8s"):
        assert load_cluster_profile(name).conf["spark.ui.enabled"] is True, name
