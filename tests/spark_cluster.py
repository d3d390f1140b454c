"""A real Spark standalone cluster on this machine, from the scripts that ship inside pyspark:
one master and N workers as separate JVMs, stopped (and their work folders left in a temp
folder) when the context ends. Tests submit to it with spark-submit, so nothing can lean on
local mode: UDFs are serialised to executor JVMs, Horovod ranks run inside executor tasks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyspark

from interest_decay.jobs.common.spark import local_delta_jars, local_object_store_jars

from object_store import S3Server
from shops import LOCAL, TrainedShop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


@contextlib.contextmanager
def standalone_cluster(work_dir: Path, workers: int = 2, cores: int = 1, memory: str = "2g", timeout_s: float = 90) -> Iterator[str]:
    """Start a master and ``workers`` workers; yields the master URL (spark://127.0.0.1:<port>)."""
    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui_port = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = (logs / f"{name}.log").open("w")
        processes.append(subprocess.Popen([str(spark_class), *args], env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port))
        for i in range(workers):
            start(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(work_dir / f"worker-{i}"),
            )
        deadline = time.monotonic() + timeout_s
        while _alive_workers(ui_port) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                tails = {p.name: p.read_text()[-1500:] for p in logs.glob("*.log")}
                raise RuntimeError(f"the standalone cluster did not come up with {workers} workers: {tails}")
            time.sleep(1)
        yield url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Submission:
    """A spark-submit running in the background against a standalone cluster, its stdout and
    stderr going to files (a pipe nobody reads would fill and stall it)."""

    process: subprocess.Popen
    stdout: Path
    stderr: Path
    _cluster: contextlib.ExitStack

    def result(self, timeout_s: float) -> subprocess.CompletedProcess:
        """Wait for the submission, stop the cluster, and return what it printed."""
        try:
            returncode = self.process.wait(timeout=timeout_s)
        finally:
            self.stop()
        return subprocess.CompletedProcess(self.process.args, returncode, self.stdout.read_text(), self.stderr.read_text())

    def stop(self) -> None:
        """Kill the submission if it still runs, and stop the cluster."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._cluster.close()


@dataclass
class NotStarted:
    """A submission that could not be started (the cluster did not come up, the upload failed):
    ``result()`` raises why, so the failure shows in the test that waits for it."""

    error: Exception

    def result(self, timeout_s: float) -> subprocess.CompletedProcess:
        raise RuntimeError(f"the cluster submission did not start: {self.error}") from self.error


@contextlib.contextmanager
def submit_in_background(
    work_dir: Path, args: list[str], env: dict[str, str], cwd: Path, workers: int = 2, cores: int = 1, memory: str = "2g"
) -> Iterator[Submission]:
    """Start a cluster under ``work_dir`` and ``spark-submit --master <it> *args`` from ``cwd``;
    yields at once. Whatever is still running when the context ends is stopped."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    with contextlib.ExitStack() as cluster:
        master = cluster.enter_context(standalone_cluster(work_dir / "cluster", workers=workers, cores=cores, memory=memory))
        stdout, stderr = work_dir / "submit.out", work_dir / "submit.err"
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen([str(spark_submit), "--master", master, *args], stdout=out, stderr=err, env=env, cwd=cwd)
        submission = Submission(process, stdout, stderr, cluster.pop_all())
    try:
        yield submission
    finally:
        submission.stop()


def _upload(shop: TrainedShop, tables: tuple[str, ...], lake: str) -> None:
    """Copy the shop's Delta ``tables`` (plain files with a relative log) into the bucket."""
    s3 = fsspec.filesystem("s3")
    for table in tables:
        s3.put(str(shop.root / "lakehouse" / table), f"{lake.removeprefix('s3a://')}/{table}", recursive=True)


@contextlib.contextmanager
def train_and_score_on_a_cluster(shop: TrainedShop, s3: S3Server, work_dir: Path) -> Iterator[Submission]:
    """Upload the shop's view to the bucket and start `jobs/run.py --from train --to score` with
    spark-submit against a one-worker standalone cluster of two cores (one executor JVM, two
    Horovod ranks in it: a second worker's JVMs cost the suite about half a minute of CPU and
    test nothing more on one machine); yields while it runs. The suite starts it early
    (conftest.py's ``cluster_run``) and test_cluster.py waits for it and checks it."""
    lake = s3.uri("cluster-lake")
    _upload(shop, ("sequences", "category_interest"), lake)
    (work_dir / "cwd").mkdir()
    cores = 2  # the one worker's, all of them the executor's: one task slot per Horovod rank
    settings = [
        f"lakehouse={lake}",
        "storage.single_writer=true",
        f"storage.cache_dir={work_dir / 'cwd' / 'cache'}",
        "train.mode=horovod",
        f"train.num_proc={cores}",
        "train.epochs=1",
        "train.average_from_epoch=1",
        "train.validation=users",
        "train.until=2026-03-02",  # fewer as-of dates than the shop trained on: a smaller, quicker run
        "train.batch_size=512",
        "train.experiment=cluster",
        "score.arrow_batch_size=200",
    ]
    jars = ",".join(str(j) for j in [*local_delta_jars(), *local_object_store_jars()])
    args = [
        "--jars",
        jars,
        *("--conf", "spark.driver.memory=1g", "--conf", "spark.executor.memory=1g", "--conf", f"spark.executor.cores={cores}"),
        *("--conf", f"spark.sql.shuffle.partitions={cores}", "--conf", f"spark.pyspark.python={sys.executable}"),
        str(Path(LOCAL).parent.parent / "jobs" / "run.py"),
        *("--conf", str(LOCAL)),
        *[arg for setting in settings for arg in ("--set", setting)],
        *("--from", "train", "--to", "score"),
    ]
    env = {**os.environ, **s3.env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    with submit_in_background(work_dir, args, env, cwd=work_dir / "cwd", workers=1, cores=cores, memory="2g") as submission:
        yield submission
