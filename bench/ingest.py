"""Benchmark: generate a synthetic shop, ingest it, and report events/second of each stage.

    .venv/bin/python bench/ingest.py --users 22000          # about 1M events
    .venv/bin/python bench/ingest.py --users 22000 --format csv

Figures are printed and appended as one JSON line to bench/results/ingest.jsonl. The second
ingest of the same files (the idempotent re-run) is timed too: it reads and classifies every row
but writes nothing.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from results_file import record

from interest_decay.jobs import generate, ingest
from interest_decay.jobs.common.config import load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


def main(
    users: Annotated[int, typer.Option(help="Generated users (about 45 events each).")] = 22_000,
    file_format: Annotated[str, typer.Option("--format", help="Raw file format: parquet or csv.")] = "parquet",
    driver_memory: Annotated[str, typer.Option(help="spark.driver.memory for the local JVM.")] = "8g",
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
            first = ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
            rerun = ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
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
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
        "started_at": generated.started_at.isoformat(timespec="seconds"),
    }
    record("ingest", result)


if __name__ == "__main__":
    typer.run(main)
