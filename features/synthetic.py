"""A synthetic shop where every user's interest decays with a known time constant.

Each user joins on ``join_day`` and then starts sessions as a Poisson process with intensity

    rate(t) = initial_rate * exp(-(t - join_day) / tau_days)                    (fading interest)
            + floor_rate                                                         (background visits)
            + reengage_rate * exp(-(t - reengage_day) / reengage_tau_days) for t >= reengage_day  (win-back)

so the true interest half-life is ``tau_days * ln 2`` (exactly so at any date when the win-back
fades with the same time constant, ``reengage_tau_factor`` 1, or for users who never re-engage).
The truth table records every parameter of every user's process. Sessions pick a category that drifts from
the user's early favourite to a later one, browse a few products, and some views turn into
carts, removals and purchases.

Randomness comes from hashing (seed, user, draw number), never from ``rand()``: the output is
identical for a seed whatever the partitioning, and nothing is collected to the driver.
"""

from __future__ import annotations

import datetime as dt
import math

from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

CATEGORY_NAMES = (
    "electronics",
    "appliances",
    "computers",
    "apparel",
    "footwear",
    "furniture",
    "kids",
    "sport",
    "beauty",
    "books",
    "garden",
    "auto",
    "music",
    "toys",
    "food",
    "jewelry",
    "pets",
    "health",
    "travel",
    "stationery",
)
MAX_SESSIONS_PER_USER = 2_000
_TWO_53 = float(1 << 53)


