"""The evaluation job on a small generated shop, and the report with every section drawn."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Table
from interest_decay.jobs import evaluate
from interest_decay.jobs.common.config import EvaluateSettings, Settings
from interest_decay.jobs.common.report import SECTIONS, ReportData, write_report
from interest_decay.jobs.common.runs import RunSummary
from interest_decay.jobs.common.views import view_arrays
from interest_decay.model.data import flat_columns
from interest_decay.model.evaluated import Evaluated, interest_by_recency, model_outputs_from, visit_accuracy_by_history, visit_checks
from interest_decay.model.evaluation import METHODS, Predictions
from interest_decay.model.scoring import load_scorer

from shops import TrainedShop


def _report_data(with_latent: bool) -> ReportData:
    rng = np.random.default_rng(0)
    n = 300
    labels = (rng.random(n) < 0.4).astype(float)
    predictions = {m: np.clip(0.4 + 0.3 * (labels - 0.4) + rng.normal(0, 0.2, n), 0.01, 0.99) for m in METHODS}
    comparison = pd.DataFrame(
        [
            {
                "method": m,
                "horizon_days": 30,
                "status": "ok",
                "failure": "",
                "roc_auc": 0.7,
                "pr_auc": 0.6,
                "brier": 0.2,
                "ece": 0.05,
                "precision_top_10": 0.5,
                "recall_top_10": 0.1,
                "lift_top_10": 1.3,
                "predicted_returners": 120.0,
                "actual_returners": 118.0,
                "model_auc_gain": 0.01,
                "model_auc_gain_low": 0.0,
                "model_auc_gain_high": 0.02,
            }
            for m in METHODS
        ]
    )
    failed = comparison["method"] == "pareto_nbd_p_alive"
    comparison.loc[failed, ["status", "failure", "roc_auc"]] = ["failed", "RuntimeError: pareto_nbd did not fit on 300 users", np.nan]
    days = np.linspace(0, 90, 31)
    return ReportData(
        title="test report",
        facts={"users evaluated": n},
        comparison=comparison,
        cross_validation=comparison[["method", "horizon_days", "roc_auc"]].assign(origins=2),
        horizon=30,
        labels=labels,
        predictions=predictions,
        probability_methods=[m for m, p in METHODS.items() if p],
        curve_days=days,
        survival=np.exp(-days[None, :] / rng.uniform(5, 50, (n, 1))),
        tiers=rng.choice(["high", "medium", "low"], n),
        half_life_days=rng.uniform(2, 40, n),
        latent_2d=rng.normal(size=(n, 2)) if with_latent else None,
        importance=pd.DataFrame({"feature": ["recency_days", "sessions"], "auc_drop": [0.1, 0.01], "auc_drop_sd": [0.01, 0.005]}),
        explained_users=pd.DataFrame({"user_id": ["u1"], "p_active_30d": [0.1], "driver_1": ["recency_days (+0.200)"]}),
        days_to_return=np.where(labels > 0, rng.uniform(0, 30, n), np.inf),
        truth_tau_days=rng.uniform(3, 60, n),
        notes=["origin 2026-01-19 skipped: too little history"],
        visits_calibration=pd.DataFrame(
            {
                "decile": np.tile(np.arange(1, 11), 2),
                "predicted": np.arange(20.0),
                "observed": np.arange(20.0) + 1,
                "days": np.repeat([14, 28], 10),
            }
        ),
        decay_check=pd.DataFrame(
            {
                "decile": np.arange(1, 11),
                "median_half_life_days": np.geomspace(1, 60, 10),
                "predicted_ratio": np.linspace(0.1, 0.9, 10),
                "observed_ratio": np.linspace(0.15, 0.85, 10),
                "first_days": "0-14",
                "second_days": "14-28",
            }
        ),
        truth_by_sessions=pd.DataFrame(
            {"past_sessions": ["all", "1"], "users": [300, 20], "model": [0.8, 0.3], "reference_mle": [0.85, 0.2]}
        ),
    )


@pytest.mark.parametrize("with_latent", [True, False])
def test_report_renders_every_section(tmp_path: Path, with_latent: bool) -> None:
    index = write_report(_report_data(with_latent), tmp_path)
    page = index.read_text()
    assert [s for s in SECTIONS if f'<section id="{s}">' not in page] == []
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == (11 if with_latent else 10)
    for name in images:
        picture = matplotlib.image.imread(tmp_path / name)
        assert picture.shape[0] > 300 and picture.shape[1] > 400
        assert picture[..., :3].std() > 0.01  # something was drawn
    assert "too little history" in page and "recency_days (+0.200)" in page
    assert "RuntimeError: pareto_nbd did not fit on 300 users" in page


# What the shared shop's model measured when the model last changed on purpose (the shop, the
# seeds and the settings are fixed, so a run differs from it by float noise and thread timing):
# a change that moves a figure past its tolerance is a regression, or a model change whose new
# figures go here with the reason. Measured 2026-12-03 on the mixture head (one draw: train.use_vae false).
# On this small, hard shop the half-life does not track the truth (the per-user maximum-likelihood
# reference reaches about 0.1); where it does is measured on the identifiable shop (docs/results).
PREVIOUS = {"model_auc_30d": 0.75}
PREVIOUS_TOLERANCE = {"model_auc_30d": 0.012}
# Margins against baselines fitted in the same run (measured: +0.046 over recency, +0.001 over LightGBM).
MARGIN = {"over_recency_30d": 0.02, "under_lightgbm_30d": 0.015}


@pytest.fixture(scope="module")
def settings(shop: TrainedShop) -> Settings:
    """The shared shop, its model trained until 2026-03-30 (local.yaml's train.until)."""
    return shop.settings()


@pytest.fixture(scope="module")
def evaluation(spark: SparkSession, settings: Settings) -> RunSummary:
    """One out-of-time evaluation of the shared shop's model, with its report."""
    return evaluate.run(spark, settings)


def test_evaluate_out_of_time_with_baselines_folds_and_report(spark: SparkSession, settings: Settings, evaluation: RunSummary) -> None:
    summary = evaluation
    assert summary.inputs["as_of_date"] == "2026-03-30" and summary.inputs["out_of_time"] is True
    table = spark.read.format("delta").load(settings.table_path(Table.EVALUATIONS))
    origin = str(dt.date(2026, 3, 30) - dt.timedelta(days=35))
    expected = {(fold, m, h) for fold in ("out_of_time", origin) for m in METHODS for h in (7, 14, 30)}
    assert {(r["fold"], r["method"], r["horizon_days"]) for r in table.collect()} == expected
    model_30d = table.where("fold = 'out_of_time' AND method = 'model' AND horizon_days = 30").first()
    assert model_30d["users"] == summary.counts["users"] > 1000
    # Against baselines fitted in the same run on the same users: well above the recency rule,
    # level with LightGBM; and against what this shop's model measured before.
    auc = {r["method"]: r["roc_auc"] for r in table.where("fold = 'out_of_time' AND horizon_days = 30").collect()}
    assert auc["model"] >= auc["recency_rule"] + MARGIN["over_recency_30d"]
    assert auc["model"] >= auc["lightgbm"] - MARGIN["under_lightgbm_30d"]
    assert auc["model"] == pytest.approx(PREVIOUS["model_auc_30d"], abs=PREVIOUS_TOLERANCE["model_auc_30d"])
    assert 0 < model_30d["brier"] < 0.22
    assert {r["status"] for r in table.collect()} == {"ok"} and "failed baselines" not in summary.metrics
    gains = table.where("fold = 'out_of_time' AND horizon_days = 30").toPandas().set_index("method")
    assert gains.loc["model", ["model_auc_gain", "model_auc_gain_low"]].isna().all()
    recency = gains.loc["recency_rule"]
    assert recency["model_auc_gain"] == pytest.approx(model_30d["roc_auc"] - recency["roc_auc"])
    assert recency["model_auc_gain_low"] <= recency["model_auc_gain"] <= recency["model_auc_gain_high"]
    # (measured: 833 for 915, -9%; the curve falls a little too fast past two weeks on generated shops)
    assert summary.metrics["predicted_returners_30d"] == pytest.approx(summary.metrics["actual_returners_30d"], rel=0.12)
    index = Path(summary.outputs["report"])
    assert index.is_file() and all(f'id="{s}"' in index.read_text() for s in SECTIONS)
    # Every evaluated user was matched to the generator's truth (ids are not pseudonymised here),
    # and the per-user maximum-likelihood reference was fitted next to the model.
    truth = pd.read_csv(index.parent / "half_life_vs_truth.csv").set_index("past_sessions")
    assert truth.loc["all", "users"] == summary.counts["users"]
    assert truth.loc["all", "model"] == pytest.approx(summary.metrics["interest_half_life_spearman_vs_truth"], abs=1e-4)
    assert truth.loc["all", "reference_mle"] == pytest.approx(summary.metrics["reference_mle_spearman_vs_truth"], abs=1e-4)
    # No band on the model's half-life ranking against the truth on this hard profile (re-engagement,
    # a high floor, few sessions): three runs of the same code gave -0.21, -0.03 and 0.20 (1,464 users,
    # one standard error about 0.03), so the spread is the model's, from run to run, not sampling. The
    # per-user maximum-likelihood fit ranks them at about 0.1. What holds is asserted above and below.
    # Expected visits over the next 2 and 4 weeks by decile, and the decay check, from the observed weeks.
    visits = pd.read_csv(index.parent / "expected_visits.csv")
    assert sorted(visits["days"].unique()) == [14, 28] and (visits.groupby("days")["users"].sum() == summary.counts["users"]).all()
    assert summary.metrics["visits_predicted_over_observed_28d"] == pytest.approx(1.0, abs=0.15)
    # On generated data each decile also gets what the generator's truth expects: the observed
    # visits are one draw around it, so over every user the two agree within Poisson noise.
    truth_visits = (visits["truth_expected"] * visits["users"]).groupby(visits["days"]).sum()
    # (Measured: 1,606 expected for 1,554 seen over 14 days, 2,893 for 2,832 over 28.)
    assert (truth_visits / visits.groupby("days")["observed_visits"].sum()).to_list() == pytest.approx([1.0, 1.0], abs=0.1)
    relative = (visits["predicted"] - visits["truth_expected"]) / visits["truth_expected"]
    pd.testing.assert_series_equal(visits["relative_error_vs_truth"], relative, check_names=False, rtol=1e-5, atol=1e-7)
    assert {"visits_calibration_max_error_vs_truth_14d", "visits_calibration_max_error_vs_truth_28d"} <= set(summary.metrics)
    # The checks that need no truth: each user's visits against the model's and Pareto/NBD's
    # expectations, the 80% count intervals, the decay curves by decile against Kaplan-Meier.
    accuracy = pd.read_csv(index.parent / "visit_accuracy.csv").set_index(["method", "horizon_days"])
    assert accuracy.loc[("model", 30), "users"] == summary.counts["users"]
    assert accuracy.loc[("model", 30), "mae"] < accuracy.loc[("pareto_nbd_expected_sessions", 30), "mae"]  # (measured: 1.48 against 2.05)
    by_history = pd.read_csv(index.parent / "visit_accuracy_by_history.csv", dtype={"past_visits": str})
    model_groups = by_history[(by_history["method"] == "model") & (by_history["horizon_days"] == 30)]
    assert model_groups["users"].sum() == summary.counts["users"]  # every user evaluated has visited at least once
    assert model_groups["share_of_error"].sum() == pytest.approx(1.0)
    assert (model_groups["users"] * model_groups["mae"]).sum() / model_groups["users"].sum() == pytest.approx(
        accuracy.loc[("model", 30), "mae"]
    )
    coverage = pd.read_csv(index.parent / "interval_coverage.csv")
    overall = coverage[(coverage["decile"] == "all") & (coverage["horizon_days"] == 30)].iloc[0]
    assert overall["coverage"] == pytest.approx(overall["promised"], abs=0.05) and 0.75 < overall["promised"] < 0.9
    curves = pd.read_csv(index.parent / "decay_curves_by_decile.csv")
    model_curves = curves[curves["method"] == "model"]
    assert sorted(model_curves["decile"].unique()) == list(range(1, 11))
    assert model_curves.groupby("decile")["users"].first().sum() == summary.counts["users"]
    assert summary.metrics["model_curve_max_gap_30d"] < summary.metrics["pareto_nbd_curve_max_gap_30d"]
    assert len(pd.read_csv(index.parent / "decay_check.csv")) == 10
    tiers = [summary.metrics[f"tier_{t}_users"] for t in ("high", "medium", "low")]
    assert sum(tiers) == summary.counts["users"] and tiers[0] == pytest.approx(0.2 * sum(tiers), abs=2)

    # The same evaluation again replaces its slice: nothing is duplicated.
    # (a smaller one: no rolling origin, 300 users, a short bootstrap; the slice is the same)
    smaller = {"folds": 0, "max_users": 300, "bootstrap_rounds": 20}
    again = evaluate.run(spark, settings.model_copy(update={"evaluate": settings.evaluate.model_copy(update=smaller)}))
    rows = spark.read.format("delta").load(settings.table_path(Table.EVALUATIONS))
    assert rows.count() == len(METHODS) * 3
    assert rows.select("evaluation_run_id").distinct().collect()[0][0] == again.run_id
    assert rows.where(F.col("as_of_date") != "2026-03-30").count() == 0
    # A sample of the users says so in the report, with the population it was drawn from.
    assert again.counts["users"] == 300
    assert f"300 of the {int(model_30d['users']):,} users at the date (a seeded sample" in Path(again.outputs["report"]).read_text()


def test_rolling_origins_are_left_out_above_a_size_and_the_report_says_so() -> None:
    conf = EvaluateSettings(folds=2, folds_max_users=1000)
    assert evaluate.rolling_origin_count(conf, 1000) == (2, [])
    count, notes = evaluate.rolling_origin_count(conf, 1001)
    assert count == 0 and notes == [
        "rolling origins left out: 1,001 users at the evaluation date, more than evaluate.folds_max_users (1,000); "
        "each origin retrains the model"
    ]
    assert evaluate.rolling_origin_count(EvaluateSettings(folds=0, folds_max_users=10), 50) == (0, [])


def test_evaluate_refuses_a_date_whose_labels_are_not_known(spark: SparkSession, settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"14-day label is not known yet for \d+ users"):
        evaluate.run(spark, settings, as_of=dt.date(2026, 4, 20))


def test_the_evaluation_scores_its_sample_with_the_scoring_udf_as_the_model_scores_it_in_process(
    spark: SparkSession, settings: Settings, shop: TrainedShop
) -> None:
    rows = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES)).where("as_of_date = '2026-03-30'")
    columns, available = flat_columns(settings.horizons_days), rows.count()
    model = shop.trained.outputs["model"]
    scored = evaluate._sample(rows, columns, 300, available, seed=1, model=evaluate.model_pass(spark, settings, model))
    outputs = model_outputs_from(scored)
    # The same rows, in the same order, as without the model; each with its own user's outputs.
    pd.testing.assert_frame_equal(scored, evaluate._sample(rows, columns, 300, available, seed=1))
    in_process = load_scorer(model)(view_arrays(scored, settings)[0])
    for name in ("decay_params", "interest_half_life_days", "return_median_days", "interest_now", *(["z"] if "z" in in_process else [])):
        np.testing.assert_allclose(outputs[name], in_process[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_decay_check_spans_the_first_four_windows_when_later_ones_are_not_observed(
    spark: SparkSession, settings: Settings, shop: TrainedShop
) -> None:
    rows = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES)).where("as_of_date = '2026-03-30'")
    columns = flat_columns(settings.horizons_days)
    sample = evaluate._sample(rows, columns, 200, rows.count(), seed=1)
    scorer = load_scorer(shop.trained.outputs["model"])
    outputs = scorer(view_arrays(sample, settings)[0])
    observed = np.random.default_rng(0).poisson(1.0, size=(len(sample), 4)).astype(np.float32)

    def checks(future_sessions: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        evaluated = Evaluated(
            as_of=dt.date(2026, 3, 30), user_ids=sample["user_id"].to_numpy(), inputs={}, labels={},
            predictions=Predictions([], {}), table=pd.DataFrame(), model_outputs=outputs, days_to_return=np.array([]),
            future_sessions=future_sessions, population=len(sample), history_rows=0,
        )  # fmt: skip
        return visit_checks(scorer, evaluated, settings.features.window_days)

    calibration, decay, metrics = checks(observed)
    assert len(decay) == 10 and set(decay["second_days"]) == {"14-28"}
    # A view labelled with eight windows, the last four past the end of the data at this date.
    later = checks(np.hstack([observed, np.full_like(observed, -1.0)]))
    pd.testing.assert_frame_equal(later[0], calibration)
    pd.testing.assert_frame_equal(later[1], decay)
    assert later[2] == metrics


def test_the_evaluated_sample_is_the_same_rows_with_or_without_the_hash_bound(spark: SparkSession) -> None:
    rows = spark.createDataFrame(
        [(f"u{i}", dt.date(2026, 1, 5 + 7 * d), i * 10 + d) for i in range(400) for d in range(3)],
        "user_id string, as_of_date date, value int",
    )
    columns = ["user_id", "as_of_date", "value"]
    plain = evaluate._sample(rows, columns, limit=100, available=200, seed=3)  # under twice the limit: the plain top-K
    assert len(plain) == 100 and plain["value"].is_unique
    # With the bound (a filter before the top-K), and with a count so overstated that the bound
    # lets too few rows through (then the plain top-K again): the same rows in the same order.
    pd.testing.assert_frame_equal(evaluate._sample(rows, columns, limit=100, available=1200, seed=3), plain)
    pd.testing.assert_frame_equal(evaluate._sample(rows, columns, limit=100, available=10**9, seed=3), plain)
    # Whole users first: every user but the last one taken has all three of their rows.
    per_user = plain.groupby("user_id", sort=False).size()
    assert (per_user.iloc[:-1] == 3).all()


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_report_opens_in_a_real_browser_with_its_headline_first(evaluation: RunSummary, tmp_path: Path) -> None:
    """Debian's Chromium, headless, driven by Playwright: the page loads with no console error,
    no failed request and no broken image, and its first screen is the plain-language headline
    and the compact table, with the raw keys folded away."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Chromium is not installed: run `make setup` (it installs Debian's chromium package)"
    index = Path(evaluation.outputs["report"])
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: errors.append(f"failed to load {request.url}"))
            page.goto(index.as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", "all => all.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
            headline = page.locator("p.headline")
            first_screen = headline.bounding_box()
            headline_text = headline.inner_text()
            raw_key_visible = page.get_by_text("auc_gain_low_30d").first.is_visible()
            compact_visible = page.locator("#summary table").is_visible()
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert errors == []
    assert len(images) >= 10 and [src for src, loaded in images if not loaded] == []
    assert first_screen is not None and first_screen["y"] + first_screen["height"] < 900  # on the first screen
    best = evaluation.metrics["best_baseline_30d"]
    assert headline_text.startswith("Within 30 days, the model ranks the users who come back with ROC-AUC")
    shown = float(re.search(r"ROC-AUC (\d\.\d{3})", headline_text).group(1))
    assert shown == pytest.approx(evaluation.metrics["model_auc_30d"], abs=6e-4) and "95% paired-bootstrap interval" in headline_text
    assert best and compact_visible and not raw_key_visible


def test_interest_now_is_compared_between_the_recent_and_the_long_silent() -> None:
    metrics = interest_by_recency(np.array([0.5, 0.3, 0.1, 0.0, 0.2]), np.array([0.0, 7.0, 60.0, 90.0, 30.0]))
    assert metrics == pytest.approx(
        {
            "interest_now_users_recent_7d": 2,
            "interest_now_mean_recent_7d": 0.4,
            "interest_now_users_silent_60d": 2,
            "interest_now_mean_silent_60d": 0.05,
        }
    )
    assert interest_by_recency(np.array([0.5]), np.array([30.0])) == {
        "interest_now_users_recent_7d": 0.0,
        "interest_now_users_silent_60d": 0.0,
    }
    with pytest.raises(ValueError, match="one value per user"):
        interest_by_recency(np.zeros(2), np.zeros(3))


def test_visit_accuracy_is_broken_down_by_the_visits_before_the_date() -> None:
    observed = np.array([0.0, 0.0, 1.0, 2.0, 4.0, 20.0])
    past = np.array([1.0, 1.0, 1.0, 3.0, 4.0, 30.0])
    table = visit_accuracy_by_history({"mean_like": np.array([0.3, 0.3, 0.3, 2.0, 3.0, 10.0])}, observed, past, 273)
    expected = pd.DataFrame(
        {
            "method": ["mean_like"] * 3,
            "horizon_days": [273] * 3,
            "past_visits": ["1", "2-4", "20+"],
            "users": [3, 2, 1],
            "observed_mean": [1 / 3, 3.0, 20.0],
            "predicted_mean": [0.3, 2.5, 10.0],
            "mae": [(0.3 + 0.3 + 0.7) / 3, 0.5, 10.0],
            "share_of_error": [1.3 / 12.3, 1.0 / 12.3, 10.0 / 12.3],
        }
    )
    pd.testing.assert_frame_equal(table, expected)
    with pytest.raises(ValueError, match="one value per user"):
        visit_accuracy_by_history({"m": np.zeros(2)}, np.zeros(2), np.zeros(3), 7)
