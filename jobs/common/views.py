"""Reading the ``sequences`` view, the model's input, as ``train``, ``score`` and ``evaluate`` do;
the users' category interest as ``features`` and ``stream`` compute it."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import STATIC_FEATURES, WINDOW_FEATURES, Table
from interest_decay.features.windows import category_interest
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.tables import latest_version, require_table, table_property
from interest_decay.model.data import arrays

# The table property that records the settings a view was built with.
VIEW_SETTINGS_PROPERTY = "interest_decay.view_settings"


def view_settings(settings: Settings) -> str:
    """The settings that shape the ``sequences`` view (its grid, its arrays, its labels), as one
    string: a view built with other ones must be rebuilt whole, never mixed."""
    conf = settings.features
    shape = {
        "window_days": conf.window_days,
        "origin": str(conf.origin),
        "n_windows": conf.n_windows,
        "future_windows": conf.future_windows,
        "horizons_days": list(settings.horizons_days),
        "gap_minutes": settings.sessions.gap_minutes,
    }
    return json.dumps(shape, sort_keys=True)


def users_category_interest(events: DataFrame, settings: Settings, as_of: dt.date | dt.datetime) -> DataFrame:
    """Each user's top categories at ``as_of`` with the features settings, as ``features`` writes
    them to ``category_interest`` and the streaming job computes them live."""
    conf = settings.features
    return category_interest(
        events,
        as_of=as_of,
        window_days=conf.window_days,
        n_windows=conf.n_windows,
        recent_windows=conf.recent_windows,
        top_n=conf.top_categories,
    )


def read_view(spark: SparkSession, settings: Settings) -> tuple[DataFrame, int]:
    """(the ``sequences`` view at its latest version, that version): a stage that reads it twice
    sees one snapshot, whatever ``features`` commits meanwhile. ValueError when the view was
    built with other settings than these (it says which, and that features rebuilds it)."""
    path = settings.table_path(Table.SEQUENCES)
    require_table(spark, path)
    built = table_property(spark, path, VIEW_SETTINGS_PROPERTY)
    if built is not None and built != view_settings(settings):
        there, here = json.loads(built), json.loads(view_settings(settings))
        differ = ", ".join(f"{key}: {there.get(key)} there, {here.get(key)} now" for key in sorted(here) if there.get(key) != here.get(key))
        raise ValueError(f"the view at {path} was built with other settings ({differ}): run `interest-decay features` to rebuild it")
    version = latest_version(spark, path)
    return spark.read.format("delta").option("versionAsOf", version).load(path), version


def validation_date(view: DataFrame, longest_horizon: int) -> dt.date:
    """The latest as-of date whose ``longest_horizon``-day label is known for every user (any
    horizon: a label is unknown where no return was seen and the data end sooner).

    Later dates know only the users who already came back, which would make a biased
    validation set, or a biased evaluation.
    """
    unknown = F.col("censored") & (F.col("days_to_next") < longest_horizon)
    complete = view.groupBy("as_of_date").agg(F.count(F.when(unknown, 1)).alias("unknown")).where("unknown = 0")
    row = complete.agg(F.max("as_of_date")).first()
    if row is None or row[0] is None:
        raise ValueError(f"no as-of date has its {longest_horizon}-day labels yet: the events span too little time")
    return row[0]


def rows_by_date(rows: DataFrame) -> dict[dt.date, int]:
    """{as_of_date: number of rows}; on the view itself, whose partition column as_of_date is,
    Spark reads no data pages for it."""
    return {row["as_of_date"]: row["count"] for row in rows.groupBy("as_of_date").count().collect()}


def view_shape(settings: Settings) -> dict:
    """The view's array shape: windows, window features and static features."""
    return dict(n_windows=settings.features.n_windows, n_window_features=len(WINDOW_FEATURES), n_static=len(STATIC_FEATURES))


def view_arrays(frame: pd.DataFrame, settings: Settings) -> tuple[dict, dict]:
    """(inputs, targets) arrays of the view's flat rows in ``frame``, shaped as ``settings`` say."""
    return arrays(frame, **view_shape(settings), horizons_days=settings.horizons_days)
