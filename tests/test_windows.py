from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from interest_decay.contract import Table
from interest_decay.features.synthetic import synthetic_events, user_truth
from interest_decay.features.windows import (
    category_interest,
    censor_at,
    complete_labels,
    rows_per_as_of,
    sequences,
    split_by_users,
    user_windows,
)
from interest_decay.jobs import features as features_job
from interest_decay.jobs import generate, ingest
from interest_decay.jobs.common.config import GeneratorSettings, Settings
from interest_decay.jobs.common.views import read_view

EVENTS = "event_id STRING, user_id STRING, event_time TIMESTAMP, event_type STRING, category STRING, price DOUBLE"
ORIGIN = dt.date(2026, 5, 4)  # a Monday
HAND_MADE = [
    ("a1", "a", dt.datetime(2026, 5, 5, 10, 0), "view", "books", 10.0),
    ("a2", "a", dt.datetime(2026, 5, 5, 10, 10), "cart", "books", 10.0),
    ("a3", "a", dt.datetime(2026, 5, 5, 10, 20), "purchase", "books", 10.0),
    ("a4", "a", dt.datetime(2026, 5, 7, 9, 0), "view", "toys", 4.0),
    ("a5", "a", dt.datetime(2026, 5, 19, 12, 0), "view", "books", 10.0),
    ("a6", "a", dt.datetime(2026, 5, 27, 8, 0), "view", "music", 7.0),
    ("b1", "b", dt.datetime(2026, 5, 12, 15, 0), "view", "garden", 2.0),
]
UNTIL = dt.datetime(2026, 5, 27, 8, 0, 0, 1)


def _hand_made_windows(spark: SparkSession) -> DataFrame:
    return user_windows(spark.createDataFrame(HAND_MADE, EVENTS), origin=ORIGIN, window_days=7, until=UNTIL)


def test_window_features_by_hand(spark: SparkSession) -> None:
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    columns = (
        "user_id, window_start, sessions, active_days, views, carts, purchases, revenue, cart_to_purchase_rate, "
        "mean_session_minutes, category_entropy, top_category_share, days_since_last_event, tenure_days"
    )
    d = dt.date
    expected = [
        ("a", d(2026, 5, 4), 2, 2, 2, 1, 1, 10.0, 1.0, 10.0, entropy, 0.75, 3.625, 5 + 14 / 24),
        ("a", d(2026, 5, 11), 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.625, 12 + 14 / 24),
        ("a", d(2026, 5, 18), 1, 1, 1, 0, 0, 0.0, 0.0, 0.0, 0.0, 1.0, 5.5, 19 + 14 / 24),
        ("a", d(2026, 5, 25), 1, 1, 1, 0, 0, 0.0, 0.0, 0.0, 0.0, 1.0, 4 + 16 / 24, 26 + 14 / 24),
        ("b", d(2026, 5, 11), 1, 1, 1, 0, 0, 0.0, 0.0, 0.0, 0.0, 1.0, 5 + 9 / 24, 5 + 9 / 24),
        ("b", d(2026, 5, 18), 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 12 + 9 / 24, 12 + 9 / 24),
        ("b", d(2026, 5, 25), 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 19 + 9 / 24, 19 + 9 / 24),
    ]
    schema = (
        "user_id STRING, window_start DATE, sessions INT, active_days INT, views INT, carts INT, purchases INT, revenue DOUBLE, "
        "cart_to_purchase_rate DOUBLE, mean_session_minutes DOUBLE, category_entropy DOUBLE, top_category_share DOUBLE, "
        "days_since_last_event DOUBLE, tenure_days DOUBLE"
    )
    actual = _hand_made_windows(spark).selectExpr(*[c.strip() for c in columns.split(",")])
    assertDataFrameEqual(actual, spark.createDataFrame(expected, schema), rtol=1e-6)


