from __future__ import annotations

import datetime as dt
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from interest_decay.contract import Table
from interest_decay.features.sessions import sessionize
from interest_decay.jobs import ingest
from interest_decay.jobs import sessionize as sessionize_job
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.tables import latest_version
from interest_decay.jobs.evaluate import read_session_starts

EVENTS = "event_id STRING, user_id STRING, event_time TIMESTAMP, event_type STRING, category STRING, price DOUBLE"
SESSIONS = (
    "user_id STRING, session_id STRING, session_start TIMESTAMP, session_end TIMESTAMP, duration_seconds DOUBLE, "
    "n_events INT, n_views INT, n_carts INT, n_removals INT, n_purchases INT, revenue DOUBLE, n_categories INT, "
    "top_category STRING, session_date DATE"
)
HEADER = "event_id,user_id,event_time,event_type,product_id,category,price"


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _sid(user: str, start: str) -> str:
    return hashlib.sha256(f"{user}\u001f{_t(start).strftime('%Y-%m-%dT%H:%M:%S.%f')}".encode()).hexdigest()[:32]


def test_hand_made_sessions(spark: SparkSession) -> None:
    rows = [
        # Given out of order on purpose.
        ("a4", "a", _t("2026-05-01 11:10:00.000001"), "view", "toys", 4.0),
        ("a1", "a", _t("2026-05-01 10:00:00"), "view", "books", 10.0),
        ("a3", "a", _t("2026-05-01 10:40:00"), "purchase", "books", 10.0),  # exactly 30 min after a2: same session
        ("a2", "a", _t("2026-05-01 10:10:00"), "cart", "books", 10.0),
        ("a5", "a", _t("2026-05-01 11:12:00"), "remove_from_cart", "garden", 3.0),
        ("b1", "b", _t("2026-05-01 09:00:00"), "view", "garden", 2.5),  # a single-event session
        ("c1", "c", _t("2026-05-01 23:50:00"), "view", "music", 8.0),  # across midnight
        ("c2", "c", _t("2026-05-02 00:10:00"), "purchase", "music", 8.0),
        ("c3", "c", _t("2026-05-02 00:15:00"), "view", None, None),
    ]
    expected = [
        (
            "a",
            _sid("a", "2026-05-01 10:00:00"),
            _t("2026-05-01 10:00:00"),
            _t("2026-05-01 10:40:00"),
            2400.0,
            3,
            1,
            1,
            0,
            1,
            10.0,
            1,
            "books",
            dt.date(2026, 5, 1),
        ),
        (
            "a",
            _sid("a", "2026-05-01 11:10:00.000001"),
            _t("2026-05-01 11:10:00.000001"),
            _t("2026-05-01 11:12:00"),
            119.999999,
            2,
            1,
            0,
            1,
            0,
            0.0,
            2,
            "garden",
            dt.date(2026, 5, 1),
        ),
        (
            "b",
            _sid("b", "2026-05-01 09:00:00"),
            _t("2026-05-01 09:00:00"),
            _t("2026-05-01 09:00:00"),
            0.0,
            1,
            1,
            0,
            0,
            0,
            0.0,
            1,
            "garden",
            dt.date(2026, 5, 1),
        ),
        (
            "c",
            _sid("c", "2026-05-01 23:50:00"),
            _t("2026-05-01 23:50:00"),
            _t("2026-05-02 00:15:00"),
            1500.0,
            3,
            2,
            0,
            0,
            1,
            8.0,
            1,
            "music",
            dt.date(2026, 5, 1),
        ),
    ]
    actual = sessionize(spark.createDataFrame(rows, EVENTS), gap_minutes=30)
    assertDataFrameEqual(actual, spark.createDataFrame(expected, SESSIONS))


def test_gap_must_be_positive(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="gap_minutes must be positive"):
        sessionize(spark.createDataFrame([], EVENTS), gap_minutes=0)