class ShopProfile(BaseModel):
    """The synthetic shop: users whose true interest decays with a known time constant."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    users: int = Field(10_000, gt=0)
    days: int = Field(120, gt=0)
    start_date: dt.date = dt.date(2026, 1, 1)
    seed: int = 42
    n_categories: int = Field(20, ge=2)
    products_per_category: int = Field(200, gt=0)
    # Mean sessions per day at a user's start; lognormal across users.
    initial_rate_mean: float = Field(0.4, gt=0)
    # Median of the per-user interest time constant tau (days); lognormal across users with
    # this standard deviation of log tau.
    tau_days_median: float = Field(18.0, gt=0)
    tau_log_sd: float = Field(0.7, ge=0)
    floor_rate: float = Field(0.01, ge=0)
    # Users join uniformly over the first `join_spread` share of the days.
    join_spread: float = Field(0.6, gt=0, le=1)
    # A re-engaged user's second burst fades with its own time constant: the user's tau times
    # this factor (1: the same tau, so the excess half-life stays tau ln 2).
    reengage_probability: float = Field(0.3, ge=0, le=1)
    reengage_tau_factor: float = Field(1.0, gt=0)
    # Mean views per session (geometric); carts, removals and purchases follow from views.
    views_per_session: float = Field(4.0, gt=0)
    cart_probability: float = Field(0.15, ge=0, le=1)
    remove_probability: float = Field(0.2, ge=0, le=1)
    purchase_probability: float = Field(0.4, ge=0, le=1)


def uniform(seed: int, *keys: Column | str | int) -> Column:
    """A uniform draw in (0, 1) that depends only on ``seed`` and ``keys``."""
    cols = [k if isinstance(k, Column) else (F.col(k) if isinstance(k, str) else F.lit(k)) for k in keys]
    hashed = F.xxhash64(F.lit(seed), *cols)
    return (F.pmod(hashed, F.lit(1 << 53)).cast("double") + 0.5) / _TWO_53


def standard_normal(seed: int, *keys: Column | str | int) -> Column:
    """A N(0, 1) draw by Box-Muller from two hashed uniforms."""
    u1 = uniform(seed, *keys, 1)
    u2 = uniform(seed, *keys, 2)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * math.pi * u2)


def category_name(index: Column) -> Column:
    """Readable category names for the first 20 indices, ``category_<i>`` after that."""
    names = F.array(*[F.lit(n) for n in CATEGORY_NAMES])
    return F.when(index < len(CATEGORY_NAMES), F.element_at(names, (index + 1).cast("int"))).otherwise(
        F.concat(F.lit("category_"), index.cast("string"))
    )


def user_truth(user_index: DataFrame, params: ShopProfile) -> DataFrame:
    """Per-user true decay parameters from a frame with one ``id`` column (``spark.range``)."""
    if "id" not in user_index.columns:
        raise ValueError("user_index must have an `id` column, as spark.range gives")
    seed, days = params.seed, float(params.days)
    sigma_rate = 0.6
    users = user_index.select(F.col("id").alias("user_index"))
    initial_rate = params.initial_rate_mean * F.exp(sigma_rate * standard_normal(seed, "user_index", 10) - sigma_rate**2 / 2)
    tau = params.tau_days_median * F.exp(params.tau_log_sd * standard_normal(seed, "user_index", 20))
    reengages = uniform(seed, "user_index", 40) < params.reengage_probability
    n_cat = params.n_categories

    users = users.select(
        "user_index",
        F.format_string("u%08d", F.col("user_index")).alias("user_id"),
        (uniform(seed, "user_index", 30) * days * params.join_spread).alias("join_day"),
        initial_rate.alias("initial_rate_per_day"),
        tau.alias("tau_days"),
        (params.floor_rate * (0.5 + uniform(seed, "user_index", 50))).alias("floor_rate_per_day"),
        F.floor(uniform(seed, "user_index", 60) * n_cat).cast("int").alias("early_category_index"),
        F.floor(uniform(seed, "user_index", 61) * n_cat).cast("int").alias("late_category_index"),
        reengages.alias("reengages"),
    )
    users = users.select(
        "*",
        F.when(F.col("reengages"), F.col("join_day") + uniform(seed, "user_index", 41) * (days - F.col("join_day"))).alias("reengage_day"),
        F.when(F.col("reengages"), F.col("initial_rate_per_day") * (0.4 + 0.6 * uniform(seed, "user_index", 42)))
        .otherwise(0.0)
        .alias("reengage_rate_per_day"),
        (F.col("tau_days") * params.reengage_tau_factor).alias("reengage_tau_days"),
    ).drop("reengages")
    # Expected number of sessions from each part of the intensity over [join_day, days).
    decay_mass = F.col("initial_rate_per_day") * F.col("tau_days") * (1 - F.exp(-(days - F.col("join_day")) / F.col("tau_days")))
    floor_mass = F.col("floor_rate_per_day") * (days - F.col("join_day"))
    reengage_mass = F.coalesce(
        F.col("reengage_rate_per_day")
        * F.col("reengage_tau_days")
        * (1 - F.exp(-(days - F.col("reengage_day")) / F.col("reengage_tau_days"))),
        F.lit(0.0),
    )
    return (
        users.withColumn("decay_mass", decay_mass)
        .withColumn("floor_mass", floor_mass)
        .withColumn("reengage_mass", reengage_mass)
        .withColumn("expected_sessions", F.col("decay_mass") + F.col("floor_mass") + F.col("reengage_mass"))
        .withColumn("n_sessions", _poisson(seed, F.col("expected_sessions")))
        .withColumn("half_life_days", F.col("tau_days") * math.log(2))
    )


def _poisson(seed: int, mean: Column) -> Column:
    """An exact Poisson(mean) draw: unit-rate exponential arrivals counted until they pass ``mean``."""
    bound = F.least(F.ceil(mean + 6 * F.sqrt(mean) + 6), F.lit(MAX_SESSIONS_PER_USER)).cast("int")

    def arrive(acc: Column, i: Column) -> Column:
        total = acc["total"] - F.log(uniform(seed, "user_index", 70, i))
        return F.when(total < mean, F.struct(total.alias("total"), (acc["n"] + 1).alias("n"))).otherwise(
            F.struct(F.lit(float("inf")).alias("total"), acc["n"].alias("n"))
        )

    start = F.struct(F.lit(0.0).alias("total"), F.lit(0).alias("n"))
    return F.aggregate(F.sequence(F.lit(1), bound), start, arrive)["n"]


def synthetic_events(truth: DataFrame, params: ShopProfile) -> DataFrame:
    """Events (generator preset columns) for the users of ``truth`` (from :func:`user_truth`)."""
    seed, days = params.seed, float(params.days)
    sessions = truth.where(F.col("n_sessions") > 0).select("*", F.explode(F.sequence(F.lit(1), F.col("n_sessions"))).alias("session_no"))
    # Which part of the intensity this session came from, then its time by inverse CDF.
    pick = uniform(seed, "user_index", "session_no", 80) * F.col("expected_sessions")
    v = uniform(seed, "user_index", "session_no", 81)
    tau = F.col("tau_days")

    def decayed_time(origin: Column, tau: Column) -> Column:
        span = days - origin
        return origin - tau * F.log(1 - v * (1 - F.exp(-span / tau)))

    day = (
        F.when(pick < F.col("decay_mass"), decayed_time(F.col("join_day"), tau))
        .when(pick < F.col("decay_mass") + F.col("floor_mass"), F.col("join_day") + v * (days - F.col("join_day")))
        .otherwise(decayed_time(F.col("reengage_day"), F.col("reengage_tau_days")))
    )
    # Category preference drifts from the early to the late favourite over the user's tenure.
    drift = (F.col("day") - F.col("join_day")) / (days - F.col("join_day"))
    explore = uniform(seed, "user_index", "session_no", 82) < 0.15
    category_index = (
        F.when(explore, F.floor(uniform(seed, "user_index", "session_no", 83) * params.n_categories).cast("int"))
        .when(uniform(seed, "user_index", "session_no", 84) < drift, F.col("late_category_index"))
        .otherwise(F.col("early_category_index"))
    )
    p_more_views = 1 - 1 / params.views_per_session
    n_views = 1 + F.floor(F.log(uniform(seed, "user_index", "session_no", 85)) / math.log(p_more_views)).cast("int")
    session_start = F.lit(params.start_date).cast("timestamp").cast("long") + F.floor(F.col("day") * 86_400).cast("long")

    views = (
        sessions.withColumn("day", day)
        .select(
            "user_index",
            "user_id",
            "session_no",
            session_start.alias("session_start_s"),
            category_index.alias("category_index"),
            F.explode(F.sequence(F.lit(1), F.least(n_views, F.lit(50)))).alias("view_no"),
        )
        .withColumn("draw", F.concat_ws("-", "user_index", "session_no", "view_no"))
    )
    carted = uniform(seed, "draw", 90) < params.cart_probability
    removed = carted & (uniform(seed, "draw", 91) < params.remove_probability)
    bought = carted & ~removed & (uniform(seed, "draw", 92) < params.purchase_probability)
    types = F.array_compact(F.array(F.lit("view"), F.when(carted, "cart"), F.when(removed, "remove_from_cart"), F.when(bought, "purchase")))
    # Popular products are drawn more often (u^2 skews towards index 0).
    product_rank = F.floor(F.pow(uniform(seed, "draw", 93), 2) * params.products_per_category).cast("long")
    product_id = F.col("category_index").cast("long") * 100_000 + product_rank
    view_offset_s = (F.col("view_no") - 1) * 150 + F.floor(uniform(seed, "draw", 94) * 100).cast("long")

    events = views.select(
        "user_id",
        "user_index",
        "session_no",
        "view_no",
        product_id.alias("product_id"),
        category_name(F.col("category_index")).alias("category"),
        (F.col("session_start_s") + view_offset_s).alias("view_time_s"),
        F.posexplode(types).alias("step", "event_type"),
    )
    price = F.round(F.exp(2.8 + 0.9 * standard_normal(seed, "product_id", 95)), 2)
    return events.select(
        F.format_string("e%d-%d-%d-%d", "user_index", "session_no", "view_no", "step").alias("event_id"),
        "user_id",
        F.timestamp_seconds(F.col("view_time_s") + F.col("step") * 25).alias("event_time"),
        "event_type",
        "product_id",
        "category",
        price.alias("price"),
    )


def truth_table(truth: DataFrame, params: ShopProfile) -> DataFrame:
    """The truth written beside the events: parameters in calendar time, one row per user."""
    start_s = F.lit(params.start_date).cast("timestamp").cast("long")

    def at(day_col: str) -> Column:
        return F.timestamp_seconds(start_s + F.floor(F.col(day_col) * 86_400).cast("long"))

    return truth.select(
        "user_id",
        at("join_day").alias("joined_at"),
        "initial_rate_per_day",
        "tau_days",
        "half_life_days",
        "floor_rate_per_day",
        at("reengage_day").alias("reengaged_at"),
        "reengage_rate_per_day",
        "reengage_tau_days",
        category_name(F.col("early_category_index")).alias("early_category"),
        category_name(F.col("late_category_index")).alias("late_category"),
        "expected_sessions",
        "n_sessions",
        F.lit(params.seed).alias("seed"),
    )
