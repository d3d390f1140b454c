"""Gold features: per user and time window, and the sequence view the model reads.

Windows are ``window_days`` long and aligned to ``origin``: window ``k`` covers
``[origin + k * window_days, origin + (k + 1) * window_days)``. An as-of date is a window
boundary. The view row of a user at as-of date ``A`` holds the last ``n_windows`` windows that
end at or before ``A`` and labels from what happens at or after ``A``; nothing in its inputs
comes from after ``A`` (tests/test_windows.py cuts the events at ``A`` and compares).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from interest_decay.contract import STATIC_FEATURE_COLUMNS, WINDOW_FEATURES
from interest_decay.features.sessions import number_sessions

_DAY_S = 86_400


def _epoch_s(origin: dt.date | dt.datetime) -> int:
    """Seconds since the epoch of a date's UTC midnight, or of a moment (naive means UTC)."""
    if isinstance(origin, dt.datetime):
        return int((origin if origin.tzinfo else origin.replace(tzinfo=dt.UTC)).timestamp())
    return int(dt.datetime(origin.year, origin.month, origin.day, tzinfo=dt.UTC).timestamp())


def window_index(time: Column, origin: dt.date | dt.datetime, window_days: int) -> Column:
    """Index of the window holding ``time``."""
    return F.floor((F.unix_seconds(time) - _epoch_s(origin)) / (window_days * _DAY_S)).cast("long")


def window_bound(index: Column, origin: dt.date | dt.datetime, window_days: int) -> Column:
    """Start time of window ``index`` (so ``index + 1`` gives its end)."""
    return F.timestamp_seconds(F.lit(_epoch_s(origin)) + index * (window_days * _DAY_S))


def is_boundary(day: dt.date, origin: dt.date, window_days: int) -> bool:
    """True when ``day`` is a window boundary, i.e. a valid as-of date."""
    return (day - origin).days % window_days == 0


def _entropy(total: Column, sum_n_log_n: Column) -> Column:
    """Shannon entropy (nats) of category counts n_i from their ``total`` N and sum of n_i ln n_i:
    -sum (n_i / N) ln(n_i / N) = ln N - sum(n_i ln n_i) / N, so no list of counts is collected."""
    entropy = F.log(total) - sum_n_log_n / total
    return F.when(total > 0, F.greatest(entropy, F.lit(0.0))).otherwise(0.0)  # greatest: no -0.0 or rounding below 0