def test_a_session_across_a_window_boundary_is_timed_in_the_window_it_started(spark: SparkSession) -> None:
    """Window 05-04 holds a session from 23:30 to 23:50 on 05-10 that goes on after midnight:
    it is timed to its last event before the boundary (20 minutes). Window 05-11 times only the
    session that starts in it (10:00 to 10:05 on 05-12), not the end of the one carried over."""
    d, t = dt.date, dt.datetime
    events = [
        ("c1", "c", t(2026, 5, 10, 23, 30), "view", "books", 1.0),
        ("c2", "c", t(2026, 5, 10, 23, 50), "view", "books", 1.0),
        ("c3", "c", t(2026, 5, 11, 0, 10), "view", "books", 1.0),
        ("c4", "c", t(2026, 5, 11, 0, 20), "view", "books", 1.0),
        ("c5", "c", t(2026, 5, 12, 10, 0), "view", "toys", 1.0),
        ("c6", "c", t(2026, 5, 12, 10, 5), "cart", "toys", 1.0),
    ]
    windows = user_windows(spark.createDataFrame(events, EVENTS), origin=ORIGIN, window_days=7, until=t(2026, 5, 13))
    actual = windows.select("window_start", "sessions", "views", "mean_session_minutes")
    expected = spark.createDataFrame(
        [(d(2026, 5, 4), 1, 2, 20.0), (d(2026, 5, 11), 1, 3, 5.0)],
        "window_start DATE, sessions INT, views INT, mean_session_minutes DOUBLE",
    )
    assertDataFrameEqual(actual, expected)


def test_sequences_and_labels_by_hand(spark: SparkSession) -> None:
    view = sequences(_hand_made_windows(spark), n_windows=3, horizons_days=[7, 14, 30], observed_until=UNTIL)
    rows = {(r["user_id"], r["as_of_date"]): r for r in view.collect()}
    # The last window (ending 2026-06-01) is after the last event: no as-of row for it.
    assert sorted(rows) == [
        ("a", dt.date(2026, 5, 11)),
        ("a", dt.date(2026, 5, 18)),
        ("a", dt.date(2026, 5, 25)),
        ("b", dt.date(2026, 5, 18)),
        ("b", dt.date(2026, 5, 25)),
    ]

    a = rows[("a", dt.date(2026, 5, 25))]
    assert a["mask"] == [1, 1, 1]
    assert a["x"][0][:6] == [2.0, 2.0, 2.0, 1.0, 1.0, 10.0]
    assert a["x"][1][:10] == [0.0] * 10
    assert a["static"] == pytest.approx([19 + 14 / 24, 5.5, 3.0, 1.0, 10.0], rel=1e-6)
    assert (a["active_7d"], a["active_14d"], a["active_30d"], a["censored"]) == (1, 1, 1, False)
    assert a["days_to_next"] == pytest.approx(2 + 8 / 24)

    early = rows[("a", dt.date(2026, 5, 11))]
    assert early["mask"] == [0, 0, 1]
    assert early["x"][0] == [0.0] * 12
    # Next session 8.5 days later: not within 7 days (known), within 14 and 30.
    assert (early["active_7d"], early["active_14d"], early["active_30d"]) == (0, 1, 1)

    b = rows[("b", dt.date(2026, 5, 18))]
    # Never seen again; 9.33 days observed: inactive for 7 days is known, 14 and 30 are not.
    assert (b["active_7d"], b["active_14d"], b["active_30d"], b["censored"]) == (0, None, None, True)
    assert b["days_to_next"] == pytest.approx(9 + 8 / 24, rel=1e-6)


def test_future_session_counts_by_hand(spark: SparkSession) -> None:
    view = sequences(_hand_made_windows(spark), n_windows=3, horizons_days=[7], observed_until=UNTIL, future_windows=4)
    counts = {(r["user_id"], str(r["as_of_date"])): r["future_sessions"] for r in view.collect()}
    # Sessions start on 05-05 (2), 05-19 and 05-27 for a, 05-12 for b; the data end on 05-27 08:00,
    # so a window is known only if it ends by then (-1 otherwise).
    assert counts == {
        ("a", "2026-05-11"): [0, 1, -1, -1],  # 05-11..18: none; 05-18..25: one; 05-25..06-01 not over yet
        ("a", "2026-05-18"): [1, -1, -1, -1],
        ("a", "2026-05-25"): [-1, -1, -1, -1],
        ("b", "2026-05-18"): [0, -1, -1, -1],
        ("b", "2026-05-25"): [-1, -1, -1, -1],
    }


