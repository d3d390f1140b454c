"""Schemas of the lakehouse tables and the Delta operations the jobs share."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
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


def ensure_table(spark: SparkSession, path: str, schema: T.StructType, partitioned_by: list[str] | None = None) -> DeltaTable:
    """The Delta table at ``path``, created empty with ``schema`` if it does not exist yet."""
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partitioned_by:
        builder = builder.partitionedBy(*partitioned_by)
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
