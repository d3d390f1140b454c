"""Scoring's parts that the batch `score` stage and the streaming job share: the model's outputs
through the pandas UDF, the risk tiers, the action and the date to act by."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import STATIC_FEATURES, Table
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.spark import cache_now
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.tables import table_exists
from interest_decay.jobs.common.udf import score_udf
from interest_decay.model.data import flat_columns
from interest_decay.model.scoring import score_columns

log = logging.getLogger(__name__)
TIERS = ("high", "medium", "low")


def decaying_categories(interest: Column, min_drop: float) -> Column:
    """Names of the top categories whose recent share fell by at least ``min_drop``."""
    fading = F.filter(interest, lambda c: c["earlier_share"] - c["recent_share"] >= min_drop)
    return F.coalesce(F.transform(fading, lambda c: c["category"]), F.array().cast("array<string>"))


def with_tier_and_action(scores: DataFrame, settings: Settings, thresholds: tuple[float, float], as_of: dt.date) -> DataFrame:
    """``risk_tier`` from P(active within the longest horizon) against ``thresholds`` (high risk
    below the first, medium below the second), the ``action`` the rules pick, and ``act_by``: the
    date by which the action should reach the user: before their visit rate has halved in
    silence (the silence half-life; null when there is nothing to do).

    Rules, first that applies: high risk and a decaying category -> recommend that category;
    high risk and a past buyer -> coupon; high risk -> win-back; medium risk -> reminder; low
    risk but a silence half-life under ``score.fading_fast_days`` -> reminder; else none.
    """
    high_below, medium_below = thresholds
    conf = settings.score
    p_longest = F.col(f"p_active_{max(settings.horizons_days)}d")
    tier = F.when(p_longest < high_below, "high").when(p_longest < medium_below, "medium").otherwise("low")
    past_buyer = F.col("static")[STATIC_FEATURES.index("total_purchases")] > 0
    high = F.col("risk_tier") == "high"
    fading_fast = F.col("silence_half_life_days") < F.lit(conf.fading_fast_days)
    action = (
        F.when(high & (F.size("top_decaying_categories") > 0), F.concat(F.lit("recommend_category:"), F.col("top_decaying_categories")[0]))
        .when(high & past_buyer, "coupon")
        .when(high, "win_back")
        .when(F.col("risk_tier") == "medium", "reminder")
        .when(fading_fast, "reminder")
        .otherwise("none")
    )
    days_left = F.least(F.floor(F.col("silence_half_life_days")), F.lit(max(settings.horizons_days))).cast("int")
    act_by = F.when(F.col("action") != "none", F.date_add(F.lit(as_of).cast("date"), days_left))
    return scores.withColumn("risk_tier", tier).withColumn("action", action).withColumn("act_by", act_by)


def _category_interest(spark: SparkSession, settings: Settings, as_of: dt.date) -> DataFrame:
    """Each user's top categories at ``as_of`` (none when the table was never built)."""
    path = settings.table_path(Table.CATEGORY_INTEREST)
    if not table_exists(spark, path):
        return spark.createDataFrame(
            [], "user_id STRING, top_categories ARRAY<STRUCT<rank: INT, category: STRING, recent_share: DOUBLE, earlier_share: DOUBLE>>"
        )
    return spark.read.format("delta").load(path).where(F.col("as_of_date") == F.lit(as_of)).select("user_id", "top_categories")


def scores_frame(
    spark: SparkSession,
    settings: Settings,
    rows: DataFrame,
    as_of: dt.date,
    model: tuple[str, str],
    scored_at: dt.datetime,
    interest: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame, tuple[float, float]]:
    """(the model's outputs for ``rows``, persisted when the tiers are quantiles; the rows of the
    scores table; the tier thresholds) for the view's ``rows`` at ``as_of``, scored by ``model``
    (its URI and version). ``interest``: the users' top categories (default: ``category_interest``
    at ``as_of``)."""
    model_uri, model_version = model
    horizons = list(settings.horizons_days)
    udf = score_udf(Storage.for_settings(settings), model_uri, horizons, settings.score.drivers)
    model_scores = (
        rows.selectExpr(*flat_columns(horizons))
        .select("user_id", "static", udf("x_flat", "mask", "static").alias("s"))
        .select("user_id", "static", "s.*")
    )
    if settings.score.tiers == "quantile":
        model_scores = cache_now(model_scores)  # the quantiles and the write both read it: the model runs once
    interest = interest if interest is not None else _category_interest(spark, settings, as_of)
    scored = model_scores.join(interest.select("user_id", "top_categories"), "user_id", "left").withColumn(
        "top_decaying_categories", decaying_categories(F.col("top_categories"), settings.score.decaying_share_drop)
    )
    p_longest = f"p_active_{max(horizons)}d"
    thresholds = settings.score.thresholds(lambda probabilities: scored.approxQuantile(p_longest, probabilities, 1e-4))
    model_columns = [name for name, _ in score_columns(horizons)]
    final = with_tier_and_action(scored, settings, thresholds, as_of).select(
        "user_id",
        F.lit(as_of).cast("date").alias("as_of_date"),
        F.lit(model_version).alias("model_version"),
        *model_columns[: model_columns.index("z")],
        "risk_tier",
        "action",
        "act_by",
        "top_decaying_categories",
        "z",
        "reconstruction_error",
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
    return model_scores, final, thresholds