def test_no_input_from_after_the_as_of_date(spark: SparkSession) -> None:
    params = GeneratorSettings(users=300, days=70, seed=3, start_date=dt.date(2026, 5, 4))
    events = synthetic_events(user_truth(spark.range(300, numPartitions=2), params), params).persist()
    as_of = dt.date(2026, 6, 8)
    cut = dt.datetime(2026, 6, 8)
    last = events.agg(F.max("event_time")).first()[0] + dt.timedelta(microseconds=1)

    def view(frame: DataFrame, until: dt.datetime) -> DataFrame:
        windows = user_windows(frame, origin=ORIGIN, window_days=7, until=until)
        return sequences(windows, n_windows=4, horizons_days=[7], observed_until=until, as_of_dates=[as_of])

    inputs = ["user_id", "as_of_date", "x", "mask", "static"]
    full = view(events, last)
    assert full.count() > 100
    cut_view = view(events.where(F.col("event_time") < F.lit(cut)), cut)
    assertDataFrameEqual(full.select(inputs), cut_view.select(inputs))
    # The labels are all that the later events change: cut at the as-of date, no future window is known.
    assert cut_view.where(F.exists("future_sessions", lambda n: n >= 0)).count() == 0
    assert full.where(F.exists("future_sessions", lambda n: n > 0)).count() > 50
    events.unpersist()


def test_category_interest_shows_what_is_fading(spark: SparkSession) -> None:
    rows = [
        ("1", "u", dt.datetime(2026, 5, 5), "view", "books", 1.0),
        ("2", "u", dt.datetime(2026, 5, 6), "view", "books", 1.0),
        ("3", "u", dt.datetime(2026, 5, 7), "view", "books", 1.0),
        ("4", "u", dt.datetime(2026, 5, 20), "view", "books", 1.0),
        ("5", "u", dt.datetime(2026, 5, 21), "view", "toys", 1.0),
        ("6", "u", dt.datetime(2026, 5, 22), "view", "toys", 1.0),
        ("7", "u", dt.datetime(2026, 5, 26), "view", "toys", 1.0),  # on the as-of date: not counted
    ]
    interest = category_interest(
        spark.createDataFrame(rows, EVENTS), as_of=dt.date(2026, 5, 25), window_days=7, n_windows=3, recent_windows=1
    )
    (row,) = interest.collect()
    assert row["as_of_date"] == dt.date(2026, 5, 25)
    assert [(c["rank"], c["category"], c["recent_share"], c["earlier_share"]) for c in row["top_categories"]] == [
        (1, "books", round(1 / 3, 4), 1.0),
        (2, "toys", round(2 / 3, 4), 0.0),
    ]


def _dictionary_encoded(table_path: str) -> set[bool]:
    """For every Parquet file of a table: whether any of its column chunks has a dictionary page."""
    import pyarrow.parquet as pq

    found = set()
    for path in Path(table_path).rglob("*.parquet"):
        metadata = pq.ParquetFile(path).metadata
        chunks = [metadata.row_group(g).column(c) for g in range(metadata.num_row_groups) for c in range(metadata.num_columns)]
        found.add(any(chunk.has_dictionary_page for chunk in chunks))
    return found


