"""A throwaway Spark standalone cluster on 127.0.0.1 from the pyspark installation, and the project
zip that `spark-submit --py-files` ships. Used by the spark-submit test and handy for trying a
cluster-mode run on one machine:

    with StandaloneCluster(worker_memory="1g", worker_cores=1) as cluster:
        subprocess.run(submit_command(cluster.master_url, zip_path, "dataproc/jobs/pipeline.py", [...]))

Build the zip for `spark-submit --py-files q3.zip` (docs/cli.md, docs/dataproc.md):

    make q3.zip                                   # = python -m dataproc.standalone q3.zip
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from q3.paths import ROOT


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# what Spark executors import: the shared core, the corpus jobs, and the labeling / synth code that
# runs inside mapInArrow (`q3 label run runner=spark`, `q3 synth run runner=spark`)
ZIP_PACKAGES = ("q3", "dataproc", "labeling", "synth")


def make_project_zip(dest: Path, packages: tuple[str, ...] = ZIP_PACKAGES) -> Path:
    """Zip the project's packages (sources only) for --py-files."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for pkg in packages:
            for f in sorted((ROOT / pkg).rglob("*.py")):
                zf.write(f, f.relative_to(ROOT).as_posix())
    return dest


def submit_command(master: str, py_files: Path, app: str | Path, args: list[str],
                   driver_memory: str = "1g", executor_memory: str = "1g", cores: int = 1) -> list[str]:
    return [str(spark_home() / "bin" / "spark-submit"), "--master", master,
            "--driver-memory", driver_memory, "--executor-memory", executor_memory,
            "--total-executor-cores", str(cores), "--executor-cores", str(cores), "--py-files", str(py_files),
            "--conf", f"spark.pyspark.python={sys.executable}",
            "--conf", f"spark.pyspark.driver.python={sys.executable}",
            str(app), *args]


class StandaloneCluster:
    """Start a master and one worker (by pid), wait until the worker registered, stop both on exit."""

    def __init__(self, worker_memory: str = "1g", worker_cores: int = 1, timeout: float = 120):
        self.worker_memory, self.worker_cores, self.timeout = worker_memory, worker_cores, timeout
        self.port = free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="q3-standalone-"))
        self.procs: list[subprocess.Popen] = []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_ENV_LOADED")}
        env.update({"SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
                    "SPARK_WORKER_DIR": str(self.workdir / "work"), "SPARK_DAEMON_MEMORY": "512m",
                    "PYSPARK_PYTHON": sys.executable})
        return env

    def _start(self, name: str, args: list[str]) -> Path:
        log = self.workdir / f"{name}.log"
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        with open(log, "wb") as fh:
            self.procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self._env(),
                                               start_new_session=True))
        return log

    def _wait_for(self, log: Path, pattern: str) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            if re.search(pattern, text):
                return
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"Spark daemon exited early; log {log}:\n{text[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"no {pattern!r} in {log} after {self.timeout}s")

    def __enter__(self) -> StandaloneCluster:
        try:
            mlog = self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                          "--port", str(self.port), "--webui-port", str(free_port())])
            self._wait_for(mlog, r"I have been elected leader|Starting Spark master")
            wlog = self._start("worker", ["org.apache.spark.deploy.worker.Worker", self.master_url,
                                          "--host", "127.0.0.1", "--cores", str(self.worker_cores),
                                          "--memory", self.worker_memory, "--webui-port", str(free_port())])
            self._wait_for(wlog, r"Successfully registered with master")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):   # worker first, then master; only the pids we started
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m dataproc.standalone [DEST]`: write the --py-files zip (default q3.zip)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or args[:1] in (["-h"], ["--help"]):
        print("usage: python -m dataproc.standalone [DEST.zip]   (the project zip for spark-submit --py-files)")
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    dest = make_project_zip(Path(args[0] if args else "q3.zip").resolve())
    with zipfile.ZipFile(dest) as zf:
        n = len(zf.namelist())
    print(f"{dest}: {n} files from {', '.join(ZIP_PACKAGES)} (spark-submit --py-files {dest.name} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
