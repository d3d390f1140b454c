"""Benchmark: the whole pipeline on a generated shop, one JSON line per stage and size.

    .venv/bin/python bench/pipeline.py --users 20000                 # about 1M events
    .venv/bin/python bench/pipeline.py --users 20000 --users 200000  # 1M and 10M events
    .venv/bin/python bench/pipeline.py --users 1000000 --skip evaluate
    .venv/bin/python bench/pipeline.py --users 300 --master spark://127.0.0.1:7077 --root s3a://bucket/bench
    .venv/bin/python bench/pipeline.py --users 200000 --keep /data/bench --skip train --skip score --skip evaluate
    .venv/bin/python bench/pipeline.py --users 200000 --keep /data/bench --from train   # the same shop, later stages

``--master`` runs the stages against a cluster (for example a standalone master and two workers
started with pyspark's own ``bin/spark-class``); ``--root`` puts the lakehouse and the raw files
under a URI (``s3a://``: the endpoint and credentials come from the AWS_* variables).

Each size runs generate -> ingest -> sessionize -> features -> train -> score -> evaluate in one
local SparkSession (conf/local.yaml) in a scratch folder, and appends one line per stage to
bench/results/pipeline.jsonl: seconds, events (or users) per second, and the peak memory seen
while the stage ran, sampled twice a second: the resident set of this process and its children
(the driver's Python, the JVM, Python workers, Horovod ranks) and the JVM's used heap.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import psutil
import typer
from pyspark.sql import SparkSession
from results_file import record

from interest_decay import pipeline
from interest_decay.contract import Table
from interest_decay.jobs.common.config import load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"
STAGES = pipeline.NAMES


class PeakMemory:
    """Samples the process tree's resident memory and the JVM heap in a background thread."""

    def __init__(self, spark: SparkSession, every_seconds: float = 0.5) -> None:
        self.spark, self.every = spark, every_seconds
        self.rss_bytes = self.heap_bytes = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        runtime = self.spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        while not self._stop.wait(self.every):
            processes = [me, *me.children(recursive=True)]
            rss = 0
            for process in processes:
                try:
                    rss += process.memory_info().rss
                except psutil.Error:  # ended between listing and reading
                    pass
            self.rss_bytes = max(self.rss_bytes, rss)
            self.heap_bytes = max(self.heap_bytes, runtime.totalMemory() - runtime.freeMemory())

    @contextmanager
    def watching(self) -> Iterator[PeakMemory]:
        """Sample while the block runs."""
        self.rss_bytes = self.heap_bytes = 0
        self._stop.clear()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


@contextmanager
def _workdir(users: int, keep: Path | None) -> Iterator[str]:
    """A scratch folder removed afterwards, or ``keep/users-<n>`` kept for a later run's stages."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix=f"bench-pipeline-{users}-") as scratch:
            yield scratch
        return
    folder = keep.resolve() / f"users-{users}"
    folder.mkdir(parents=True, exist_ok=True)
    yield str(folder)


def run_size(
    users: int,
    skip: list[str],
    driver_memory: str,
    master: str | None = None,
    root: str | None = None,
    keep: Path | None = None,
    overrides: tuple[str, ...] = (),
) -> list[dict]:
    """The pipeline at ``users`` generated users; one result per stage run."""
    results: list[dict] = []
    with _workdir(users, keep) as scratch:
        where = f"{root.rstrip('/')}/{Path(scratch).name}" if root else scratch
        settings = load_settings(
            CONF,
            [
                f"lakehouse={where}/lake",
                f"generator.output={where}/raw",
                f"generator.users={users}",
                f"storage.cache_dir={scratch}/cache",
                f"spark.conf.spark.driver.memory={driver_memory}",
                # On a cluster the executors' Python workers run this venv's interpreter (the
                # nodes need it at the same path); --set spark.conf.spark.pyspark.python=... to change.
                *([f"spark.master={master}", f"spark.conf.spark.pyspark.python={sys.executable}"] if master else []),
                *overrides,
            ],
        )
        with spark_session(settings.spark) as spark:
            memory = PeakMemory(spark)
            # The events a kept shop already holds, when this run starts after generate.
            events = 0 if "generate" not in skip else spark.read.format("delta").load(settings.table_path(Table.EVENTS)).count()
            for stage in pipeline.STAGES:
                name = stage.name
                if name in skip:
                    continue
                options = {"input_path": settings.generator.events_path, "preset": "generator"} if name == "ingest" else {}
                with memory.watching():
                    summary = stage.run(spark, settings, **options)
                if name == "generate":
                    events = summary.counts["events"]
                users_done = summary.counts.get("scored") or summary.counts.get("users")
                result = {
                    "bench": "pipeline",
                    "stage": name,
                    "users": users,
                    "events": events,
                    "seconds": summary.seconds,
                    "events_per_second": round(events / summary.seconds, 1) if summary.seconds and events else None,
                    "stage_users_per_second": round(users_done / summary.seconds, 1) if users_done and summary.seconds else None,
                    "peak_rss_mb": round(memory.rss_bytes / 2**20),
                    "peak_jvm_heap_mb": round(memory.heap_bytes / 2**20),
                    "counts": summary.counts,
                    "master": settings.spark.master,
                    "lakehouse_scheme": where.split("://")[0] if "://" in where else "file",
                    "cores": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30),
                    "host": platform.node(),
                }
                record("pipeline", result)
                results.append(result)
    return results


def main(
    users: Annotated[list[int], typer.Option(help="Generated users per size (about 50 events each); repeat for several sizes.")] = [  # noqa: B006 - typer reads the default
        20_000
    ],
    skip: Annotated[list[str], typer.Option(help=f"Stages to leave out, of {', '.join(STAGES)}.")] = [],  # noqa: B006
    driver_memory: Annotated[str, typer.Option(help="spark.driver.memory for the local JVM.")] = "12g",
    master: Annotated[str | None, typer.Option(help="Spark master URL (default: conf/local.yaml's local[*]).")] = None,
    root: Annotated[str | None, typer.Option(help="Folder or URI for the lakehouse and raw files (default: a temp folder).")] = None,
    keep: Annotated[
        Path | None, typer.Option(help="Keep each size's shop in KEEP/users-<n> (instead of a temp folder), for a later --from.")
    ] = None,
    start: Annotated[str | None, typer.Option("--from", help="First stage to run, on the shop a previous --keep run left.")] = None,
    overrides: Annotated[
        list[str],
        typer.Option("--set", help="KEY=VALUE over conf/local.yaml, as the CLI's --set (e.g. spark.conf.spark.executor.memory=6g)."),
    ] = [],  # noqa: B006
) -> None:
    """Run the pipeline at each size and record every stage's figures."""
    unknown = sorted(set(skip) - set(STAGES))
    if unknown:
        raise typer.BadParameter(f"unknown stage(s) {unknown}; stages are {list(STAGES)}", param_hint="--skip")
    if start is not None:
        if start not in STAGES:
            raise typer.BadParameter(f"unknown stage {start!r}; stages are {list(STAGES)}", param_hint="--from")
        if keep is None:
            raise typer.BadParameter("--from runs on a kept shop: give --keep too", param_hint="--from")
        skip = [*skip, *STAGES[: STAGES.index(start)]]
    elif any(stage in skip for stage in ("generate", "ingest", "features")):
        raise typer.BadParameter("generate, ingest and features feed every later stage (use --keep and --from)", param_hint="--skip")
    logging.basicConfig(level=logging.WARNING)
    for size in users:
        run_size(size, skip, driver_memory, master, root, keep, tuple(overrides))


if __name__ == "__main__":
    typer.run(main)
