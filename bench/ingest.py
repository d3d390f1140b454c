"""Benchmark: generate a synthetic shop, ingest it, and report events/second of each stage.

    .venv/bin/python bench/ingest.py --users 22000          # about 1M events
    .venv/bin/python bench/ingest.py --users 22000 --format csv

Figures are printed and appended as one JSON line to bench/results/ingest.jsonl. The second
ingest of the same files (the idempotent re-run) is timed too: it reads and classifies every row
but writes nothing. Beside them, on the same files in the same run (Parquet only), the two
references ingest is judged against:

- ``plain_pyspark``: what a user would write by hand in the same SparkSession: read, keep the rows
  that pass the same rules, hash the same event id, drop duplicates, write a Delta table
  partitioned by date (no quarantine, no run stamps, no idempotent re-run);
- ``duckdb``: the same in DuckDB on as many threads as this machine has cores, written as Parquet
  partitioned by date.

The three keep counts are recorded: the references keep the same rows as each other, and ingest
keeps those minus what it quarantines for reasons the references do not check.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from results_file import record

from interest_decay.contract import EVENT_TYPES
from interest_decay.jobs import generate, ingest
from interest_decay.jobs.common.config import IngestSettings, load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"

DUCKDB_INGEST = """
COPY (
  SELECT * FROM (
    SELECT user_id, event_time, event_type, product_id, category, price,
           left(sha256(concat_ws(chr(31), user_id, epoch_us(event_time)::VARCHAR, event_type, coalesce(product_id, ''),
                                 coalesce(price::VARCHAR, ''), coalesce(event_id, ''))), 32) AS event_id,
           CAST(event_time AS DATE) AS event_date
    FROM read_parquet('{raw}/*.parquet')
    WHERE user_id IS NOT NULL AND event_time IS NOT NULL AND event_time <= TIMESTAMP '{latest}' AND event_time >= TIMESTAMP '{floor}'
      AND event_type IN ({types}) AND (price IS NULL OR (isfinite(price) AND price >= 0))
  ) QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY event_time) = 1
) TO '{out}' (FORMAT PARQUET, PARTITION_BY (event_date))
"""


def _latest(conf: IngestSettings, now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(hours=conf.future_tolerance_hours)


def plain_pyspark(spark: SparkSession, raw: str, out: str, conf: IngestSettings, now: dt.datetime) -> tuple[float, int]:
    """(seconds, rows kept) of a hand-written read-validate-hash-dedupe-write to Delta."""
    started = time.perf_counter()
    events = spark.read.parquet(raw)
    price = F.col("price")
    valid = (
        F.col("user_id").isNotNull()
        & F.col("event_time").isNotNull()
        & (F.col("event_time") <= F.lit(_latest(conf, now)))
        & (F.col("event_time") >= F.lit(conf.min_event_time))
        & F.col("event_type").isin(*EVENT_TYPES)
        & (price.isNull() | (~F.isnan(price) & (F.abs(price) != float("inf")) & (price >= 0)))
    )
    identity = F.concat_ws(
        "\u001f",
        "user_id",
        F.unix_micros("event_time").cast("string"),
        "event_type",
        F.coalesce("product_id", F.lit("")),
        F.coalesce(price.cast("string"), F.lit("")),
        F.coalesce("event_id", F.lit("")),
    )
    kept = (
        events.where(valid)
        .withColumn("event_id", F.substring(F.sha2(identity, 256), 1, 32))
        .withColumn("event_date", F.to_date("event_time"))
    )
    kept.dropDuplicates(["event_id"]).write.format("delta").partitionBy("event_date").save(out)
    seconds = time.perf_counter() - started
    return seconds, spark.read.format("delta").load(out).count()


def plain_duckdb(raw: str, out: str, conf: IngestSettings, now: dt.datetime, memory_limit: str) -> tuple[float, int]:
    """(seconds, rows kept) of the same in DuckDB on every core, into date-partitioned Parquet.

    ``memory_limit`` caps DuckDB (it spills past it): it runs beside the Spark JVM, and at 1M
    users its default (80% of the machine) and a 12g JVM were more than 24 GiB, so the kernel
    killed the JVM."""
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET TimeZone = 'UTC'")
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    started = time.perf_counter()
    con.execute(
        DUCKDB_INGEST.format(
            raw=raw, out=out, latest=_latest(conf, now).isoformat(sep=" "), floor=conf.min_event_time.isoformat(sep=" "), types=types
        )
    )
    seconds = time.perf_counter() - started
    return seconds, con.execute(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchone()[0]


def main(
    users: Annotated[int, typer.Option(help="Generated users (about 45 events each).")] = 22_000,
    file_format: Annotated[str, typer.Option("--format", help="Raw file format: parquet or csv.")] = "parquet",
    driver_memory: Annotated[str, typer.Option(help="spark.driver.memory for the local JVM.")] = "8g",
    duckdb_memory: Annotated[str, typer.Option(help="DuckDB's memory_limit for its reference run (it spills past it).")] = "4GB",
) -> None:
    """Time generate and ingest (twice) in local mode and record the figures."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        settings = load_settings(
            CONF,
            [
                f"lakehouse={scratch}/lake",
                f"generator.output={scratch}/raw",
                f"generator.users={users}",
                f"generator.format={file_format}",
                f"spark.conf.spark.driver.memory={driver_memory}",
            ],
        )
        with spark_session(settings.spark) as spark:
            generated = generate.run(spark, settings)
            raw = generated.outputs["events"]
            first = ingest.run(spark, settings, input_path=raw, preset="generator")
            rerun = ingest.run(spark, settings, input_path=raw, preset="generator")
            references = {}
            if file_format == "parquet":
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                references["plain_pyspark"] = plain_pyspark(spark, raw, f"{scratch}/plain", settings.ingest, now)
                references["duckdb"] = plain_duckdb(raw, f"{scratch}/duck", settings.ingest, now, duckdb_memory)
    result = {
        "bench": "ingest",
        "users": users,
        "format": file_format,
        "events": generated.counts["events"],
        "generate_seconds": generated.seconds,
        "generate_events_per_second": generated.metrics["events_per_second"],
        "ingest_seconds": first.seconds,
        "ingest_events_per_second": first.metrics["events_per_second"],
        "rerun_seconds": rerun.seconds,
        "rerun_written": rerun.counts["written"],
        "ingest_written": first.counts["written"],
        **{f"{name}_seconds": round(seconds, 2) for name, (seconds, _) in references.items()},
        **{f"{name}_kept": kept for name, (_, kept) in references.items()},
        **{f"ingest_over_{name}": round(first.seconds / seconds, 2) for name, (seconds, _) in references.items()},
        **({"duckdb_memory_limit": duckdb_memory} if "duckdb" in references else {}),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
        "started_at": generated.started_at.isoformat(timespec="seconds"),
    }
    record("ingest", result)


if __name__ == "__main__":
    typer.run(main)
