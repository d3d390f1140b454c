"""Silver sessions from bronze events, incrementally.

The first run (or a run with a different gap) sessionizes every event. Later runs read only the
events added since the last run (Delta change data feed), rebuild the sessions of the users
they touch from the first session those events can reach, and replace exactly those sessions in
one MERGE. The events version processed is stored in that same commit, so the table and its
watermark can never disagree, and a re-run with no new events changes nothing.

    spark-submit jobs/sessionize.py --conf conf/local.yaml
"""

from __future__ import annotations

import logging

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Table
from interest_decay.features.sessions import SESSION_COLUMNS, recompute_from, sessionize
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.runs import RunSummary, stage_run
from interest_decay.jobs.common.tables import commit_metadata, last_commit_metadata, latest_version, require_table

log = logging.getLogger(__name__)


def _changed_events(spark: SparkSession, events_path: str, after: int, until: int) -> DataFrame:
    """Users and times of every event row inserted, updated or deleted in (after, until]."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after + 1)
        .option("endingVersion", until)
        .load(events_path)
        .select("user_id", "event_time")
    )


def _replace_sessions(sessions: DeltaTable, fresh: DataFrame, stale: DataFrame) -> dict[str, int]:
    """One MERGE: upsert ``fresh`` sessions, delete ``stale`` ones that no longer exist."""
    upserts = fresh.withColumn("_delete", F.lit(False))
    deletes = stale.join(fresh.select("session_id"), "session_id", "left_anti").select(*SESSION_COLUMNS, F.lit(True).alias("_delete"))
    values = {c: f"s.{c}" for c in SESSION_COLUMNS}
    (
        sessions.alias("t")
        .merge(upserts.unionByName(deletes).alias("s"), "t.user_id = s.user_id AND t.session_id = s.session_id")
        .whenMatchedDelete(condition="s._delete")
        .whenMatchedUpdate(condition="NOT s._delete", set=values)
        .whenNotMatchedInsert(condition="NOT s._delete", values=values)
        .execute()
    )
    commit = sessions.history(1).select("operation", "operationMetrics").first()
    if commit["operation"] != "MERGE":
        return {"sessions_inserted": 0, "sessions_updated": 0, "sessions_deleted": 0}
    metrics = commit["operationMetrics"]
    return {
        "sessions_inserted": int(metrics.get("numTargetRowsInserted", 0)),
        "sessions_updated": int(metrics.get("numTargetRowsUpdated", 0)),
        "sessions_deleted": int(metrics.get("numTargetRowsDeleted", 0)),
    }


def _update_incrementally(
    spark: SparkSession, sessions_path: str, events: DataFrame, changed: DataFrame, gap: int, watermark: dict
) -> dict[str, int]:
    """Rebuild the sessions the ``changed`` events can reach and replace them in one MERGE that
    also stores ``watermark``; the counts of users, events and sessions touched."""
    sessions = DeltaTable.forPath(spark, sessions_path)
    current = sessions.toDF()
    cuts = recompute_from(changed, current, gap).persist(StorageLevel.MEMORY_AND_DISK)
    redo = events.join(cuts, "user_id").where(F.col("event_time") >= F.col("recompute_from")).drop("recompute_from")
    fresh = sessionize(redo, gap).persist(StorageLevel.MEMORY_AND_DISK)
    stale = current.join(cuts, "user_id").where(F.col("session_start") >= F.col("recompute_from")).select(*SESSION_COLUMNS)
    try:
        counts = {"users_recomputed": cuts.count(), "events": redo.count(), "sessions_rebuilt": fresh.count()}
        with commit_metadata(spark, watermark):
            counts.update(_replace_sessions(sessions, fresh, stale))
    finally:
        fresh.unpersist()
        cuts.unpersist()
    return counts


def run(spark: SparkSession, settings: Settings, full: bool = False) -> RunSummary:
    """Bring ``sessions`` up to date with ``events``; ``full`` forces a complete recompute."""
    events_path = settings.table_path(Table.EVENTS)
    sessions_path = settings.table_path(Table.SESSIONS)
    require_table(spark, events_path)
    gap = settings.sessions.gap_minutes
    version = latest_version(spark, events_path)
    state = last_commit_metadata(spark, sessions_path)
    with stage_run(
        spark, settings, "sessionize", rate=("events", "events"), events=events_path, events_version=version, gap_minutes=gap
    ) as summary:
        events = spark.read.format("delta").option("versionAsOf", version).load(events_path)
        watermark = {"events_version": version, "gap_minutes": gap}
        previous = state.get("events_version") if state else None
        if full or state is None or state.get("gap_minutes") != gap or previous is None or previous > version:
            mode = "full"
            with commit_metadata(spark, watermark):
                sessionize(events, gap).write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(sessions_path)
            summary.counts = {"events": events.count()}
        elif previous == version:
            mode, summary.counts = "unchanged", {"events": 0}
        else:
            mode = "incremental"
            changed = _changed_events(spark, events_path, previous, version)
            summary.counts = _update_incrementally(spark, sessions_path, events, changed, gap, watermark)
        summary.inputs["mode"] = mode
        summary.counts["sessions"] = spark.read.format("delta").load(sessions_path).count()
        summary.outputs = {"sessions": sessions_path}
        log.info("sessionize (%s): %s", mode, summary.counts)
    return summary


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("sessionize")
