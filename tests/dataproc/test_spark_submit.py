"""A real spark-submit to a Spark standalone master + worker on 127.0.0.1, project shipped as a zip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile

import pytest
import yaml
from lid_corpus import write_corpus

from dataproc import runner
from dataproc.config import PipelineConfig
from dataproc.standalone import StandaloneCluster, submit_command
from q3.paths import CONF_DIR, ROOT


@pytest.mark.slow
def test_spark_submit_standalone_equals_local(tmp_path):
    inp = write_corpus(tmp_path / "in", n_files=4)
    base = {"input": [{"path": str(inp / "*.jsonl"), "format": "jsonl", "source": "test"}], "chunk_files": 4}
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text(yaml.safe_dump(base))
    local_out = tmp_path / "local"
    runner.run(PipelineConfig.model_validate({**base, "output": str(local_out), "runner": "local"}))

    # the zip as users build it (`make q3.zip` runs this command)
    built = subprocess.run([sys.executable, "-m", "dataproc.standalone", "q3.zip"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    zip_path = tmp_path / "q3.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
    assert {"q3/config.py", "dataproc/jobs/pipeline.py", "labeling/apply.py", "synth/engine.py"} <= names
    assert all(n.endswith(".py") for n in names)
    sub_out = tmp_path / "submitted"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the code comes from the zip
    env.update({"Q3_CONF": str(CONF_DIR), "Q3_PROGRESS": "0"})
    with StandaloneCluster(worker_memory="1g", worker_cores=1) as cluster:
        cmd = submit_command(cluster.master_url, zip_path, ROOT / "dataproc/jobs/pipeline.py",
                             ["--config", str(cfg_file), f"output={sub_out}", "runner=spark",
                              "spark.cluster=standalone"])
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=600)   # 280 s ran out twice at load average ~20
        finally:
            if proc.poll() is None:   # the driver and its Python child, only what we started
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    assert f"output: {sub_out}" in stdout
    assert "Spark UI: http://" in stdout + stderr     # on in the cluster profile, its URL logged
    for kind in ("kept", "rejected"):
        got, want = runner.read_output(sub_out, kind), runner.read_output(local_out, kind)
        assert got.num_rows == want.num_rows, kind
        diff = [c for c in want.column_names if not got.column(c).equals(want.column(c))]
        assert not diff, f"{kind}: columns differ: {diff}: " + "; ".join(
            f"{c}: {got.column(c).to_pylist()[:3]} vs {want.column(c).to_pylist()[:3]}" for c in diff)
