"""Run summaries: every stage ends with one JSON line on stdout and a row in ``<lakehouse>/_runs``.

The ``_runs`` Delta table makes the history queryable, e.g.
``spark.read.format("delta").load("lakehouse/_runs").where("stage = 'ingest'")``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from interest_decay.contract import Artifact, Table
from interest_decay.jobs.common.config import Settings, absolute_path
from interest_decay.jobs.common.storage import Storage, python_uri
from interest_decay.jobs.common.tables import retry_on_conflict

log = logging.getLogger(__name__)


def tracking_uri(settings: Settings) -> str:
    """MLflow tracking URI: $MLFLOW_TRACKING_URI, else a file store inside a local lakehouse.

    MLflow's file store needs a local folder, so with the lakehouse on an object store (and no
    tracking server named) the runs are tracked under the local artifact cache instead; the
    models, reports and ``_runs`` records stay in the lakehouse either way.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    storage = Storage.for_settings(settings)
    if storage.is_local:
        return f"file://{python_uri(storage.uri(Artifact.MLFLOW))}"
    return f"file://{storage.cache_dir}/mlflow"


RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("stage", T.StringType(), False),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("seconds", T.DoubleType(), False),
        T.StructField("counts", T.MapType(T.StringType(), T.LongType()), False),
        T.StructField("summary", T.StringType(), False),
    ]
)


@dataclass
class RunSummary:
    """What one stage did: inputs, row counts in and out, and how long it took."""

    stage: str
    inputs: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:8])
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    _t0: float = field(default_factory=time.perf_counter, repr=False)
    seconds: float | None = None

    def finish(self) -> RunSummary:
        """Stop the clock."""
        self.seconds = round(time.perf_counter() - self._t0, 3)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "seconds": self.seconds,
            "inputs": self.inputs,
            "counts": self.counts,
            "metrics": self.metrics,
            "outputs": self.outputs,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), default=str, sort_keys=False)


def record_run(spark: SparkSession, lakehouse: str, summary: RunSummary) -> None:
    """Append ``summary`` to the ``_runs`` table and print it as one JSON line."""
    if summary.seconds is None:
        summary.finish()
    row = (
        summary.run_id,
        summary.stage,
        summary.started_at,
        float(summary.seconds),
        {k: int(v) for k, v in summary.counts.items()},
        summary.to_json(),
    )
    path = f"{absolute_path(lakehouse).rstrip('/')}/{Table.RUNS.value}"
    record = spark.createDataFrame([row], RUNS_SCHEMA)
    # Appends never conflict with each other; two first runs creating the table at once can.
    retry_on_conflict(lambda: record.write.format("delta").mode("append").save(path), f"recording the run in {path}")
    print(summary.to_json(), flush=True)


MULTI_CLUSTER_LOG_STORE = "io.delta.storage.S3DynamoDBLogStore"


def check_log_store(spark: SparkSession, settings: Settings) -> None:
    """ValueError before anything is written when the lakehouse is on S3 and Delta would commit
    through its default S3 log store (safe for one writer at a time only), unless the conf says
    the lakehouse has one writer (``storage.single_writer``)."""
    if not settings.lakehouse.startswith(("s3a://", "s3://", "s3n://")) or settings.storage.single_writer:
        return
    scheme = settings.lakehouse.split("://")[0]
    configured = spark.conf.get(f"spark.delta.logStore.{scheme}.impl", None) or spark.conf.get("spark.delta.logStore.class", None)
    if configured != MULTI_CLUSTER_LOG_STORE:
        raise ValueError(
            f"the lakehouse {settings.lakehouse} is on S3, where Delta's default log store can lose a commit when two drivers write "
            f"at once: set spark.delta.logStore.{scheme}.impl={MULTI_CLUSTER_LOG_STORE} (with the delta-storage-s3-dynamodb jar and "
            "spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName), or storage.single_writer: true when one writer at a time is guaranteed"
        )


@contextlib.contextmanager
def stage_run(
    spark: SparkSession, settings: Settings, stage: str, *, rate: tuple[str, str] | None = None, **inputs: Any
) -> Iterator[RunSummary]:
    """One run of ``stage``, the frame every stage's ``run`` lives in.

    Yields the run's summary (its clock started, ``inputs`` filled in) for the body to add
    inputs, counts, metrics and outputs to. When the body ends without an error the clock stops,
    ``rate = (unit, count)`` adds the metric ``<unit>_per_second`` (that count over the seconds),
    and the run is appended to ``_runs`` and printed as one JSON line. A run that fails records
    nothing: its error goes up to the CLI, which names the stage.
    """
    check_log_store(spark, settings)
    summary = RunSummary(stage, inputs=dict(inputs))
    log.info("%s: run %s started", stage, summary.run_id)
    yield summary
    summary.finish()
    if rate is not None:
        unit, count = rate
        summary.metrics[f"{unit}_per_second"] = round(summary.counts.get(count, 0) / summary.seconds, 1) if summary.seconds else 0.0
    record_run(spark, settings.lakehouse, summary)
    log.info("%s: done in %.1f s", stage, summary.seconds)
