"""Gold features: ``user_windows``, the model's view ``sequences`` and ``category_interest``.

Without ``--as-of`` the view holds every rolling as-of date (every window boundary from the
first complete window to the last event), which is what training reads. With ``--as-of`` it
holds that date only, which is what scoring reads. Re-running replaces the same as-of dates,
so nothing is duplicated.

    spark-submit jobs/features.py --conf conf/local.yaml [--as-of 2026-04-27]
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Table
from interest_decay.features.windows import is_boundary, sequences, user_windows
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.runs import RunSummary, stage_run
from interest_decay.jobs.common.spark import session_conf
from interest_decay.jobs.common.tables import (
    latest_version,
    require_table,
    retry_on_conflict,
    set_table_properties,
    table_exists,
    table_property,
    write_slice,
)
from interest_decay.jobs.common.views import VIEW_SETTINGS_PROPERTY, users_category_interest, view_settings

log = logging.getLogger(__name__)

# The view's Parquet without dictionary pages: most of writing it is encoding ``x``, 144 floats a
# row, and trying a dictionary on every page of them cost more than it saved (measured on the
# 2.7M rows of a 200,000-user shop, after a warm-up: 36.0 s with it, 30.0 and 32.0 without;
# 353 MB against 377 MB).
VIEW_WRITE_CONF = {"parquet.enable.dictionary": "false"}


def rolling_as_of_dates(first_event: dt.datetime, last_event: dt.datetime, origin: dt.date, window_days: int) -> list[dt.date]:
    """Every window boundary after the first event's window, up to the last event."""
    offset = (first_event.date() - origin).days // window_days + 1
    day = origin + dt.timedelta(days=offset * window_days)
    dates = []
    while dt.datetime(day.year, day.month, day.day) <= last_event:
        dates.append(day)
        day += dt.timedelta(days=window_days)
    return dates


def as_of_dates_for(span: Row, settings: Settings, as_of: dt.date | None) -> list[dt.date]:
    """The as-of dates to build: ``as_of`` alone (checked: a window boundary inside the data),
    or every rolling boundary of the events' ``span`` (its first and last event times)."""
    conf = settings.features
    if as_of is None:
        dates = rolling_as_of_dates(span["first"], span["last"], conf.origin, conf.window_days)
        if not dates:
            raise ValueError(f"the events span less than one {conf.window_days}-day window: no as-of date to build")
        return dates
    if not is_boundary(as_of, conf.origin, conf.window_days):
        earlier = as_of - dt.timedelta(days=(as_of - conf.origin).days % conf.window_days)
        raise ValueError(
            f"as-of {as_of} is not a window boundary ({conf.window_days}-day windows from features.origin "
            f"{conf.origin}): use {earlier} or {earlier + dt.timedelta(days=conf.window_days)}, or move features.origin"
        )
    if dt.datetime(as_of.year, as_of.month, as_of.day) > span["last"]:
        raise ValueError(f"as-of {as_of} is after the last event ({span['last']}): there is nothing to describe yet")
    return [as_of]


def _write_view(
    spark: SparkSession, settings: Settings, windows: DataFrame, as_of_dates: list[dt.date], observed_until: dt.datetime, rebuild: bool
) -> tuple[str, str]:
    """Replace the view's rows of ``as_of_dates``, or the whole view when ``rebuild`` (it was built
    with other settings); (the view's path, the predicate of those rows)."""
    conf = settings.features
    view = sequences(
        windows,
        n_windows=conf.n_windows,
        horizons_days=settings.horizons_days,
        observed_until=observed_until,
        as_of_dates=as_of_dates,
        future_windows=conf.future_windows,
    )
    view_path = settings.table_path(Table.SEQUENCES)
    replaced = f"as_of_date IN ({', '.join(repr(str(d)) for d in as_of_dates)})"
    with session_conf(spark, VIEW_WRITE_CONF):
        _replace_view(spark, view, view_path, replaced, rebuild)
    set_table_properties(spark, view_path, {VIEW_SETTINGS_PROPERTY: view_settings(settings)})
    return view_path, replaced


