"""Scoring with the pandas UDF: equal to one-process predictions, exactly once, refusals, a killed run."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from interest_decay.contract import STATIC_FEATURES, Artifact, Table
from interest_decay.jobs import score
from interest_decay.jobs.common import scoring
from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.models import check_model_fits, checked_version, resolve_model
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.tables import latest_version, slice_predicate, table_exists
from interest_decay.model.data import arrays, flat_columns
from interest_decay.model.metadata import read_metadata
from interest_decay.model.scoring import feature_groups, load_scorer, risk_tier, typical_user

from shops import LOCAL, TrainedShop


def test_tiers_actions_and_fading_categories_follow_the_rules(spark: SparkSession) -> None:
    """The Spark tiers equal model.scoring.risk_tier (the report's), and each action rule fires."""
    settings = load_settings(LOCAL)
    interest = "ARRAY<STRUCT<rank: INT, category: STRING, recent_share: DOUBLE, earlier_share: DOUBLE>>"
    users = spark.createDataFrame(
        [
            ("fading_shoes", 0.10, 0.0, [(1, "shoes", 0.1, 0.5), (2, "hats", 0.4, 0.45)]),
            ("buyer", 0.20, 3.0, [(1, "books", 0.5, 0.4)]),
            ("quiet", 0.29, 0.0, None),
            ("wavering", 0.50, 1.0, [(1, "shoes", 0.0, 0.9)]),
            ("loyal", 0.90, 5.0, None),
            ("loyal_but_fading_fast", 0.80, 5.0, None),
        ],
        f"user_id STRING, p_active_30d DOUBLE, purchases DOUBLE, top_categories {interest}",
    )
    purchases = STATIC_FEATURES.index("total_purchases")
    half_life = {"fading_shoes": 40.2, "buyer": 3.0, "quiet": 500.0, "wavering": 12.9, "loyal": 30.0, "loyal_but_fading_fast": 4.5}
    scores = users.select(
        "user_id",
        "p_active_30d",
        F.array(*[F.col("purchases") if i == purchases else F.lit(0.0) for i in range(len(STATIC_FEATURES))]).alias("static"),
        scoring.decaying_categories(F.col("top_categories"), 0.15).alias("top_decaying_categories"),
        F.create_map(*[F.lit(v) for kv in half_life.items() for v in kv])[F.col("user_id")].alias("silence_half_life_days"),
    )
    as_of = dt.date(2026, 3, 30)
    tiered = scoring.with_tier_and_action(scores, settings, (0.3, 0.6), as_of).select(
        "user_id", "top_decaying_categories", "risk_tier", "action", "act_by"
    )
    day = lambda n: as_of + dt.timedelta(days=n)  # noqa: E731
    expected = spark.createDataFrame(
        [
            ("fading_shoes", ["shoes"], "high", "recommend_category:shoes", day(30)),  # (its half-life, at most the longest horizon)
            ("buyer", [], "high", "coupon", day(3)),
            ("quiet", [], "high", "win_back", day(30)),
            ("wavering", ["shoes"], "medium", "reminder", day(12)),
            ("loyal", [], "low", "none", None),
            ("loyal_but_fading_fast", [], "low", "reminder", day(4)),  # score.fading_fast_days: 7
        ],
        tiered.schema,
    )
    assertDataFrameEqual(tiered, expected)
    spark_tiers = {r["user_id"]: r["risk_tier"] for r in tiered.collect()}
    p_by_user = {r["user_id"]: r["p_active_30d"] for r in users.collect()}
    numpy_tiers = risk_tier(np.array(list(p_by_user.values())), 0.3, 0.6)
    assert dict(zip(p_by_user, numpy_tiers.tolist(), strict=True)) == spark_tiers


def _scores(spark: SparkSession, settings: Settings):  # noqa: ANN202
    return spark.read.format("delta").load(settings.table_path(Table.SCORES))


def test_scores_equal_single_process_predictions(spark: SparkSession, shop: TrainedShop) -> None:
    settings = shop.settings()
    summary = score.run(spark, settings)
    as_of = summary.inputs["as_of_date"]
    view = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES)).where(F.col("as_of_date") == as_of)
    frame = view.selectExpr(*flat_columns(settings.horizons_days)).toPandas().sort_values("user_id")
    inputs, _ = arrays(frame, n_windows=12, n_window_features=12, n_static=5, horizons_days=settings.horizons_days)
    scorer = load_scorer(summary.inputs["model"])
    expected = scorer(inputs)
    actual = _scores(spark, settings).orderBy("user_id").toPandas()
    assert list(actual["user_id"]) == list(frame["user_id"])
    for i, h in enumerate(settings.horizons_days):
        for bound in ("", "_low", "_high"):
            np.testing.assert_allclose(actual[f"p_active_{h}d{bound}"], expected[f"p_active{bound}"][:, i], rtol=1e-5)
            np.testing.assert_allclose(actual[f"expected_visits_{h}d{bound}"], expected[f"expected_visits{bound}"][:, i], rtol=1e-5)
        assert (actual[f"p_active_{h}d_low"] <= actual[f"p_active_{h}d"]).all() and (
            actual[f"p_active_{h}d"] <= actual[f"p_active_{h}d_high"]
        ).all()
        # One distribution gives both: the chance of a visit is below the expected visits (and below 1).
        assert (actual[f"p_active_{h}d"] <= np.minimum(actual[f"expected_visits_{h}d"], 1.0) + 1e-6).all()
    for name in ("return_median_days", "interest_half_life_days", "baseline_visits_per_30d", "interest_now", "p_alive", "dropout_share"):
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-4)
    np.testing.assert_allclose(np.stack(actual["decay_curve"]), expected["decay_curve"], rtol=1e-5)
    assert summary.counts["scored"] == summary.counts["users"] == len(frame)
    # Quantile tiers: the least likely fifth is high risk, the next 30% medium (give or take ties).
    shares = actual["risk_tier"].value_counts(normalize=True)
    assert shares["high"] == pytest.approx(0.2, abs=0.02) and shares["medium"] == pytest.approx(0.3, abs=0.02)
    assert actual["action"].str.match(r"^(recommend_category:.+|coupon|win_back|reminder|none)$").all()
    # Drivers: known feature names, their effects positive and largest first, three at most.
    groups = feature_groups(scorer.feature_spec["window_features"], scorer.feature_spec["static_features"])
    # Every feature is a group of its own: the static tenure is not hidden by the windows' tenure.
    assert len(groups) == len(scorer.feature_spec["window_features"]) + len(scorer.feature_spec["static_features"])
    assert {"tenure_days", "tenure_days_now", "recency_days"} <= set(groups)
    assert all(
        set(names) <= set(groups) and len(names) == len(effects) <= 3
        for names, effects in zip(actual["drivers"], actual["driver_effects"], strict=False)
    )
    assert all(list(e) == sorted(e, reverse=True) and all(v > 0 for v in e) for e in actual["driver_effects"])
    assert (actual["drivers"].map(len) > 0).mean() > 0.5
    # What a driver says, checked by scoring again: putting the typical user's value in place of
    # a user's first driver raises their P(active) more than putting it in place of their third.
    longest = list(scorer.feature_spec["horizons_days"]).index(max(settings.horizons_days))
    typical_x, typical_static = typical_user(scorer.metadata)
    replacement = {
        "x": np.where(inputs["mask"][..., None] > 0, typical_x, 0.0),
        "static": np.broadcast_to(typical_static, inputs["static"].shape),
    }
    base = scorer.p_active(inputs)[:, longest]
    three = [i for i, names in enumerate(actual["drivers"]) if len(names) == 3][:50]
    assert len(three) >= 10
    for rank in (0, 2):
        moved = {}
        for i in three:
            name = actual["drivers"][i][rank]
            one = {k: v[i : i + 1] for k, v in inputs.items()}
            changed = groups[name](one, {k: v[i : i + 1] for k, v in replacement.items()})
            moved[i] = float(scorer.p_active(changed)[0, longest] - base[i])
        if rank == 0:
            first = moved
        else:
            assert all(first[i] > moved[i] for i in three)
            np.testing.assert_allclose([first[i] for i in three], [actual["driver_effects"][i][0] for i in three], atol=1e-3)