def _ingest(spark: SparkSession, settings: Settings, path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    ingest.run(spark, settings, input_path=str(path), preset="generator")


def _sessions(spark: SparkSession, settings: Settings) -> DataFrame:
    return spark.read.format("delta").load(settings.table_path(Table.SESSIONS))


def _full_recompute(spark: SparkSession, settings: Settings) -> DataFrame:
    return sessionize(spark.read.format("delta").load(settings.table_path(Table.EVENTS)), settings.sessions.gap_minutes)


DAY1 = [
    "a1,a,2026-05-01T10:00:00Z,view,p1,books,10",
    "a2,a,2026-05-01T11:00:00Z,view,p1,books,10",  # a second session of a
    "a3,a,2026-05-01T23:50:00Z,view,p2,toys,5",  # a session that the next day continues
    "b1,b,2026-05-01T12:00:00Z,view,p3,garden,2",
    "d1,d,2026-05-01T08:00:00Z,view,p4,music,9",  # untouched by day 2
]
DAY2 = [
    "a4,a,2026-05-02T00:05:00Z,purchase,p2,toys,5",  # continues a's 23:50 session across the run boundary
    "a5,a,2026-05-01T10:30:00Z,cart,p1,books,10",  # late: bridges a's 10:00 and 11:00 sessions
    "b0,b,2026-04-30T09:00:00Z,view,p3,garden,2",  # late, before everything b had
    "e1,e,2026-05-02T09:00:00Z,view,p5,sport,30",  # a new user
]


def test_incremental_equals_full_recompute(
    spark: SparkSession, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _ingest(spark, settings, tmp_path / "day1.csv", DAY1)
    first = sessionize_job.run(spark, settings)
    assert first.inputs["mode"] == "full"
    assert first.counts["sessions"] == 5
    assertDataFrameEqual(read_session_starts(spark, settings), _sessions(spark, settings).select("user_id", "session_start"))

    _ingest(spark, settings, tmp_path / "day2.csv", DAY2)
    # The sessions table is behind the events now: evaluate's session starts come from the events
    # (compared below with the table once it has caught up).
    with caplog.at_level(logging.INFO, logger="interest_decay.jobs.evaluate"):
        from_events = read_session_starts(spark, settings).toPandas()
    assert "the sessions table is missing or behind the events" in caplog.text
    second = sessionize_job.run(spark, settings)
    assertDataFrameEqual(spark.createDataFrame(from_events), _sessions(spark, settings).select("user_id", "session_start"))
    assert second.inputs["mode"] == "incremental"
    assert second.counts["users_recomputed"] == 3  # a, b and e; d is not touched
    assertDataFrameEqual(_sessions(spark, settings), _full_recompute(spark, settings))
    # a's morning sessions merged into one, the midnight one grew: 2 sessions for a now.
    assert _sessions(spark, settings).where("user_id = 'a'").count() == 2
    assert second.counts["sessions"] == 6  # a: 2, b: 2 (the late one is its own), d: 1, e: 1


def test_rerun_without_new_events_changes_nothing(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    _ingest(spark, settings, tmp_path / "day1.csv", DAY1)
    sessionize_job.run(spark, settings)
    version = latest_version(spark, settings.table_path(Table.SESSIONS))
    # Ingesting the same file again adds no events, so sessionize has nothing to do.
    _ingest(spark, settings, tmp_path / "day1.csv", DAY1)
    again = sessionize_job.run(spark, settings)
    assert again.inputs["mode"] == "unchanged"
    assert latest_version(spark, settings.table_path(Table.SESSIONS)) == version


@pytest.mark.slow
def test_ingest_while_sessionize_runs_loses_and_doubles_nothing(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    """Two jobs on one lakehouse at once (each its own session on the shared context, as two
    notebooks or two scheduled tasks of a cluster are): sessionize works through day 1 while
    day 2 is ingested. Whatever the order of their commits, the next sessionize catches up."""
    _ingest(spark, settings, tmp_path / "day1.csv", DAY1)
    (tmp_path / "day2.csv").write_text("\n".join([HEADER, *DAY2]) + "\n")
    with ThreadPoolExecutor(max_workers=2) as pool:
        sessionizing = pool.submit(sessionize_job.run, spark.newSession(), settings)
        ingesting = pool.submit(ingest.run, spark.newSession(), settings, input_path=str(tmp_path / "day2.csv"), preset="generator")
        first, ingested = sessionizing.result(), ingesting.result()
    assert first.inputs["mode"] == "full" and ingested.counts["written"] == len(DAY2)
    caught_up = sessionize_job.run(spark, settings)

    events = spark.read.format("delta").load(settings.table_path(Table.EVENTS))
    assert events.count() == events.select("event_id").distinct().count() == len(DAY1) + len(DAY2)
    assert caught_up.inputs["events_version"] == latest_version(spark, settings.table_path(Table.EVENTS))
    assertDataFrameEqual(_sessions(spark, settings), _full_recompute(spark, settings))
    runs = spark.read.format("delta").load(settings.table_path(Table.RUNS)).groupBy("stage").count()
    assertDataFrameEqual(runs, spark.createDataFrame([("ingest", 2), ("sessionize", 2)], "stage STRING, count LONG"))


def test_changing_the_gap_recomputes_everything(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    _ingest(spark, settings, tmp_path / "day1.csv", DAY1)
    sessionize_job.run(spark, settings)
    settings.sessions.gap_minutes = 90
    wider = sessionize_job.run(spark, settings)
    assert wider.inputs["mode"] == "full"
    assertDataFrameEqual(_sessions(spark, settings), _full_recompute(spark, settings))
    assert _sessions(spark, settings).where("user_id = 'a'").count() == 2  # 10:00 and 11:00 now one session


def test_no_events_table_is_a_clear_error(spark: SparkSession, settings: Settings) -> None:
    with pytest.raises(ValueError, match="run `interest-decay ingest` first"):
        sessionize_job.run(spark, settings)