def _replace_view(spark: SparkSession, view: DataFrame, view_path: str, replaced: str, rebuild: bool) -> None:
    """Write ``view`` over the rows ``replaced`` names, or over the whole view when it was built
    with other settings."""
    if rebuild:
        # Built with other settings (or before they were recorded): rebuilt whole, never mixed.
        retry_on_conflict(
            lambda: view.write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .partitionBy("as_of_date")
            .save(view_path),
            f"rebuilding {view_path}",
        )
    else:
        write_slice(spark, view, view_path, replaced)


def _write_category_interest(spark: SparkSession, settings: Settings, events: DataFrame, as_of: dt.date) -> str:
    """Replace ``category_interest`` at ``as_of``; the table's path."""
    interest = users_category_interest(events, settings, as_of)
    path = settings.table_path(Table.CATEGORY_INTEREST)
    write_slice(spark, interest, path, f"as_of_date = '{as_of}'")
    return path


def run(spark: SparkSession, settings: Settings, as_of: dt.date | None = None) -> RunSummary:
    """Rebuild ``user_windows`` from ``events`` and write the view for the as-of date(s)."""
    events_path = settings.table_path(Table.EVENTS)
    require_table(spark, events_path)
    conf = settings.features
    version = latest_version(spark, events_path)
    with stage_run(spark, settings, "features", rate=("events", "events"), events=events_path, events_version=version) as summary:
        events = spark.read.format("delta").option("versionAsOf", version).load(events_path)
        span = events.agg(F.min("event_time").alias("first"), F.max("event_time").alias("last"), F.count("*").alias("n")).first()
        if span["n"] == 0:
            raise ValueError(f"the events table at {events_path} is empty")
        # Event logs are complete by day: the last event's day counts as observed to its end, so a
        # log with dates only (CDNOW) gives the whole last day to its labels.
        observed_until = dt.datetime.combine(span["last"].date() + dt.timedelta(days=1), dt.time())
        as_of_dates = as_of_dates_for(span, settings, as_of)
        view_path = settings.table_path(Table.SEQUENCES)
        built = table_property(spark, view_path, VIEW_SETTINGS_PROPERTY)
        rebuild = table_exists(spark, view_path) and built != view_settings(settings)
        if rebuild:
            log.warning(
                "the view at %s was built with other settings (%s): rebuilding every as-of date", view_path, built or "not recorded"
            )
            as_of_dates = as_of_dates_for(span, settings, None)
            summary.inputs["rebuilt"] = True
        summary.inputs["as_of_dates"] = [str(d) for d in (as_of_dates[0], as_of_dates[-1])]
        log.info("features: %d as-of date(s) %s .. %s", len(as_of_dates), as_of_dates[0], as_of_dates[-1])

        windows_path = settings.table_path(Table.USER_WINDOWS)
        windows = user_windows(
            events, origin=conf.origin, window_days=conf.window_days, until=observed_until, gap_minutes=settings.sessions.gap_minutes
        )
        windows.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(windows_path)
        windows = spark.read.format("delta").load(windows_path)
        view_path, replaced = _write_view(spark, settings, windows, as_of_dates, observed_until, rebuild)
        latest = as_of_dates[-1]
        interest_path = _write_category_interest(spark, settings, events, latest)

        # The view's counts in one pass (count of a column counts its non-null values).
        written = (
            spark.read.format("delta")
            .load(view_path)
            .where(replaced)
            .agg(F.count(F.lit(1)).alias("sequences"), *[F.count(f"active_{h}d").alias(f"labelled_{h}d") for h in settings.horizons_days])
            .first()
            .asDict()
        )
        summary.counts = {
            "events": span["n"],
            "user_windows": windows.count(),
            "as_of_dates": len(as_of_dates),
            **written,
            "category_interest": spark.read.format("delta").load(interest_path).where(f"as_of_date = '{latest}'").count(),
        }
        summary.outputs = {"user_windows": windows_path, "sequences": view_path, "category_interest": interest_path}
    return summary


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("features")
