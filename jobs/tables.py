"""Schemas of the lakehouse tables and the Delta operations the jobs share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

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
) -> DeltaTable:
    """The Delta table at ``path``, created empty with ``schema`` if it does not exist yet.

    ``change_feed`` turns on Delta's change data feed, which incremental readers use to see
    exactly which rows a commit added.
    """
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partitioned_by:
        builder = builder.partitionedBy(*partitioned_by)
    if change_feed:
        builder = builder.property("delta.enableChangeDataFeed", "true")
    return builder.execute()


def table_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table."""
    return DeltaTable.isDeltaTable(spark, path)


def insert_new(target: DeltaTable, rows: DataFrame, keys: list[str]) -> int:
    """MERGE ``rows`` into ``target``, inserting only those whose ``keys`` are not there yet.

    Returns the number of rows inserted, as Delta recorded it for this commit.
    """
    condition = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    before = target.history(1).first()["version"]
    target.alias("t").merge(rows.alias("s"), condition).whenNotMatchedInsertAll().execute()
    commit = target.history(1).select("version", "operation", "operationMetrics").first()
    if commit["version"] == before:
        return 0  # Delta commits nothing when a MERGE changes nothing
    if commit["operation"] != "MERGE" or commit["version"] != before + 1:
        raise RuntimeError(f"expected version {before + 1} to be this MERGE, found {commit['version']}: {commit['operation']}")
    return int(commit["operationMetrics"].get("numTargetRowsInserted", 0))


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
    row = DeltaTable.forPath(spark, path).history().where("userMetadata IS NOT NULL").orderBy(F.desc("version")).select("userMetadata").first()
    return json.loads(row["userMetadata"]) if row else None


def latest_version(spark: SparkSession, path: str) -> int:
    """The newest version number of the Delta table at ``path``."""
    return int(DeltaTable.forPath(spark, path).history(1).first()["version"])
