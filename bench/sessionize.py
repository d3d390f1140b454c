"""Benchmark: ingest + sessionize + features in Spark local mode, and sessionization against DuckDB.

    .venv/bin/python bench/sessionize.py --events 1000000 --events 10000000

For each size: generate raw Parquet (about 50 events per user), then time
  - the pipeline stages as jobs (ingest -> sessionize -> features), events/second each;
  - the same sessionization (inactivity gap, per-session counts, revenue, top category, id)
    once in Spark (features.sessions.sessionize) and once in DuckDB SQL, both reading the same
    raw Parquet and writing Parquet, on the same cores. The ratio is Spark time / DuckDB time.
Figures are printed and appended as JSON lines to bench/results/sessionize.jsonl.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from results_file import record

from interest_decay.features.sessions import sessionize
from interest_decay.jobs import features as features_job
from interest_decay.jobs import generate, ingest
from interest_decay.jobs import sessionize as sessionize_job
from interest_decay.jobs.common.config import load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"
EVENTS_PER_USER = 50  # what the default generator gives, measured: 50.2 at 1M users

DUCKDB_SESSIONS = """
COPY (
  WITH flagged AS (
    SELECT *, coalesce(event_time - lag(event_time) OVER by_user > INTERVAL {gap} MINUTE, true) AS starts_session
    FROM read_parquet('{raw}/*.parquet')
    WINDOW by_user AS (PARTITION BY user_id ORDER BY event_time, event_id)
  ), numbered AS (
    SELECT *, sum(starts_session::INT) OVER (PARTITION BY user_id ORDER BY event_time, event_id
                                             ROWS UNBOUNDED PRECEDING) AS session_no
    FROM flagged
  ), per_category AS (
    SELECT user_id, session_no, category, min(event_time) AS first_time, max(event_time) AS last_time,
           count(*) AS n_events,
           count(*) FILTER (event_type = 'view') AS n_views,
           count(*) FILTER (event_type = 'cart') AS n_carts,
           count(*) FILTER (event_type = 'remove_from_cart') AS n_removals,
           count(*) FILTER (event_type = 'purchase') AS n_purchases,
           sum(price) FILTER (event_type = 'purchase') AS revenue
    FROM numbered GROUP BY user_id, session_no, category
  )
  SELECT user_id,
         left(sha256(user_id || chr(31) || strftime(min(first_time), '%Y-%m-%dT%H:%M:%S.%f')), 32) AS session_id,
         min(first_time) AS session_start, max(last_time) AS session_end,
         epoch(max(last_time) - min(first_time)) AS duration_seconds,
         sum(n_events)::INT AS n_events, sum(n_views)::INT AS n_views, sum(n_carts)::INT AS n_carts,
         sum(n_removals)::INT AS n_removals, sum(n_purchases)::INT AS n_purchases,
         round(coalesce(sum(revenue), 0), 2) AS revenue, count(category)::INT AS n_categories,
         arg_min(category, (-n_events, category)) FILTER (category IS NOT NULL) AS top_category,
         min(first_time)::DATE AS session_date
  FROM per_category GROUP BY user_id, session_no
) TO '{out}' (FORMAT PARQUET)
"""


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_size(n_events: int, scratch: Path, driver_memory: str) -> dict[str, object]:
    users = max(1, n_events // EVENTS_PER_USER)
    settings = load_settings(
        CONF,
        [
            f"lakehouse={scratch}/lake",
            f"generator.output={scratch}/raw",
            f"generator.users={users}",
            f"spark.conf.spark.driver.memory={driver_memory}",
        ],
    )
    gap = settings.sessions.gap_minutes
    with spark_session(settings.spark) as spark:
        generated = generate.run(spark, settings)
        raw = generated.outputs["events"]
        events = generated.counts["events"]
        stages = {
            "ingest": ingest.run(spark, settings, input_path=raw, preset="generator"),
            "sessionize": sessionize_job.run(spark, settings),
            "features": features_job.run(spark, settings),
        }
        spark_seconds = _timed(
            lambda: sessionize(spark.read.parquet(raw), gap).write.mode("overwrite").parquet(f"{scratch}/spark_sessions")
        )
        spark_sessions = spark.read.parquet(f"{scratch}/spark_sessions").count()

    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    duck_seconds = _timed(lambda: con.execute(DUCKDB_SESSIONS.format(gap=int(gap), raw=raw, out=f"{scratch}/duck_sessions.parquet")))
    duck_sessions = con.execute(f"SELECT count(*) FROM read_parquet('{scratch}/duck_sessions.parquet')").fetchone()[0]
    if duck_sessions != spark_sessions:
        raise RuntimeError(f"Spark found {spark_sessions} sessions, DuckDB {duck_sessions}: the two are not doing the same work")
    return {
        "bench": "sessionize",
        "events": events,
        "users": users,
        "cores": os.cpu_count(),
        **{f"{name}_seconds": summary.seconds for name, summary in stages.items()},
        **{f"{name}_events_per_second": round(events / summary.seconds, 1) for name, summary in stages.items()},
        "pipeline_events_per_second": round(events / sum(s.seconds for s in stages.values()), 1),
        "sessions": spark_sessions,
        "spark_sessionize_seconds": round(spark_seconds, 2),
        "duckdb_sessionize_seconds": round(duck_seconds, 2),
        "spark_over_duckdb": round(spark_seconds / duck_seconds, 2),
    }


def main(
    events: Annotated[list[int], typer.Option("--events", help="Event counts to run (repeatable).")] = [1_000_000],  # noqa: B006
    driver_memory: Annotated[str, typer.Option(help="spark.driver.memory for the local JVM.")] = "10g",
) -> None:
    """Run the benchmark for each size and record the figures."""
    logging.basicConfig(level=logging.WARNING)
    for n_events in events:
        with tempfile.TemporaryDirectory(prefix="bench-sessionize-") as scratch:
            result = bench_size(n_events, Path(scratch), driver_memory)
        record("sessionize", result)


if __name__ == "__main__":
    typer.run(main)
