"""Benchmark: what Delta OPTIMIZE (compaction) and OPTIMIZE ZORDER BY (user_id) buy on the events table.

    .venv/bin/python bench/optimize.py --lake /data/bench/users-200000/lake   # a shop bench/pipeline.py --keep left

Works on copies of the shop's ``events`` table (the shop itself is not changed): one compacted,
one Z-ordered by user. On each copy, before and after, it times the two reads the product makes
of events or that a team makes of it:
  - a full sessionization (features.sessions.sessionize, written to Spark's no-op sink), what
    ``sessionize --full`` and every later stage pay;
  - a lookup of a few users' events (``user_id IN (...)``), what an analyst asking "what did
    this user do" pays, where Delta can skip the files whose user_id range misses them.
Figures (files, seconds, and after/before ratios measured in the same run) are printed and
appended to bench/results/optimize.jsonl.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from results_file import record

from interest_decay.features.sessions import sessionize
from interest_decay.jobs.common.config import load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return round(time.perf_counter() - started, 2)


def _reads(spark: SparkSession, path: str, lookup_ids: list[str], gap_minutes: float) -> dict[str, float]:
    """Seconds of a full sessionization and of a lookup of ``lookup_ids``' events, and the files read."""
    events = spark.read.format("delta").load(path)
    return {
        "files": DeltaTable.forPath(spark, path).detail().first()["numFiles"],
        "sessionize_seconds": _timed(lambda: sessionize(events, gap_minutes).write.format("noop").mode("overwrite").save()),
        "lookup_seconds": _timed(lambda: events.where(F.col("user_id").isin(lookup_ids)).count()),
    }


def main(
    lake: Annotated[Path, typer.Option(help="Lakehouse folder of a kept shop (bench/pipeline.py --keep).")],
    lookup_users: Annotated[int, typer.Option(help="Users whose events the lookup reads.")] = 10,
    driver_memory: Annotated[str, typer.Option(help="spark.driver.memory for the local JVM.")] = "12g",
) -> None:
    """Compact and Z-order copies of the shop's events; time the reads before and after."""
    logging.basicConfig(level=logging.WARNING)
    source = lake / "events"
    if not (source / "_delta_log").is_dir():
        raise typer.BadParameter(f"{source} is not a Delta table", param_hint="--lake")
    settings = load_settings(CONF, [f"lakehouse={lake}", f"spark.conf.spark.driver.memory={driver_memory}"])
    gap = settings.sessions.gap_minutes
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as scratch, spark_session(settings.spark) as spark:
        events = spark.read.format("delta").load(str(source))
        lookup_ids = [
            row["user_id"] for row in events.select("user_id").distinct().orderBy(F.xxhash64("user_id")).limit(lookup_users).collect()
        ]
        result: dict[str, object] = {"bench": "optimize", "events": events.count(), "lookup_users": lookup_users}
        _reads(spark, str(source), lookup_ids, gap)  # once untimed, so the first variant's "before" is not the JVM's warm-up
        for variant, rewrite in (
            ("compaction", lambda table: table.optimize().executeCompaction()),
            ("zorder_user", lambda table: table.optimize().executeZOrderBy("user_id")),
        ):
            copy = str(Path(scratch) / variant)
            shutil.copytree(source, copy)
            before = _reads(spark, copy, lookup_ids, gap)
            optimize_seconds = _timed(lambda copy=copy, rewrite=rewrite: rewrite(DeltaTable.forPath(spark, copy)).collect())
            after = _reads(spark, copy, lookup_ids, gap)
            result[variant] = {
                "optimize_seconds": optimize_seconds,
                **{f"{k}_before": v for k, v in before.items()},
                **{f"{k}_after": v for k, v in after.items()},
                "sessionize_after_over_before": round(after["sessionize_seconds"] / before["sessionize_seconds"], 3),
                "lookup_after_over_before": round(after["lookup_seconds"] / before["lookup_seconds"], 3),
            }
            shutil.rmtree(copy)
        record("optimize", result)


if __name__ == "__main__":
    typer.run(main)
