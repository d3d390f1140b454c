from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from interest_decay.contract import EVENT_TYPES, Table
from interest_decay.features.synthetic import synthetic_events, user_truth
from interest_decay.jobs import generate
from interest_decay.jobs.common.config import GeneratorSettings, Settings, load_settings

PARAMS = GeneratorSettings(users=400, days=60, seed=7, start_date=dt.date(2026, 3, 1))


def _events(spark: SparkSession, params: GeneratorSettings, partitions: int) -> DataFrame:
    return synthetic_events(user_truth(spark.range(params.users, numPartitions=partitions), params), params)


@pytest.fixture(scope="module")
def generated(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    root = tmp_path_factory.mktemp("generated")
    settings = load_settings(
        None,
        [
            f"lakehouse={root / 'lakehouse'}",
            f"generator.output={root / 'raw'}",
            "generator.users=400",
            "generator.days=60",
            "generator.seed=7",
            "generator.start_date=2026-03-01",
            "generator.output_files=2",
        ],
    )
    summary = generate.run(spark, settings)
    return settings, summary.as_dict()


def test_same_seed_same_events_whatever_the_partitioning(spark: SparkSession) -> None:
    assertDataFrameEqual(_events(spark, PARAMS, partitions=1), _events(spark, PARAMS, partitions=3))


def test_another_seed_gives_other_users_and_events(spark: SparkSession) -> None:
    other = PARAMS.model_copy(update={"seed": 8})
    taus = user_truth(spark.range(50), PARAMS).select("user_id", "tau_days")
    other_taus = user_truth(spark.range(50), other).select("user_id", F.col("tau_days").alias("other_tau"))
    assert taus.join(other_taus, "user_id").where(F.col("tau_days") == F.col("other_tau")).count() == 0
    assert _events(spark, PARAMS, 2).exceptAll(_events(spark, other, 2)).count() > 0


def test_job_writes_events_and_truth_and_summarises(spark: SparkSession, generated: tuple[Settings, dict]) -> None:
    settings, summary = generated
    events = spark.read.parquet(summary["outputs"]["events"])
    truth = spark.read.format("delta").load(settings.table_path(Table.TRUTH))
    assert events.columns == ["event_id", "user_id", "event_time", "event_type", "product_id", "category", "price"]
    assert summary["stage"] == "generate"
    assert summary["counts"] == {"users": 400, "events": events.count()}
    assert truth.count() == 400
    assert truth.select("user_id").distinct().count() == 400
    runs = spark.read.format("delta").load(f"{settings.lakehouse}/_runs").where("stage = 'generate'")
    assert runs.select("run_id").first()["run_id"] == summary["run_id"]


def test_every_user_has_exactly_the_sessions_the_truth_says(spark: SparkSession, generated: tuple[Settings, dict]) -> None:
    settings, summary = generated
    events = spark.read.parquet(summary["outputs"]["events"])
    truth = spark.read.format("delta").load(settings.table_path(Table.TRUTH))
    # event_id is e<user>-<session>-<view>-<step>: count distinct sessions per user.
    sessions = (
        events.select("user_id", F.split("event_id", "-")[1].alias("session_no"))
        .distinct()
        .groupBy("user_id")
        .agg(F.count("*").cast("int").alias("n_sessions"))
    )
    expected = truth.where("n_sessions > 0").select("user_id", "n_sessions")
    assertDataFrameEqual(sessions, expected)


def test_the_truths_expected_visits_add_up_to_the_generators_own(spark: SparkSession, generated: tuple[Settings, dict]) -> None:
    """The evaluation's closed form of the process that drew the sessions, over the whole
    generated period, is the truth table's expected_sessions (which the generator's Poisson
    draws come from), win-backs included; two halves add up to the whole."""
    from interest_decay.model.reference import generator_expected_visits

    settings, _ = generated
    truth = spark.read.format("delta").load(settings.table_path(Table.TRUTH)).toPandas()
    assert truth["reengaged_at"].notna().any() and truth["reengaged_at"].isna().any()
    start = dt.datetime(2026, 3, 1)
    whole = generator_expected_visits(truth, start, 60.0)
    assert whole == pytest.approx(truth["expected_sessions"].to_numpy(), rel=1e-4)
    first = generator_expected_visits(truth, start, 30.0)
    second = generator_expected_visits(truth, start + dt.timedelta(days=30), 30.0)
    assert first + second == pytest.approx(whole, rel=1e-6)


def test_events_are_well_formed(spark: SparkSession, generated: tuple[Settings, dict]) -> None:
    _, summary = generated
    events = spark.read.parquet(summary["outputs"]["events"])
    start = dt.datetime(2026, 3, 1)
    bounds = events.agg(F.min("event_time").alias("first"), F.max("event_time").alias("last")).first()
    assert bounds["first"] >= start
    assert bounds["last"] < start + dt.timedelta(days=61)  # a session may run a few minutes past the last day
    assert {r["event_type"] for r in events.select("event_type").distinct().collect()} <= set(EVENT_TYPES)
    assert events.where("price <= 0 OR price IS NULL").count() == 0
    assert events.select("event_id").distinct().count() == events.count()
    counts = {r["event_type"]: r["count"] for r in events.groupBy("event_type").count().collect()}
    assert counts["purchase"] + counts["remove_from_cart"] <= counts["cart"] < counts["view"]


def test_truth_half_life_and_decay_show_in_the_events(spark: SparkSession, generated: tuple[Settings, dict]) -> None:
    settings, summary = generated
    truth = spark.read.format("delta").load(settings.table_path(Table.TRUTH))
    row = truth.first()
    assert row["half_life_days"] == pytest.approx(row["tau_days"] * math.log(2))
    events = spark.read.parquet(summary["outputs"]["events"])
    # Users whose interest fades slowly keep coming back for longer after they join.
    spread = (
        events.join(truth, "user_id")
        .groupBy("user_id", "tau_days")
        .agg(F.avg((F.col("event_time").cast("long") - F.col("joined_at").cast("long")) / 86_400).alias("days_after_join"))
        .join(truth.where("reengaged_at IS NULL AND n_sessions >= 4"), ["user_id", "tau_days"])
    )
    assert spread.count() > 50
    assert spread.stat.corr("tau_days", "days_after_join") > 0.3


def test_csv_output_has_a_header(spark: SparkSession, tmp_path: Path) -> None:
    settings = load_settings(
        None,
        [f"lakehouse={tmp_path / 'lh'}", f"generator.output={tmp_path / 'raw'}", "generator.users=20", "generator.format=csv"],
    )
    summary = generate.run(spark, settings)
    frame = spark.read.option("header", True).csv(summary.outputs["events"])
    assert frame.columns == ["event_id", "user_id", "event_time", "event_type", "product_id", "category", "price"]
    assert frame.count() == summary.counts["events"]


def test_the_identifiable_profile_lets_a_per_user_fit_recover_the_time_constant(spark: SparkSession) -> None:
    """conf/identifiable.yaml's shop: the generator's own process fitted to each user by maximum
    likelihood, from the sessions before day 88, ranks the users' true time constants well."""
    from scipy.stats import spearmanr

    from interest_decay.features.sessions import session_offsets, session_starts
    from interest_decay.model.reference import fit_decay_mle

    params = load_settings(Path(__file__).resolve().parent.parent / "conf" / "identifiable.yaml").generator
    params = params.model_copy(update={"users": 600})
    truth = user_truth(spark.range(params.users, numPartitions=2), params)
    as_of = dt.datetime(2026, 3, 30)
    offsets = session_offsets(session_starts(synthetic_events(truth, params)), as_of).toPandas()
    fit = fit_decay_mle([o for o in offsets["offsets_days"]], offsets["span_days"].to_numpy())
    tau = truth.select("user_id", "tau_days", "reengage_tau_days").toPandas().set_index("user_id").loc[offsets["user_id"]]
    assert len(offsets) > 550  # nearly everyone joined and had a session by day 88
    assert (tau["reengage_tau_days"] == tau["tau_days"]).all()  # recorded, and the same time constant
    assert spearmanr(fit.tau_days, tau["tau_days"]).statistic > 0.8