def test_features_job_on_generated_data(spark: SparkSession, settings: Settings) -> None:
    settings.generator.users = 100
    settings.generator.days = 60
    generated = generate.run(spark, settings)
    ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
    first = features_job.run(spark, settings)
    assert first.counts["as_of_dates"] >= 7
    view = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES))
    assert view.count() == first.counts["sequences"]
    assert view.select(F.size("x").alias("t")).distinct().collect()[0]["t"] == settings.features.n_windows
    assert view.where(F.size(F.col("x")[0]) != 12).count() == 0
    assert first.counts["labelled_7d"] > first.counts["labelled_30d"] > 0
    # The view is written without dictionary pages (jobs.features.VIEW_WRITE_CONF), the other
    # tables as Spark writes them, and the session is left as it was.
    assert _dictionary_encoded(settings.table_path(Table.SEQUENCES)) == {False}
    assert _dictionary_encoded(settings.table_path(Table.USER_WINDOWS)) == {True}
    assert spark.conf.get("parquet.enable.dictionary", None) is None

    again = features_job.run(spark, settings)  # same input: the same rows, none added
    assert again.counts == first.counts
    assert spark.read.format("delta").load(settings.table_path(Table.SEQUENCES)).count() == first.counts["sequences"]

    scoring = features_job.run(spark, settings, as_of=dt.date(2026, 2, 9))
    assert scoring.counts["as_of_dates"] == 1
    assert spark.read.format("delta").load(settings.table_path(Table.SEQUENCES)).count() == first.counts["sequences"]
    with pytest.raises(ValueError, match="not a window boundary.*2026-02-09 or 2026-02-16"):
        features_job.run(spark, settings, as_of=dt.date(2026, 2, 11))

    # Other settings (a horizon more, longer arrays): the view is never mixed. Whoever reads it
    # first is told, and features rebuilds it whole, even when asked for one date.
    changed = settings.model_copy(
        update={"horizons_days": [7, 14, 30, 60], "features": settings.features.model_copy(update={"n_windows": 8})}
    )
    with pytest.raises(
        ValueError,
        match=r"built with other settings \(horizons_days: \[7, 14, 30\] there, \[7, 14, 30, 60\] now, n_windows: 12 there, 8 now\)",
    ):
        read_view(spark, changed)
    rebuilt = features_job.run(spark, changed, as_of=dt.date(2026, 2, 9))
    assert rebuilt.inputs["rebuilt"] is True and rebuilt.counts["as_of_dates"] == first.counts["as_of_dates"]
    view, _ = read_view(spark, changed)
    assert "active_60d" in view.columns and view.count() == first.counts["sequences"]
    assert view.select(F.size("x").alias("t")).distinct().collect()[0]["t"] == 8


def test_censor_at_forgets_what_came_after_the_cutoff(spark: SparkSession) -> None:
    view = sequences(_hand_made_windows(spark), n_windows=3, horizons_days=[7, 14, 30], observed_until=UNTIL)
    cut = censor_at(view, dt.date(2026, 5, 20), [7, 14, 30], window_days=7)
    rows = {(r["user_id"], r["as_of_date"]): r for r in cut.collect()}
    # Only as-of dates before the cutoff remain.
    assert sorted(rows) == [("a", dt.date(2026, 5, 11)), ("a", dt.date(2026, 5, 18)), ("b", dt.date(2026, 5, 18))]
    # a at 05-11 came back after 8.5 days, before the cutoff (9 days on): known as it was.
    early = rows[("a", dt.date(2026, 5, 11))]
    assert (early["active_7d"], early["active_14d"], early["active_30d"], early["censored"]) == (0, 1, 1, False)
    assert early["days_to_next"] == pytest.approx(8.5)
    # a at 05-18 came back on 05-19 (1.5 days): still seen, 7-day label known, 14 and 30 say 1 (already back).
    assert (rows[("a", dt.date(2026, 5, 18))]["active_7d"], rows[("a", dt.date(2026, 5, 18))]["censored"]) == (1, False)
    # b never came back: censored at the cutoff, 2 days observed, nothing known yet.
    b = rows[("b", dt.date(2026, 5, 18))]
    assert (b["active_7d"], b["active_14d"], b["active_30d"], b["censored"], b["days_to_next"]) == (None, None, None, True, 2.0)
    assert [(f.name, f.dataType) for f in cut.schema] == [(f.name, f.dataType) for f in view.schema]
    # Future windows ending after the cutoff are unknown again: a at 05-11 keeps only its first week.
    assert early["future_sessions"] == [0, -1, -1, -1]
    assert b["future_sessions"] == [-1, -1, -1, -1]