def test_rescoring_by_alias_or_run_id_replaces_the_same_slice_exactly_once(spark: SparkSession, shop: TrainedShop) -> None:
    """The newest model, the registry's champion alias and the MLflow run id name one model, so
    each re-run replaces the same (as_of_date, model_version) slice with the same rows."""
    settings = shop.settings()
    newest = score.run(spark, settings)
    before = _scores(spark, settings).drop("scored_at").orderBy("user_id").collect()
    by_alias = score.run(spark, settings, model="models:/interest-decay@champion")
    by_run = score.run(spark, settings, model=f"runs:/{newest.inputs['model_version']}")
    assert by_alias.inputs["model_version"] == by_run.inputs["model_version"] == newest.inputs["model_version"]
    after = _scores(spark, settings)
    assert after.count() == after.select("user_id", "as_of_date", "model_version").distinct().count() == newest.counts["scored"]
    assert after.drop("scored_at").orderBy("user_id").collect() == before
    assert by_run.counts == by_alias.counts == newest.counts


def test_a_scores_table_written_by_an_older_version_gains_the_new_columns(spark: SparkSession, shop: TrainedShop) -> None:
    settings = shop.settings()
    score.run(spark, settings)
    path = settings.table_path(Table.SCORES)
    older = _scores(spark, settings).drop("interest_half_life_days", "drivers")  # as the previous release wrote it
    older.write.format("delta").mode("overwrite").option("overwriteSchema", "true").partitionBy("as_of_date").save(path)
    summary = score.run(spark, settings)
    after = _scores(spark, settings)
    assert "interest_half_life_days" in after.columns
    assert after.count() == after.where(F.col("interest_half_life_days").isNotNull()).count() == summary.counts["scored"]


