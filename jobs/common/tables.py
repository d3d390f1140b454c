"""Schemas of the lakehouse tables and the Delta operations the jobs share."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from delta import exceptions as delta_errors  # also makes PySpark raise Delta's conflicts as these classes
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

log = logging.getLogger(__name__)
Result = TypeVar("Result")


class TableBeingCreated(Exception):
    """Another writer is creating the same table at this moment: its folder is there, its first
    commit not yet, and Delta's "create if not exists" reads it as a table that does not exist."""


# What Delta raises when another writer committed to the same table first (optimistic
# concurrency), and a create that met another writer's create half-way: both are retried.
DELTA_CONFLICTS = (
    delta_errors.DeltaConcurrentModificationException,
    delta_errors.ConcurrentWriteException,
    delta_errors.MetadataChangedException,
    delta_errors.ProtocolChangedException,
    delta_errors.ConcurrentAppendException,
    delta_errors.ConcurrentDeleteReadException,
    delta_errors.ConcurrentDeleteDeleteException,
    delta_errors.ConcurrentTransactionException,
    TableBeingCreated,
)

EVENTS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("event_type", T.StringType(), False),
        T.StructField("product_id", T.StringType(), True),
        T.StructField("category", T.StringType(), True),
        T.StructField("price", T.DoubleType(), True),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("source_file", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("ingested_at", T.TimestampType(), False),
    ]
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("quarantine_id", T.StringType(), False),
        T.StructField("raw", T.StringType(), True),
        T.StructField("reason", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("ingested_at", T.TimestampType(), False),
    ]
)


def ensure_table(
    spark: SparkSession,
    path: str,
    schema: T.StructType,
    partitioned_by: list[str] | None = None,
    change_feed: bool = False,
    properties: dict[str, str] | None = None,
) -> DeltaTable:
    """The Delta table at ``path``, created empty with ``schema`` (and table ``properties``) if
    it does not exist yet.

    ``change_feed`` turns on Delta's change data feed, which incremental readers use to see
    exactly which rows a commit added.
    """
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partitioned_by:
        builder = builder.partitionedBy(*partitioned_by)
    if change_feed:
        builder = builder.property("delta.enableChangeDataFeed", "true")
    for key, value in (properties or {}).items():
        builder = builder.property(key, value)

    def create() -> DeltaTable:
        try:
            return builder.execute()
        except AnalysisException as exc:
            if exc.getErrorClass() == "DELTA_TABLE_NOT_FOUND":
                raise TableBeingCreated(f"{path} is being created by another writer") from exc
            raise

    # Two first runs creating the table at once: the one that loses finds it there on a retry.
    return retry_on_conflict(create, f"creating {path}")


def table_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table."""
    return DeltaTable.isDeltaTable(spark, path)


# The stage that writes each table a stage may need, for the error that says what to run first.
_WRITTEN_BY = {"events": "ingest", "sequences": "features", "sessions": "sessionize"}


def require_table(spark: SparkSession, path: str) -> None:
    """Raise ValueError, naming the stage to run first, when ``path`` holds no Delta table."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not table_exists(spark, path):
        stage = _WRITTEN_BY.get(name)
        hint = f": run `interest-decay {stage}` first" if stage else ""
        raise ValueError(f"no {name} table at {path}{hint}")


def insert_new(target: DeltaTable, rows: DataFrame, keys: list[str], target_filter: str | None = None) -> int:
    """MERGE ``rows`` into ``target``, inserting only those whose ``keys`` are not there yet
    (``target_filter``, SQL on the target's columns as ``t``, limits the rows compared: with a
    partition column, Delta then reads only those partitions).

    Returns the number of rows inserted, as Delta recorded it for this commit: found in the
    history by a tag the commit carries, so other writers committing at the same moment (before
    or after it) cannot be mistaken for it."""
    condition = " AND ".join([*(f"t.{k} = s.{k}" for k in keys), *([f"({target_filter})"] if target_filter else [])])
    tag = uuid.uuid4().hex
    with commit_metadata(rows.sparkSession, {"insert_new": tag}):
        target.alias("t").merge(rows.alias("s"), condition).whenNotMatchedInsertAll().execute()
    commit = target.history(100).where(F.col("userMetadata").contains(tag)).select("operationMetrics").first()
    return 0 if commit is None else int(commit["operationMetrics"].get("numTargetRowsInserted", 0))  # nothing changed: no commit