def test_censor_at_the_end_of_the_data_changes_nothing(spark: SparkSession) -> None:
    view = sequences(_hand_made_windows(spark), n_windows=3, horizons_days=[7, 14, 30], observed_until=UNTIL)
    assertDataFrameEqual(censor_at(view, dt.date(2026, 6, 30), [7, 14, 30], 7), view.where("as_of_date < '2026-06-30'"))


def test_split_by_users_keeps_each_user_on_one_side(spark: SparkSession) -> None:
    dates = [dt.date(2026, 5, 4), dt.date(2026, 5, 11), dt.date(2026, 5, 18)]
    view = spark.createDataFrame([(f"u{i}", d) for i in range(2000) for d in dates], "user_id string, as_of_date date")
    training, validating = split_by_users(view, 0.1, seed=3)
    train_rows, val_rows = training.collect(), validating.collect()
    assert sorted(train_rows + val_rows) == sorted(view.collect())  # every row, once
    val_users = {r["user_id"] for r in val_rows}
    assert val_users.isdisjoint(r["user_id"] for r in train_rows)
    assert len(val_rows) == 3 * len(val_users)  # a user's every date on the same side
    assert 140 < len(val_users) < 260  # 10% of 2,000 give or take four standard deviations
    # The same users whatever the partitioning; another seed picks others.
    assert {r["user_id"] for r in split_by_users(view.repartition(7), 0.1, seed=3)[1].collect()} == val_users
    assert {r["user_id"] for r in split_by_users(view, 0.1, seed=4)[1].collect()} != val_users
    with pytest.raises(ValueError, match="fraction"):
        split_by_users(view, 1.0)


def test_rows_per_as_of_bounds_each_date(spark: SparkSession) -> None:
    busy, quiet = dt.date(2026, 5, 4), dt.date(2026, 5, 11)
    rows = [(f"u{i}", busy) for i in range(4000)] + [(f"u{i}", quiet) for i in range(100)]
    view = spark.createDataFrame(rows, "user_id string, as_of_date date")
    kept = rows_per_as_of(view, {busy: 4000, quiet: 100}, limit=500, seed=1)
    by_date = {r["as_of_date"]: r["count"] for r in kept.groupBy("as_of_date").count().collect()}
    assert by_date[quiet] == 100  # under the limit: every row
    assert 410 < by_date[busy] < 590  # 500 of 4,000 give or take four standard deviations
    # The same rows whatever the partitioning.
    assertDataFrameEqual(rows_per_as_of(view.repartition(5), {busy: 4000, quiet: 100}, limit=500, seed=1), kept)
    with pytest.raises(ValueError, match="limit"):
        rows_per_as_of(view, {busy: 4000}, limit=0)


def test_complete_labels_keep_a_horizon_only_on_dates_where_every_user_has_it(spark: SparkSession) -> None:
    # On 05-18, user c is censored after 10 days: a 14-day non-return is unknown there, so the
    # 14-day label of the returner a is dropped too (the known ones would all be returns).
    columns = "as_of_date DATE, user_id STRING, censored BOOLEAN, days_to_next DOUBLE, active_7d INT, active_14d INT"
    view = spark.createDataFrame(
        [
            (dt.date(2026, 5, 11), "a", False, 3.0, 1, 1),
            (dt.date(2026, 5, 11), "b", True, 20.0, 0, 0),
            (dt.date(2026, 5, 18), "a", False, 12.0, 0, 1),
            (dt.date(2026, 5, 18), "c", True, 10.0, 0, None),
        ],
        columns,
    )
    expected = spark.createDataFrame(
        [
            (dt.date(2026, 5, 11), "a", False, 3.0, 1, 1),
            (dt.date(2026, 5, 11), "b", True, 20.0, 0, 0),
            (dt.date(2026, 5, 18), "a", False, 12.0, 0, None),
            (dt.date(2026, 5, 18), "c", True, 10.0, 0, None),
        ],
        columns,
    )
    assertDataFrameEqual(complete_labels(view, [7, 14]), expected)
    with pytest.raises(ValueError, match="horizons_days"):
        complete_labels(view, [])