@pytest.mark.slow
def test_two_score_runs_at_once_for_different_dates_both_land(spark: SparkSession, shop: TrainedShop, tmp_path: Path) -> None:
    """Two score jobs on one lakehouse at the same time (each its own session), before any
    scores table exists: one creates it, the other loses that race, retries and replaces its own
    slice. Each date holds its users once."""
    settings = shop.copy(tmp_path, leave_out=("scores",))
    view = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES))
    dates = [r["as_of_date"] for r in view.select("as_of_date").distinct().orderBy(F.desc("as_of_date")).limit(2).collect()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(score.run, spark.newSession(), settings, as_of) for as_of in dates]
        summaries = [run.result() for run in runs]

    per_date = view.where(F.col("as_of_date").isin(dates)).groupBy("as_of_date").count()
    assertDataFrameEqual(_scores(spark, settings).groupBy("as_of_date").count(), per_date)
    assert _scores(spark, settings).select("as_of_date", "user_id").distinct().count() == sum(s.counts["scored"] for s in summaries)
    mine = sorted(s.run_id for s in summaries)
    recorded = spark.read.format("delta").load(settings.table_path(Table.RUNS)).where(F.col("run_id").isin(mine)).select("run_id")
    assert sorted(r["run_id"] for r in recorded.collect()) == mine  # each run recorded once


