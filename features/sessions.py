"""Sessions: a user's events split wherever they were inactive for longer than a gap.

Only window functions and aggregates (no Python UDFs), so Spark keeps the work in the JVM. A
gap of exactly ``gap_minutes`` keeps the session going; a longer one starts a new session.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SESSION_COLUMNS = (
    "user_id",
    "session_id",
    "session_start",
    "session_end",
    "duration_seconds",
    "n_events",
    "n_views",
    "n_carts",
    "n_removals",
    "n_purchases",
    "revenue",
    "n_categories",
    "top_category",
    "session_date",
)


def session_id(user_id: Column, session_start: Column) -> Column:
    """Stable id of a session: the same user and start give the same id on every run."""
    key = F.concat_ws("\u001f", user_id, F.date_format(session_start, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"))
    return F.substring(F.sha2(key, 256), 1, 32)


def number_sessions(events: DataFrame, gap_minutes: float = 30.0) -> DataFrame:
    """``events`` plus ``starts_session``, ``session_no`` (per user, from 1) and ``session_start``.

    Each value depends only on the user's earlier events, so a cut of the events at any time
    numbers the events before the cut exactly as the whole history does.
    """
    if gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be positive, got {gap_minutes}")
    missing = {"user_id", "event_time", "event_id"} - set(events.columns)
    if missing:
        raise ValueError(f"events lacks columns {sorted(missing)}")
    in_order = Window.partitionBy("user_id").orderBy("event_time", "event_id")
    so_far = in_order.rowsBetween(Window.unboundedPreceding, 0)
    micros = F.unix_micros("event_time")
    starts_session = F.coalesce(micros - F.lag(micros).over(in_order) > int(gap_minutes * 60 * 1_000_000), F.lit(True))
    flagged = events.withColumn("starts_session", starts_session)
    return flagged.withColumn("session_no", F.sum(F.col("starts_session").cast("int")).over(so_far)).withColumn(
        "session_start", F.max(F.when(F.col("starts_session"), F.col("event_time"))).over(so_far)
    )


def sessionize(events: DataFrame, gap_minutes: float = 30.0) -> DataFrame:
    """One row per session of ``events`` (user_id, event_time, event_type, category, price, event_id).

    ``revenue`` is the sum of purchase prices; ``top_category`` the most frequent category in the
    session (ties go to the alphabetically first); ``session_date`` the UTC date of its start.
    """
    missing = {"event_type", "category", "price"} - set(events.columns)
    if missing:
        raise ValueError(f"events lacks columns {sorted(missing)}")
    numbered = number_sessions(events, gap_minutes)

    def count_of(event_type: str) -> Column:
        return F.count(F.when(F.col("event_type") == event_type, 1))

    # Per category first (for the top category), then per session: both group by user first, so
    # Spark reuses the window's partitioning and shuffles once.
    per_category = numbered.groupBy("user_id", "session_no", "category").agg(
        F.min("event_time").alias("first_time"),
        F.max("event_time").alias("last_time"),
        F.count("*").alias("n_events"),
        count_of("view").alias("n_views"),
        count_of("cart").alias("n_carts"),
        count_of("remove_from_cart").alias("n_removals"),
        count_of("purchase").alias("n_purchases"),
        F.sum(F.when(F.col("event_type") == "purchase", F.col("price"))).alias("revenue"),
    )
    sessions = per_category.groupBy("user_id", "session_no").agg(
        F.min("first_time").alias("session_start"),
        F.max("last_time").alias("session_end"),
        *[F.sum(c).cast("int").alias(c) for c in ("n_events", "n_views", "n_carts", "n_removals", "n_purchases")],
        F.round(F.coalesce(F.sum("revenue"), F.lit(0.0)), 2).alias("revenue"),
        F.count("category").cast("int").alias("n_categories"),
        F.min_by("category", F.when(F.col("category").isNotNull(), F.struct(-F.col("n_events"), F.col("category")))).alias("top_category"),
    )
    return (
        sessions.withColumn("session_id", session_id(F.col("user_id"), F.col("session_start")))
        .withColumn("duration_seconds", (F.unix_micros("session_end") - F.unix_micros("session_start")) / 1e6)
        .withColumn("session_date", F.to_date("session_start"))
        .select(*SESSION_COLUMNS)
    )


def recompute_from(changed: DataFrame, sessions: DataFrame, gap_minutes: float = 30.0) -> DataFrame:
    """Per user with changed events: the time from which their sessions must be rebuilt.

    A session that ended more than ``gap_minutes`` before the user's earliest changed event
    cannot merge with it, so everything earlier stays as it is. The result is exact: rebuilding
    from ``recompute_from`` gives the same sessions as a full recompute.
    """
    first_change = changed.groupBy("user_id").agg(F.min("event_time").alias("first_change"))
    reach = F.expr(f"INTERVAL {int(gap_minutes * 60 * 1_000_000)} MICROSECONDS")
    touched = (
        sessions.select("user_id", "session_start", "session_end")
        .join(first_change, "user_id")
        .where(F.col("session_end") >= F.col("first_change") - reach)
        .groupBy("user_id")
        .agg(F.min("session_start").alias("first_touched"))
    )
    return first_change.join(touched, "user_id", "left").select(
        "user_id", F.least("first_change", F.coalesce("first_touched", "first_change")).alias("recompute_from")
    )


def session_starts(events: DataFrame, gap_minutes: float = 30.0) -> DataFrame:
    """(user_id, session_start) of every session of ``events``: the starts :func:`sessionize`
    gives, without building the sessions."""
    numbered = number_sessions(events, gap_minutes).where("starts_session")
    return numbered.select("user_id", F.col("event_time").alias("session_start"))


def session_offsets(sessions: DataFrame, as_of: dt.datetime) -> DataFrame:
    """Per user with a session before ``as_of``: ``span_days`` from the first session start to
    ``as_of`` and ``offsets_days``, the days from the first session start to each later one
    (the data a per-user fit of the decay process reads; nothing at or after ``as_of``).

    ``sessions`` needs ``user_id`` and ``session_start``, as :func:`sessionize` and the sessions
    table give them: a session's start depends only on earlier events, so the sessions that
    start before ``as_of`` are those of the events before it.
    """
    missing = {"user_id", "session_start"} - set(sessions.columns)
    if missing:
        raise ValueError(f"sessions lacks columns {sorted(missing)}")
    starts = sessions.where(F.col("session_start") < F.lit(as_of)).select("user_id", F.unix_micros("session_start").alias("start_us"))
    day_us = 86_400 * 1_000_000
    per_user = starts.groupBy("user_id").agg(F.min("start_us").alias("first_us"), F.sort_array(F.collect_list("start_us")).alias("starts"))
    return per_user.select(
        "user_id",
        ((F.lit(int(as_of.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)) - F.col("first_us")) / day_us).alias("span_days"),
        F.transform(F.slice("starts", 2, 1 << 30), lambda s: (s - F.col("first_us")) / day_us).alias("offsets_days"),
    )
