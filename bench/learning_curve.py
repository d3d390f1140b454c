"""Benchmark: what more training rows buy: validation AUC and loss against the rows trained on.

    .venv/bin/python bench/learning_curve.py --users 1000000 --rows 50000 --rows 100000 --rows 200000 --rows 500000

One shop of ``--users`` is generated, ingested and featurised once; then the model of
``conf/local.yaml`` is trained once per ``--rows`` (one process, the conf's epochs, the same seed),
with ``train.max_rows_per_as_of`` set so that about that many training rows are kept (the rows
per as-of date times the dates; the line gives the rows actually kept). Every figure is the
run's own validation (held-out users and dates before ``train.until``), never the evaluation
date, so the bound may be chosen from it. The validation rows are bounded per date like the
training rows, so a small run validates on fewer of them (its ``val_rows``). One JSON line per
size goes to bench/results/learning_curve.jsonl, with the batch they share.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from results_file import record

from interest_decay.contract import Table
from interest_decay.jobs import features, generate, ingest, train
from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"
METRICS = ("val_auc_7d", "val_auc_14d", "val_auc_30d", "val_decay_nll", "val_survival_nll", "val_count_nll", "samples_per_second")

log = logging.getLogger("bench.learning_curve")


def training_dates(spark: SparkSession, settings: Settings) -> int:
    """The as-of dates of the view up to ``train.until``: how many dates a per-date bound multiplies."""
    view = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES))
    return view.where(F.col("as_of_date") <= F.lit(settings.train.until)).select("as_of_date").distinct().count()


def main(
    users: Annotated[int, typer.Option(help="Generated users.")] = 1_000_000,
    rows: Annotated[list[int], typer.Option("--rows", help="Training rows to aim at (repeatable).")] = [50_000, 100_000, 200_000, 500_000],  # noqa: B006
    epochs: Annotated[int | None, typer.Option(help="Epochs of every run (default: the conf's).")] = None,
) -> None:
    """Generate and featurise once, train once per size, record a line per size."""
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    batch = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory(prefix="bench-curve-") as scratch:
        overrides = [f"lakehouse={scratch}/lake", f"generator.output={scratch}/raw", f"generator.users={users}", "train.mode=single"]
        settings = load_settings(CONF, [*overrides, *([f"train.epochs={epochs}"] if epochs else [])])
        with spark_session(settings.spark) as spark:
            generated = generate.run(spark, settings)
            ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
            features.run(spark, settings)
            dates = training_dates(spark, settings)
            for target in sorted(rows):
                settings.train.max_rows_per_as_of = max(1, math.ceil(target / dates))
                log.info("training on about %d rows (%d per as-of date)", target, settings.train.max_rows_per_as_of)
                run = train.run(spark, settings, fresh=True)
                record(
                    "learning_curve",
                    {
                        "bench": "learning_curve",
                        "batch": batch,
                        "users": users,
                        "rows_aimed": target,
                        "max_rows_per_as_of": settings.train.max_rows_per_as_of,
                        "as_of_dates": dates,
                        "train_rows": run.counts["train_rows"],
                        "available_rows": run.counts["train_rows_available"],
                        "val_rows": run.counts["val_rows"],
                        "epochs_run": run.counts["epochs_run"],
                        "epochs": settings.train.epochs,
                        "seed": settings.train.seed,
                        "stage_seconds": run.seconds,
                        **{name: run.metrics.get(name) for name in METRICS},
                        "cores": os.cpu_count(),
                    },
                )


if __name__ == "__main__":
    typer.run(main)
