"""Benchmark: users/second of the pandas-UDF scoring job against model.predict in one process.

    .venv/bin/python bench/score.py --users 100000 --users 1000000

For each size: generate a shop, build the view at its latest as-of date, train a small model
(one epoch, single process: the model's quality is not what is measured), then time
  - the score stage (pandas UDF over Arrow batches, written to Delta), and
  - the saved model called in this one process on the same rows, already in memory as arrays.
The ratio is UDF users/second over one-process users/second. Figures are printed and appended
to bench/results/score.jsonl.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from results_file import record
from pyspark.sql import functions as F

from jobs import features, generate, ingest, score, train
from jobs.config import load_settings
from jobs.spark import spark_session
from model.data import arrays, flat_columns
from model.scoring import load_scorer

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


def bench_size(users: int, scratch: str) -> dict:
    settings = load_settings(
        CONF,
        [f"lakehouse={scratch}/lake", f"generator.output={scratch}/raw", f"generator.users={users}",
         "train.mode=single", "train.epochs=1"],
    )  # fmt: skip
    with spark_session(settings.spark) as spark:
        generated = generate.run(spark, settings)
        ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
        built = features.run(spark, settings)
        trained = train.run(spark, settings)
        scored = score.run(spark, settings)
        view = spark.read.format("delta").load(settings.table_path("sequences"))
        rows = view.where(F.col("as_of_date") == scored.inputs["as_of_date"]).selectExpr(*flat_columns(settings.horizons_days)).toPandas()
    inputs, _ = arrays(rows, n_windows=12, n_window_features=12, n_static=5, horizons_days=settings.horizons_days)
    scorer = load_scorer(trained.outputs["model"])
    started = time.perf_counter()
    batch = settings.score.arrow_batch_size
    for start in range(0, len(rows), batch):
        scorer({k: v[start : start + batch] for k, v in inputs.items()})
    one_process = time.perf_counter() - started
    udf_rate = scored.metrics["users_per_second"]
    single_rate = round(len(rows) / one_process, 1)
    return {
        "bench": "score",
        "users_generated": users,
        "users_scored": scored.counts["scored"],
        "cores": os.cpu_count(),
        "udf_stage_seconds": scored.seconds,
        "udf_users_per_second": udf_rate,
        "one_process_seconds": round(one_process, 2),
        "one_process_users_per_second": single_rate,
        "ratio": round(udf_rate / single_rate, 3),
        "features_seconds": built.seconds,
    }


def main(users: Annotated[list[int], typer.Option("--users", help="Generated users (repeatable).")] = [100_000]) -> None:  # noqa: B006
    """Run the benchmark for each size and record the figures."""
    logging.basicConfig(level=logging.WARNING)
    for n in users:
        with tempfile.TemporaryDirectory(prefix="bench-score-") as scratch:
            result = bench_size(n, scratch)
        record("score", result)


if __name__ == "__main__":
    typer.run(main)