def test_a_model_that_does_not_fit_the_view_is_refused(spark: SparkSession, shop: TrainedShop) -> None:
    settings = shop.settings("features.n_windows=6")
    path = settings.table_path(Table.SCORES)
    version = latest_version(spark, path) if table_exists(spark, path) else None
    # The view was built with 12 windows: scoring with 6 is refused before anything is read.
    with pytest.raises(ValueError, match=r"built with other settings \(n_windows: 12 there, 6 now\): run `interest-decay features`"):
        score.run(spark, settings)
    assert (latest_version(spark, path) if table_exists(spark, path) else None) == version
    # And a model whose features are not the view's is refused by name.
    metadata = read_metadata(shop.trained.outputs["model"])
    with pytest.raises(ValueError, match=r"does not fit the view: n_windows: model has 12, the view has 6"):
        check_model_fits(settings, metadata, "v1")


@pytest.mark.slow
def test_a_run_killed_while_writing_its_files_leaves_the_table_as_it_was(spark: SparkSession, shop: TrainedShop) -> None:
    """SIGKILL to the CLI and its JVM once the first data file of the new slice is on disk (so
    the kill lands between the writing and the commit, never before anything is written): the
    table reads as before, the orphaned files are not in it, and the rerun writes the slice once."""
    settings = shop.settings()
    path = settings.table_path(Table.SCORES)

    def data_files() -> set[Path]:  # none while the table folder does not exist yet
        return set(Path(path).rglob("*.parquet"))

    before_files = data_files()
    version = latest_version(spark, path) if table_exists(spark, path) else None
    rows_before = sorted(_scores(spark, settings).collect()) if version is not None else []
    command = [
        str(Path(sys.executable).parent / "interest-decay"),
        "score",
        "--conf",
        str(LOCAL),
        "--set",
        f"lakehouse={shop.root / 'lakehouse'}",
        "--set",
        "spark.master=local[2]",
        "--set",
        "spark.conf.spark.driver.memory=1g",
        "--set",
        "score.arrow_batch_size=20",
    ]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while not data_files() - before_files and process.poll() is None:
        assert time.monotonic() < deadline, "the score run wrote no data file in 4 minutes"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL  # killed, not finished
    assert data_files() - before_files  # orphaned files: the kill came after the writing began
    assert (latest_version(spark, path) if table_exists(spark, path) else None) == version
    assert (sorted(_scores(spark, settings).collect()) if version is not None else []) == rows_before
    finished = score.run(spark, settings)
    written = (F.col("as_of_date") == finished.inputs["as_of_date"]) & (F.col("model_version") == finished.inputs["model_version"])
    assert _scores(spark, settings).where(written).count() == finished.counts["scored"] > 0


def test_a_model_folder_with_a_quote_in_its_name_scores_under_its_recorded_version(
    spark: SparkSession, shop: TrainedShop, tmp_path: Path
) -> None:
    """The slice's model_version comes from the model's metadata, never from a folder name pasted
    into SQL; a version that is not a plain name is refused before anything is written."""
    settings = shop.settings()
    trained = shop.trained.outputs["model"]
    renamed = tmp_path / "x' OR '1'='1"
    shutil.copytree(trained, renamed)
    uri, version = resolve_model(spark, settings, str(renamed))
    assert (uri, version) == (str(renamed), shop.trained.outputs["mlflow_run_id"])
    # A run or an alias names the model published in the lakehouse, which every executor reads
    # (never a copy downloaded to the driver's disk).
    published = Storage.for_settings(settings).uri(Artifact.MODELS, version)
    assert resolve_model(spark, settings, f"runs:/{version}") == (published, version)
    assert resolve_model(spark, settings, "models:/interest-decay@champion") == (published, version)
    assert slice_predicate(dt.date(2026, 3, 30), version) == f"as_of_date = DATE'2026-03-30' AND model_version = '{version}'"
    with pytest.raises(ValueError, match="is not a model version"):
        slice_predicate(dt.date(2026, 3, 30), "x' OR '1'='1")
    with pytest.raises(ValueError, match="is not a model version"):
        checked_version("x' OR '1'='1", "the folder name")