def user_windows(
    events: DataFrame,
    *,
    origin: dt.date | dt.datetime,
    window_days: int,
    until: dt.datetime,
    gap_minutes: float = 30.0,
) -> DataFrame:
    """Every window of every user from their first event to the window holding ``until``.

    Windows without activity are kept (zeros), because "nothing happened" is what decay looks
    like. Only events before ``until`` are read.
    """
    if window_days <= 0:
        raise ValueError(f"window_days must be positive, got {window_days}")
    numbered = number_sessions(events.where(F.col("event_time") < F.lit(until)), gap_minutes).withColumn(
        "widx", window_index(F.col("event_time"), origin, window_days)
    )
    # A session started in a window is timed to its last event inside that window: the event
    # whose next one (in number_sessions' order, so no second sort) belongs to another session or
    # window. Summed per window with the per-category counts, so the events are grouped once.
    # Likewise a window's active days are its events that open a day (the first event, or one on
    # another day or in another window than the event before it): counted, never collected.
    in_order = Window.partitionBy("user_id").orderBy("event_time", "event_id")
    next_time = F.lead("event_time").over(in_order)
    previous_time = F.lag("event_time").over(in_order)
    continues = (F.unix_micros(next_time) - F.unix_micros("event_time") <= int(gap_minutes * 60 * 1_000_000)) & (
        window_index(next_time, origin, window_days) == F.col("widx")
    )
    timed_here = ~F.coalesce(continues, F.lit(False)) & (F.col("widx") == window_index(F.col("session_start"), origin, window_days))
    same_day = (F.to_date(previous_time) == F.to_date("event_time")) & (window_index(previous_time, origin, window_days) == F.col("widx"))
    numbered = numbered.withColumns(
        {
            "session_minutes": F.when(timed_here, (F.unix_seconds("event_time") - F.unix_seconds("session_start")) / 60),
            "opens_day": ~F.coalesce(same_day, F.lit(False)),
        }
    )

    def count_of(event_type: str) -> Column:
        return F.count(F.when(F.col("event_type") == event_type, 1))

    per_category = numbered.groupBy("user_id", "widx", "category").agg(
        F.count("*").alias("n"),
        count_of("view").alias("views"),
        count_of("cart").alias("carts"),
        count_of("purchase").alias("purchases"),
        F.sum(F.when(F.col("event_type") == "purchase", F.col("price"))).alias("revenue"),
        F.sum(F.col("starts_session").cast("int")).alias("sessions"),
        F.sum(F.col("opens_day").cast("int")).alias("active_days"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
        F.min(F.when(F.col("starts_session"), F.col("event_time"))).alias("first_session_start"),
        F.sum("session_minutes").alias("session_minutes"),
        F.count("session_minutes").alias("timed_sessions"),
    )
    named = F.col("category").isNotNull()
    per_window = per_category.groupBy("user_id", "widx").agg(
        *[F.sum(c).cast("int").alias(c) for c in ("sessions", "views", "carts", "purchases")],
        F.coalesce(F.sum("revenue"), F.lit(0.0)).alias("revenue"),
        F.sum("active_days").cast("int").alias("active_days"),
        _entropy(F.sum(F.when(named, F.col("n"))), F.sum(F.when(named, F.col("n") * F.log(F.col("n"))))).alias("category_entropy"),
        (F.max(F.when(named, F.col("n"))) / F.sum(F.when(named, F.col("n")))).alias("top_category_share"),
        F.min("first_event_time").alias("first_event_time"),
        F.max("last_event_time").alias("last_event_time"),
        F.min("first_session_start").alias("first_session_start"),
        F.when(F.sum("timed_sessions") > 0, F.sum("session_minutes") / F.sum("timed_sessions")).alias("mean_session_minutes"),
    )
    last_index = window_index(F.lit(until) - F.expr("INTERVAL 1 MICROSECOND"), origin, window_days)
    dense = (
        per_window.groupBy("user_id")
        .agg(F.min("widx").alias("first_widx"))
        .select("user_id", F.explode(F.sequence("first_widx", last_index)).alias("widx"))
        .join(per_window, ["user_id", "widx"], "left")
    )
    so_far = Window.partitionBy("user_id").orderBy("widx").rowsBetween(Window.unboundedPreceding, 0)
    window_end = window_bound(F.col("widx") + 1, origin, window_days)
    zero_filled = dense.select(
        "user_id",
        "widx",
        *[F.coalesce(c, F.lit(0)).alias(c) for c in ("sessions", "active_days", "views", "carts", "purchases")],
        F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
        # least() skips nulls, so the no-cart case is spelled out.
        F.when(F.col("carts") > 0, F.least(F.col("purchases") / F.col("carts"), F.lit(1.0))).otherwise(0.0).alias("cart_to_purchase_rate"),
        F.coalesce("mean_session_minutes", F.lit(0.0)).alias("mean_session_minutes"),
        F.coalesce("category_entropy", F.lit(0.0)).alias("category_entropy"),
        F.coalesce("top_category_share", F.lit(0.0)).alias("top_category_share"),
        "first_session_start",
        F.max("last_event_time").over(so_far).alias("last_event_time"),
        F.min("first_event_time").over(so_far).alias("first_event_time"),
        F.sum(F.coalesce("sessions", F.lit(0))).over(so_far).alias("total_sessions"),
        F.sum(F.coalesce("purchases", F.lit(0))).over(so_far).alias("total_purchases"),
        F.sum(F.coalesce("revenue", F.lit(0.0))).over(so_far).alias("total_revenue"),
    )

    def days_before_end(time: Column) -> Column:
        return (F.unix_seconds(window_end) - F.unix_seconds(time)) / _DAY_S

    return zero_filled.select(
        "user_id",
        F.to_date(window_bound(F.col("widx"), origin, window_days)).alias("window_start"),
        F.to_date(window_end).alias("window_end"),
        *WINDOW_FEATURES[:10],
        days_before_end(F.col("last_event_time")).alias("days_since_last_event"),
        days_before_end(F.col("first_event_time")).alias("tenure_days"),
        "total_sessions",
        "total_purchases",
        "total_revenue",
        "first_session_start",
        "widx",
    )


def sequences(
    windows: DataFrame,
    *,
    n_windows: int,
    horizons_days: list[int],
    observed_until: dt.datetime,
    as_of_dates: list[dt.date] | None = None,
    future_windows: int = 4,
) -> DataFrame:
    """The model's view: per user and as-of date, ``x`` (n_windows x features), ``mask``, ``static``, labels.

    ``x`` is padded at the front with zero windows before the user's first window (``mask`` 0).
    Labels, from session starts at or after the as-of date: ``active_<h>d`` (null when
    ``as_of + h`` is after ``observed_until``, i.e. not yet known), ``days_to_next`` and
    ``censored`` (no session seen by ``observed_until``; ``days_to_next`` is then the time observed),
    and ``future_sessions``: the sessions started in each of the next ``future_windows`` windows,
    -1 for a window that ends after ``observed_until`` (not fully observed yet).
    """
    if n_windows <= 0:
        raise ValueError(f"n_windows must be positive, got {n_windows}")
    if future_windows <= 0:
        raise ValueError(f"future_windows must be positive, got {future_windows}")
    by_user = Window.partitionBy("user_id").orderBy("widx")
    vector = F.array(*[F.col(c).cast("float") for c in WINDOW_FEATURES])
    # The last n_windows windows and the next future_windows as offsets (lag/lead), not lists
    # collected over a sliding frame, which Spark rebuilds for every row. user_windows is dense
    # from a user's first window to the one holding observed_until, so an offset is null exactly
    # before the first window or after the last.
    recent = F.array(*[F.lag(vector, k).over(by_user) for k in range(n_windows - 1, 0, -1)], vector)
    # The next session start after a window is the first one of a later window (they only grow
    # with the window), so a lead that skips windows without one: a min over every following
    # window is recomputed for each row, quadratic in a user's windows.
    next_start = F.expr("lead(first_session_start) IGNORE NULLS").over(by_user)
    following = F.array(*[F.lead(F.col("sessions").cast("int"), k).over(by_user) for k in range(1, future_windows + 1)])
    framed = windows.select(
        "user_id",
        F.col("window_end").alias("as_of_date"),
        recent.alias("recent"),
        F.array(*[F.col(column).cast("float") for column in STATIC_FEATURE_COLUMNS.values()]).alias("static"),
        next_start.alias("next_session_start"),
        following.alias("following"),
        F.datediff("window_end", "window_start").alias("window_length"),
    )
    if as_of_dates is not None:
        framed = framed.where(F.col("as_of_date").isin(list(as_of_dates)))
    as_of = F.col("as_of_date").cast("timestamp")
    seen = F.col("next_session_start") < F.lit(observed_until)
    zeros = F.array(*[F.lit(0.0).cast("float")] * len(WINDOW_FEATURES))
    observed_days = (F.lit(observed_until).cast("long") - as_of.cast("long")) / _DAY_S
    days_to_next = F.when(seen, (F.unix_seconds("next_session_start") - F.unix_seconds(as_of)) / _DAY_S).otherwise(observed_days)
    labels = []
    for h in horizons_days:
        arrived = seen & (days_to_next < h)
        known = observed_days >= h
        labels.append(F.when(arrived, 1).when(known, 0).alias(f"active_{h}d"))
    return framed.where(as_of <= F.lit(observed_until)).select(
        "user_id",
        "as_of_date",
        F.transform("recent", lambda window: F.coalesce(window, zeros)).alias("x"),
        F.transform("recent", lambda window: F.when(window.isNull(), 0).otherwise(1)).alias("mask"),
        "static",
        *labels,
        days_to_next.cast("double").alias("days_to_next"),
        (~F.coalesce(seen, F.lit(False))).alias("censored"),
        _future_sessions(F.col("following"), observed_days, F.col("window_length"), future_windows).alias("future_sessions"),
    )


def _future_sessions(following: Column, observed_days: Column, window_days: Column, future_windows: int) -> Column:
    """The next ``future_windows`` session counts, -1 where the window ends after what is observed."""
    return F.transform(
        F.sequence(F.lit(1), F.lit(future_windows)),
        lambda i: F.when((i * window_days <= observed_days) & following[i - 1].isNotNull(), following[i - 1]).otherwise(-1),
    )


def censor_at(view: DataFrame, cutoff: dt.date, horizons_days: list[int], window_days: int) -> DataFrame:
    """The view as it looked on ``cutoff``: rows before it, labels cut there.

    A return after the cutoff is not known yet: such rows become censored at the cutoff and a
    horizon reaching past it is null unless the user was already back; a future window
    (``window_days`` long) that ends after the cutoff is not observed (-1). This is what lets a
    model be trained, or a baseline fitted, with nothing from after an evaluation date.
    """
    if not isinstance(cutoff, dt.date):
        raise TypeError(f"cutoff must be a date, got {type(cutoff).__name__}")
    if window_days <= 0:
        raise ValueError(f"window_days must be positive, got {window_days}")
    # Never more than the view itself has seen: a censored row was observed for days_to_next days.
    observed = F.least(F.datediff(F.lit(cutoff), F.col("as_of_date")).cast("double"), F.when(F.col("censored"), F.col("days_to_next")))
    back = ~F.col("censored") & (F.col("days_to_next") < observed)
    labels = [
        F.when(back & (F.col("days_to_next") < h), 1)
        .when(observed >= h, 0)
        .cast(view.schema[f"active_{h}d"].dataType)
        .alias(f"active_{h}d")
        for h in horizons_days
    ]
    days_before_cutoff = F.datediff(F.lit(cutoff), F.col("as_of_date"))
    future = F.transform("future_sessions", lambda n, i: F.when((i + 1) * window_days <= days_before_cutoff, n).otherwise(-1))
    replaced = {"days_to_next", "censored", "future_sessions", *(f"active_{h}d" for h in horizons_days)}
    return (
        view.where(F.col("as_of_date") < F.lit(cutoff))
        .select(
            *[c for c in view.columns if c not in replaced],
            *labels,
            F.when(back, F.col("days_to_next")).otherwise(observed).alias("days_to_next"),
            (~back).alias("censored"),
            future.alias("future_sessions"),
        )
        .select(*view.columns)
    )


def complete_labels(view: DataFrame, horizons_days: list[int]) -> DataFrame:
    """The view with each label ``active_<h>d`` kept only on the as-of dates where it is known
    for every user, null elsewhere.

    Near the end of what is observed a return is known as soon as it happens, a non-return only
    once the whole horizon has passed, so there the known labels are the returners': a share of
    returners, an AUC or a log loss over them would be biased towards coming back (on CDNOW's
    calibration weeks every known 273-day label is a return). A date is complete for h when no
    row of it is censored sooner than h days (as :func:`interest_decay.jobs.common.views.validation_date` asks).
    """
    if not horizons_days:
        raise ValueError("horizons_days must name at least one horizon")
    by_date = Window.partitionBy("as_of_date")
    columns = {
        f"active_{h}d": F.when(
            F.max((F.col("censored") & (F.col("days_to_next") < h)).cast("int")).over(by_date) == 0, F.col(f"active_{h}d")
        )
        for h in horizons_days
    }
    return view.withColumns(columns)


def split_by_users(view: DataFrame, fraction: float, seed: int = 0) -> tuple[DataFrame, DataFrame]:
    """(rows of the other users, rows of a ``fraction`` of the users): every row of a user on one side.

    Users are picked by a hash of (user_id, seed), so the split does not depend on partitioning
    and a user stays on the same side at every as-of date.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    held_out = F.pmod(F.xxhash64("user_id", F.lit(seed)), F.lit(1_000_000)) < F.lit(round(fraction * 1_000_000))
    return view.where(~held_out), view.where(held_out)


def rows_per_as_of(rows: DataFrame, per_date: dict[dt.date, int], limit: int, seed: int = 0) -> DataFrame:
    """About ``limit`` rows of each as-of date (``per_date`` counts them), the users picked by a
    seeded hash: a filter, no sort or shuffle, and the same users whatever the partitioning."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    share = F.lit(1.0)
    for as_of, count in per_date.items():
        if count > limit:
            share = F.when(F.col("as_of_date") == F.lit(as_of), F.lit(limit / count)).otherwise(share)
    # A uniform draw in [0, 1) per (user, date) from the hash.
    draw = F.pmod(F.xxhash64("user_id", "as_of_date", F.lit(seed)), F.lit(1 << 30)) / F.lit(float(1 << 30))
    return rows.where(draw < share)


def category_interest(
    events: DataFrame,
    *,
    as_of: dt.date | dt.datetime,
    window_days: int,
    n_windows: int,
    recent_windows: int,
    top_n: int = 3,
) -> DataFrame:
    """Per user at ``as_of``: the top categories of the last ``n_windows`` windows, each with its
    share of the user's events in the last ``recent_windows`` windows and in the windows before.

    A category whose recent share is below its earlier share is one the user's interest is
    leaving: the scoring output uses it to suggest what to recommend.
    """
    if not 0 < recent_windows < n_windows:
        raise ValueError(f"recent_windows must be between 1 and n_windows - 1 ({n_windows - 1}), got {recent_windows}")
    end = as_of if isinstance(as_of, dt.datetime) else dt.datetime(as_of.year, as_of.month, as_of.day)
    start = end - dt.timedelta(days=window_days * n_windows)
    split = end - dt.timedelta(days=window_days * recent_windows)
    period = events.where((F.col("event_time") >= F.lit(start)) & (F.col("event_time") < F.lit(end)) & F.col("category").isNotNull())
    is_recent = F.col("event_time") >= F.lit(split)
    counts = period.groupBy("user_id", "category").agg(
        F.count("*").alias("n"), F.count(F.when(is_recent, 1)).alias("n_recent"), F.count(F.when(~is_recent, 1)).alias("n_earlier")
    )
    per_user = Window.partitionBy("user_id")
    ranked = Window.partitionBy("user_id").orderBy(F.desc("n"), "category")
    shares = counts.select(
        "user_id",
        "category",
        F.row_number().over(ranked).alias("rank"),
        F.coalesce(F.col("n_recent") / F.sum("n_recent").over(per_user), F.lit(0.0)).alias("recent_share"),
        F.coalesce(F.col("n_earlier") / F.sum("n_earlier").over(per_user), F.lit(0.0)).alias("earlier_share"),
    ).where(F.col("rank") <= top_n)
    entry = F.struct(
        "rank", "category", F.round("recent_share", 4).alias("recent_share"), F.round("earlier_share", 4).alias("earlier_share")
    )
    return (
        shares.groupBy("user_id")
        .agg(F.array_sort(F.collect_list(entry)).alias("top_categories"))
        .select("user_id", F.lit(end).cast("date").alias("as_of_date"), "top_categories")
    )


def live_view(
    events: DataFrame,
    *,
    moment: dt.datetime,
    window_days: int,
    n_windows: int,
    horizons_days: list[int],
    gap_minutes: float = 30.0,
) -> DataFrame:
    """Each user's view row as of ``moment`` (a UTC instant, whole seconds): the same windows,
    features and padding as :func:`sequences`, but the last window ends at ``moment`` rather than
    on the weekly grid, and ``events_until`` (the user's newest event before it) is added. Labels
    are all unknown (nothing after ``moment`` is read). At a grid boundary this is the row of the
    batch view for that date (tests/test_stream.py compares them)."""
    if moment.microsecond:
        raise ValueError(f"moment must be a whole second, got {moment.isoformat()}")
    before = events.where(F.col("event_time") < F.lit(moment))
    windows = user_windows(before, origin=moment, window_days=window_days, until=moment, gap_minutes=gap_minutes)
    view = sequences(windows, n_windows=n_windows, horizons_days=horizons_days, observed_until=moment)
    # The last window of each user is the one ending at ``moment``.
    last = view.where(F.col("as_of_date") == F.lit(moment).cast("date"))
    newest = before.groupBy("user_id").agg(F.max("event_time").alias("events_until"))
    return last.join(newest, "user_id")
