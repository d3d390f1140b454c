"""Benchmark: users/second of the pandas-UDF scoring job against the same model in one process.

    .venv/bin/python bench/score.py --users 100000 --users 1000000

One shop of ``--base-users`` is generated, ingested, featurised and a small model trained (one
epoch: its quality is not what is measured). A size above the base is the base view copied
with renamed users (``<user>~<copy>``), so 1M users cost minutes, not an hour of ingest.
Each size runs in its own SparkSession (cold Python workers) and is timed four ways:

- ``stage``: the whole score stage (Delta read, pandas UDF, category join, Delta write, counts);
- ``udf_job``: the scoring query alone (Delta read -> pandas UDF -> no-op sink), workers warm;
- ``one_process_job``: the same rows read from Delta into this process with Arrow, then scored
  by the same model in batches, as a job without the UDF would;
- ``model_only``: the bare model call: the same scores, drivers included, computed on the rows
  already in memory (``model.scoring.score_arrays``), batch after batch in this process;
- ``serving_only``: the serving signature alone on the same arrays (no drivers, no frame): how
  much of scoring the drivers' one pass per feature group takes.

Ratios compare figures measured in the same run; everything is appended to bench/results/score.jsonl.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from results_file import record

from interest_decay.contract import Table
from interest_decay.jobs import features, generate, ingest, score, train
from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.spark import spark_session
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.udf import score_udf
from interest_decay.jobs.common.views import view_arrays
from interest_decay.model.data import flat_columns
from interest_decay.model.scoring import load_scorer, score_arrays

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


def _settings(lake: str, *overrides: str) -> Settings:
    return load_settings(CONF, [f"lakehouse={lake}", "train.mode=single", "train.epochs=1", *overrides])


def build_base(users: int, scratch: str) -> tuple[Settings, str]:
    """Generate, ingest, featurise and train on ``users`` users; returns the settings and model folder."""
    settings = _settings(f"{scratch}/base", f"generator.output={scratch}/raw", f"generator.users={users}")
    with spark_session(settings.spark) as spark:
        generated = generate.run(spark, settings)
        ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
        features.run(spark, settings)
        return settings, train.run(spark, settings).outputs["model"]


def copy_view(spark: SparkSession, base: Settings, target: Settings, users: int) -> int:
    """The base view's latest as-of date (and its category interest), copied with renamed users
    until it holds about ``users`` users; returns the number of rows written."""
    view = spark.read.format("delta").load(base.table_path(Table.SEQUENCES))
    as_of = view.agg(F.max("as_of_date")).first()[0]
    rows = view.where(F.col("as_of_date") == as_of)
    copies = max(1, round(users / rows.count()))
    for table, source in (
        (Table.SEQUENCES, rows),
        (Table.CATEGORY_INTEREST, spark.read.format("delta").load(base.table_path(Table.CATEGORY_INTEREST))),
    ):
        source = source.where(F.col("as_of_date") == as_of).crossJoin(spark.range(copies).withColumnRenamed("id", "copy"))
        renamed = source.withColumn("user_id", F.concat_ws("~", "user_id", F.col("copy").cast("string"))).drop("copy")
        renamed.write.format("delta").partitionBy("as_of_date").save(target.table_path(table))
    return rows.count() * copies


def bench_size(users: int, base: Settings, model: str, scratch: str) -> dict:
    target = _settings(f"{scratch}/lake-{users}")
    horizons = list(target.horizons_days)
    with spark_session(target.spark) as spark:
        n_rows = copy_view(spark, base, target, users)
        staged = score.run(spark, target, model=model)
        rows = spark.read.format("delta").load(target.table_path(Table.SEQUENCES)).selectExpr(*flat_columns(horizons))
        query = rows.select(score_udf(Storage.for_settings(target), model, horizons)("x_flat", "mask", "static").alias("s"))
        started = time.perf_counter()
        query.write.format("noop").mode("overwrite").save()
        udf_job = time.perf_counter() - started

        scorer = load_scorer(model)
        batch = target.score.arrow_batch_size
        started = time.perf_counter()
        frame = rows.toPandas()
        inputs, _ = view_arrays(frame, target)
        del frame
        loaded = time.perf_counter()
        for start in range(0, n_rows, batch):
            score_arrays(scorer, {k: v[start : start + batch] for k, v in inputs.items()}, horizons)
        finished = time.perf_counter()
        for start in range(0, n_rows, batch):
            scorer({k: v[start : start + batch] for k, v in inputs.items()})
        serving = time.perf_counter() - finished
    rate = {
        "stage": n_rows / staged.seconds,
        "udf_job": n_rows / udf_job,
        "one_process_job": n_rows / (finished - started),
        "model_only": n_rows / (finished - loaded),
        "serving_only": n_rows / serving,
    }
    return {
        "bench": "score",
        "users": n_rows,
        "cores": os.cpu_count(),
        "arrow_batch_size": batch,
        **{f"{k}_users_per_second": round(v, 1) for k, v in rate.items()},
        "stage_seconds": staged.seconds,
        "ratio_udf_job_to_one_process_job": round(rate["udf_job"] / rate["one_process_job"], 3),
        "ratio_stage_to_one_process_job": round(rate["stage"] / rate["one_process_job"], 3),
        "ratio_udf_job_to_model_only": round(rate["udf_job"] / rate["model_only"], 3),
        "ratio_stage_to_model_only": round(rate["stage"] / rate["model_only"], 3),
        "drivers_share_of_model_only": round(1 - rate["model_only"] / rate["serving_only"], 3),
    }


def main(
    users: Annotated[list[int], typer.Option("--users", help="Users to score (repeatable).")] = [100_000],  # noqa: B006
    base_users: Annotated[int, typer.Option(help="Users of the generated shop the views are copied from.")] = 100_000,
) -> None:
    """Run the benchmark for each size and record the figures."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as scratch:
        base, model = build_base(base_users, scratch)
        for n in users:
            record("score", bench_size(n, base, model, scratch))


if __name__ == "__main__":
    typer.run(main)