@contextmanager
def commit_metadata(spark: SparkSession, metadata: dict[str, object]) -> Iterator[None]:
    """Attach ``metadata`` (as JSON) to the Delta commits made inside the block.

    Jobs record what input version they processed this way, in the same atomic commit as the
    data, so a crash can never leave the data and its watermark out of step.
    """
    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, json.dumps(metadata, sort_keys=True, default=str))
    try:
        yield
    finally:
        spark.conf.unset(key)


def last_commit_metadata(spark: SparkSession, path: str) -> dict[str, object] | None:
    """The metadata of the newest commit of ``path`` that has any, or None."""
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    row = (
        DeltaTable.forPath(spark, path)
        .history()
        .where("userMetadata IS NOT NULL")
        .orderBy(F.desc("version"))
        .select("userMetadata")
        .first()
    )
    return json.loads(row["userMetadata"]) if row else None


def latest_version(spark: SparkSession, path: str) -> int:
    """The newest version number of the Delta table at ``path``."""
    return int(DeltaTable.forPath(spark, path).history(1).first()["version"])


def retry_on_conflict(action: Callable[[], Result], what: str, attempts: int = 5, first_wait_seconds: float = 0.5) -> Result:
    """``action()``, run again when a concurrent commit to the same table beat it (at most
    ``attempts`` times, waiting longer each time, with jitter so two writers do not collide
    again). ``action`` must decide everything from a fresh read of the table, since the table
    changed under it. Other errors pass through at once."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except DELTA_CONFLICTS as exc:
            reason = str(exc).splitlines()[0][:300]
            if attempt == attempts:
                raise RuntimeError(f"{what}: still conflicting with concurrent writers after {attempts} attempts ({reason})") from exc
            wait = first_wait_seconds * 2 ** (attempt - 1) * (1 + random.random())
            log.warning(
                "%s: a concurrent commit won (%s: %s); retrying in %.1f s (%d of %d)",
                what,
                type(exc).__name__,
                reason,
                wait,
                attempt,
                attempts,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def write_slice(
    spark: SparkSession, frame: DataFrame, path: str, predicate: str, partition_by: str = "as_of_date", merge_schema: bool = False
) -> None:
    """Replace the rows of the Delta table at ``path`` that match ``predicate`` with ``frame``
    (``replaceWhere``), creating the table, partitioned by ``partition_by``, if it does not
    exist. Re-running for the same slice replaces it rather than adding to it; writers of other
    slices may commit at the same time (a lost race to create the table is retried)."""

    def write() -> None:
        writer = frame.write.format("delta").partitionBy(partition_by).option("mergeSchema", str(merge_schema).lower())
        if table_exists(spark, path):
            writer = writer.mode("overwrite").option("replaceWhere", predicate)
        writer.save(path)

    retry_on_conflict(write, f"writing {predicate} of {path}")


def table_property(spark: SparkSession, path: str, key: str) -> str | None:
    """The table property ``key`` of the Delta table at ``path`` (None: no table, or no such property)."""
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return DeltaTable.forPath(spark, path).detail().select("properties").first()[0].get(key)


def set_table_properties(spark: SparkSession, path: str, properties: dict[str, str]) -> None:
    """Set table properties of the Delta table at ``path`` (one commit)."""
    if not properties:
        return
    if any(not re.fullmatch(r"[\w.]+", key) for key in properties):
        raise ValueError(f"table property names are letters, digits, _ and . only, got {sorted(properties)}")
    quoted_path = path.replace("`", "``")
    pairs = ", ".join(f"'{key}' = '{_sql_string(value)}'" for key, value in properties.items())
    retry_on_conflict(lambda: spark.sql(f"ALTER TABLE delta.`{quoted_path}` SET TBLPROPERTIES ({pairs})"), f"setting properties of {path}")


def _sql_string(value: str) -> str:
    """``value`` inside a single-quoted SQL string literal."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def slice_predicate(as_of: dt.date, model_version: str) -> str:
    """The ``replaceWhere`` predicate of one (as_of_date, model_version) slice. Delta takes it as
    SQL text only, so both parts are checked to be what they claim: a date, and a plain name
    (jobs.common.models.checked_version) that no quote can break out of."""
    if not isinstance(as_of, dt.date):
        raise TypeError(f"as_of must be a date, got {type(as_of).__name__}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", str(model_version)):
        raise ValueError(f"{model_version!r} is not a model version (letters, digits, '.', '-' and '_')")
    return f"as_of_date = DATE'{as_of.isoformat()}' AND model_version = '{model_version}'"
