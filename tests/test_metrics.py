"""Evaluation metrics, labels, baselines and explanations against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from interest_decay.contract import STATIC_FEATURES, WINDOW_FEATURES
from interest_decay.model.baselines import BuyTillYouDie, HazardModel, _within, held_out_customers, person_periods, recency_rule
from interest_decay.model.evaluation import (
    METHODS,
    Predictions,
    comparison_table,
    decay_check,
    fit_baselines,
    labels_within,
    permutation_importance,
    spearman_by_sessions,
    visits_calibration,
)
from interest_decay.model.metrics import _RankedScores, auc_gain_intervals, binary_metrics, gains_curve
from interest_decay.model.scoring import drivers, risk_tier, tier_thresholds

LABELS = np.array([1.0, 0.0, 1.0, 0.0])
SCORES = np.array([0.9, 0.8, 0.3, 0.1])


def test_binary_metrics_by_hand() -> None:
    m = binary_metrics(LABELS, SCORES)
    # Positive/negative pairs ranked right: (.9,.8) (.9,.1) (.3,.1) of 4.
    assert m["roc_auc"] == pytest.approx(0.75)
    # Precision at each positive: 1/1 and 2/3.
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["brier"] == pytest.approx((0.01 + 0.64 + 0.49 + 0.01) / 4)
    # One user per non-empty bin: |1-.9|, |0-.8|, |1-.3|, |0-.1| each weighted 1/4.
    assert m["ece"] == pytest.approx((0.1 + 0.8 + 0.7 + 0.1) / 4)
    # Top 5%, 10%, 20% of 4 users is the first user: a returner, half of them.
    assert (m["precision_top_5"], m["recall_top_5"], m["precision_top_20"]) == (1.0, 0.5, 1.0)
    assert m["lift_top_10"] == pytest.approx(2.0)
    assert (m["predicted_returners"], m["actual_returners"], m["users"]) == (pytest.approx(2.1), 2.0, 4.0)


def test_a_ranking_rule_has_no_probability_metrics() -> None:
    m = binary_metrics(LABELS, -np.array([3.0, 10.0, 20.0, 40.0]), is_probability=False)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert all(np.isnan(m[k]) for k in ("brier", "ece", "predicted_returners"))


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics(np.array([0.0, 2.0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="one length"):
        binary_metrics(LABELS, SCORES[:3])


def test_gains_curve_and_paired_bootstrap() -> None:
    targeted, found = gains_curve(LABELS, SCORES, points=4)
    assert targeted.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert found.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500).astype(float)
    good = labels + rng.normal(0, 0.5, 500)
    same = auc_gain_intervals(labels, good, {"same": good}, rounds=50)["same"]
    assert (same["difference"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    other = rng.normal(size=500)
    better = auc_gain_intervals(labels, good, {"other": other}, rounds=100)["other"]
    assert better["low"] > 0.2 and better["low"] <= better["difference"] <= better["high"]
    # A resample counted as weights gives scikit-learn's AUC of the repeated rows.
    pick = rng.integers(0, 500, 500)
    weights = np.bincount(pick, minlength=500).astype(float)
    assert _RankedScores(np.round(good, 1)).auc(labels, weights) == pytest.approx(roc_auc_score(labels[pick], np.round(good, 1)[pick]))
    # Tied scores (rounded) count one half, as in scikit-learn.
    tied = np.round(good), np.round(other)
    assert auc_gain_intervals(labels, tied[0], {"tied": tied[1]}, rounds=20)["tied"]["difference"] == pytest.approx(
        roc_auc_score(labels, tied[0]) - roc_auc_score(labels, tied[1])
    )


def test_labels_within_horizons_and_unknown_labels() -> None:
    targets = {"days_to_next": np.array([2.0, 10.0, 40.0]), "censored": np.array([0.0, 0.0, 1.0])}
    labels = labels_within(targets, [7, 30])
    assert labels[7].tolist() == [1.0, 0.0, 0.0] and labels[30].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="45-day label is not known yet for 1 users"):
        labels_within(targets, [45])


def test_person_periods_by_hand() -> None:
    # Back after 3 days; back after 9 days; away and watched for 10 days (one full 7-day period).
    rows, periods, returned = person_periods({"days_to_next": np.array([3.0, 9.0, 10.0]), "censored": np.array([0.0, 0.0, 1.0])}, 7.0, 3)
    assert list(zip(rows.tolist(), periods.tolist(), returned.tolist(), strict=True)) == [
        (0, 0, 1.0),
        (1, 0, 0.0),
        (1, 1, 1.0),
        (2, 0, 0.0),
    ]


def test_hazards_to_probabilities() -> None:
    p = _within(np.full((1, 3), 0.5), 7.0, [7, 14, 3.5, 21])
    assert p[0] == pytest.approx([0.5, 0.75, 1 - 0.5**0.5, 0.875])


def _shop(n: int, seed: int) -> tuple[dict, dict]:
    """Half the users visit often and recently and soon come back; the other half have lapsed."""
    rng = np.random.default_rng(seed)
    active = rng.random(n) < 0.5
    tenure = rng.uniform(100, 200, n)
    recency = np.where(active, rng.uniform(0.5, 5, n), rng.uniform(40, 90, n))
    sessions = np.where(active, rng.integers(8, 20, n), rng.integers(1, 3, n)).astype(float)
    static = np.column_stack([tenure, recency, sessions, np.zeros(n), np.zeros(n)]).astype(np.float32)
    x = np.zeros((n, 4, len(WINDOW_FEATURES)), np.float32)
    x[:, :, 0] = np.where(active[:, None], rng.integers(1, 4, (n, 4)), 0)
    days = np.where(active, rng.exponential(4, n), rng.exponential(300, n))
    censored = days > 60
    targets = {"days_to_next": np.where(censored, 60.0, days), "censored": censored.astype(float)}
    return {"x": x, "mask": np.ones((n, 4), np.float32), "static": static}, targets


@pytest.mark.parametrize("kind", ["logistic_rfm", "lightgbm"])
def test_hazard_baselines_learn_who_comes_back(kind: str) -> None:
    train, train_targets = _shop(1500, 0)
    test, test_targets = _shop(1000, 1)
    p = HazardModel(kind, 7.0, [7, 30]).fit(train, train_targets).p_active_within(test, [7, 30])
    labels = labels_within(test_targets, [7, 30])
    assert p.shape == (1000, 2) and (p >= 0).all() and (p <= 1).all() and (p[:, 1] >= p[:, 0]).all()
    assert roc_auc_score(labels[7], p[:, 0]) > 0.85
    # Calibrated enough to count returners within 15%.
    assert p[:, 1].sum() == pytest.approx(labels[30].sum(), rel=0.15)


def test_lightgbm_holds_out_whole_customers_for_its_early_stopping() -> None:
    customers = np.repeat([f"user-{i}" for i in range(500)], 4)  # four as-of rows per customer
    held = held_out_customers(customers, seed=3).reshape(500, 4)
    assert (held.all(axis=1) == held.any(axis=1)).all()  # a customer's rows are all in or all out
    assert 0.15 < held[:, 0].mean() < 0.25
    assert not (held_out_customers(customers, seed=4).reshape(500, 4) == held).all()


@pytest.mark.parametrize("kind", ["bgnbd", "pareto_nbd"])
def test_buy_till_you_die_baselines(kind: str) -> None:
    inputs, targets = _shop(1500, 2)
    p = BuyTillYouDie(kind).fit(inputs).p_active_within(inputs, [7, 30])
    labels = labels_within(targets, [7])
    assert (p >= 0).all() and (p <= 1).all() and (p[:, 1] >= p[:, 0]).all()
    assert roc_auc_score(labels[7], p[:, 0]) > 0.85
    assert roc_auc_score(labels[7], recency_rule(inputs)) > 0.85
    # Fitted on a sample of 500 users, it scores all 1,500 and ranks them as the full fit does.
    sampled = BuyTillYouDie(kind).fit(inputs, max_users=500, seed=1).p_active_within(inputs, [7, 30])
    assert sampled.shape == p.shape and spearmanr(sampled[:, 0], p[:, 0]).statistic > 0.95


def _one_visit_heavy_shop(n: int, seed: int) -> tuple[dict, dict]:
    """60% of the users visited once; a few of the others are bots with thousands of sessions."""
    rng = np.random.default_rng(seed)
    once = rng.random(n) < 0.6
    tenure = rng.uniform(1, 120, n)
    sessions = np.where(once, 1, 1 + rng.poisson(rng.gamma(0.5, 1000, n))).astype(float)
    recency = np.where(once, tenure, rng.uniform(0, tenure))
    static = np.column_stack([tenure, recency, sessions, np.zeros(n), np.zeros(n)]).astype(np.float32)
    x = np.zeros((n, 4, len(WINDOW_FEATURES)), np.float32)
    days = np.where(once, rng.exponential(300, n), rng.exponential(5, n))
    targets = {"days_to_next": np.minimum(days, 60.0), "censored": (days > 60).astype(float)}
    return {"x": x, "mask": np.ones((n, 4), np.float32), "static": static}, targets


def test_a_failed_baseline_is_named_and_the_others_are_still_judged() -> None:
    inputs, targets = _one_visit_heavy_shop(600, 0)
    # The hazard models learn from history rows; here nobody in them came back, so they cannot fit.
    history = {k: v[:300] for k, v in inputs.items()}
    no_returns = {"days_to_next": np.full(300, 60.0), "censored": np.ones(300)}
    scores, failures, _ = fit_baselines(history, no_returns, inputs, [7, 30], 7.0, btyd_fit_users=300)
    assert set(scores) | set(failures) == set(METHODS) - {"model"} and not set(scores) & set(failures)
    for kind in ("logistic_rfm", "lightgbm"):
        assert failures[kind] == f"ValueError: {kind}: the training rows have no returns to learn from"
    assert "recency_rule" in scores and all(np.isfinite(v).all() and v.shape == (600, 2) for v in scores.values())
    assert all(reason for reason in failures.values())

    labels = labels_within(targets, [7, 30])
    rng = np.random.default_rng(1)
    model = np.column_stack([np.clip(0.5 * labels[h] + rng.uniform(0, 0.5, 600), 0, 1) for h in (7, 30)])
    table = comparison_table(labels, Predictions([7, 30], {"model": model, **scores}, failures)).set_index(["method", "horizon_days"])
    assert len(table) == len(METHODS) * 2
    failed = table.loc["lightgbm", 30]
    assert failed["status"] == "failed" and "no returns" in failed["failure"] and np.isnan(failed["roc_auc"])
    assert table.loc["model", 30]["status"] == "ok" and table.loc["model", 30]["failure"] == ""
    assert table.loc["model", 30]["roc_auc"] > 0.8 and table.loc["recency_rule", 30]["roc_auc"] > 0.5


def test_buy_till_you_die_says_why_it_did_not_fit() -> None:
    # Pareto/NBD's P(alive) overflows for the bots' thousands of sessions, whatever the penalizer.
    inputs, _ = _one_visit_heavy_shop(300, 0)
    expected = r"pareto_nbd did not fit on 300 users: penalizer 0.001: parameters or P\(alive\) not finite; penalizer 0.1: .+"
    with pytest.raises(RuntimeError, match=expected):
        BuyTillYouDie("pareto_nbd", penalizers=(0.001, 0.1)).fit(inputs)


def test_baseline_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        HazardModel("forest", 7.0, [7])
    with pytest.raises(ValueError, match="period_days"):
        HazardModel("lightgbm", 0, [7])


def test_importance_and_explanations_find_the_feature_that_matters() -> None:
    inputs, targets = _shop(600, 3)
    recency = STATIC_FEATURES.index("recency_days")

    def predict(batch: dict) -> np.ndarray:  # a model that only looks at recency
        return 1 / (1 + np.exp((batch["static"][:, recency] - 20) / 5))

    importance = permutation_importance(predict, inputs, labels_within(targets, [7])[7])
    assert importance.iloc[0]["feature"] == "recency_days" and importance.iloc[0]["auc_drop"] > 0.2
    assert (importance.iloc[1:]["auc_drop"].abs() < 1e-9).all()
    lapsed = np.argsort(-inputs["static"][:, recency])[:3]
    typical = (np.zeros(len(WINDOW_FEATURES), np.float32), np.median(inputs["static"], axis=0))
    spec = {"window_features": list(WINDOW_FEATURES), "static_features": list(STATIC_FEATURES)}
    names, effects = drivers(predict, {k: v[lapsed] for k, v in inputs.items()}, typical, spec)
    # Only recency moves this model, and only upwards for the lapsed users: one driver each.
    assert names == [["recency_days"]] * 3
    expected = predict({**inputs, "static": np.repeat(typical[1][None], 600, 0)})[0] - predict(inputs)[lapsed]
    np.testing.assert_allclose([e[0] for e in effects], expected, atol=1e-4)


def test_risk_tiers() -> None:
    assert risk_tier(np.array([0.1, 0.45, 0.9]), 0.4, 0.6).tolist() == ["high", "medium", "low"]


def test_tiers_follow_the_shops_own_distribution_or_fixed_probabilities() -> None:
    p = np.linspace(0.0, 0.99, 100)  # a shop where few users are likely to come back
    high, medium = tier_thresholds("quantile", (0.2, 0.3), (0.4, 0.6), lambda q: np.quantile(p, q))
    tiers = risk_tier(p, high, medium)
    assert [(tiers == t).sum() for t in ("high", "medium", "low")] == [20, 30, 50]
    assert tier_thresholds("fixed", (0.2, 0.3), (0.4, 0.6), lambda q: pytest.fail("fixed needs no quantiles")) == (0.4, 0.6)
    with pytest.raises(ValueError, match="mode"):
        tier_thresholds("deciles", (0.2, 0.3), (0.4, 0.6), lambda q: q)


def test_visits_calibration_by_decile() -> None:
    expected = np.arange(20, dtype=float)  # deciles of two users each
    observed = np.where(np.arange(20) < 10, expected, 2 * expected)  # the upper half visits twice as much
    table = visits_calibration(expected, observed)
    assert table["users"].tolist() == [2] * 10
    assert table["predicted"].tolist() == [0.5 + 2 * i for i in range(10)]
    assert table.loc[table["decile"] == 1, "relative_error"].item() == 0.0
    assert table.loc[table["decile"] == 8, "relative_error"].item() == pytest.approx(-0.5)


def test_decay_check_pools_each_decile() -> None:
    half_life = np.array([1.0, 2.0, 30.0, 40.0])
    table = decay_check(
        half_life, (np.array([4.0, 4, 2, 2]), np.array([1.0, 1, 2, 2])), (np.array([3.0, 5, 1, 3]), np.array([0.0, 2, 2, 2])), n_bins=2
    )
    assert table["predicted_ratio"].tolist() == [0.25, 1.0]
    assert table["observed_ratio"].tolist() == [0.25, 1.0]
    assert table["median_half_life_days"].tolist() == [1.5, 35.0]


def test_spearman_by_past_sessions() -> None:
    truth = np.arange(10, dtype=float)
    sessions = np.array([1, 1, 1, 3, 3, 3, 3, 30, 30, 30])
    table = spearman_by_sessions({"good": truth * 2, "reversed": -truth}, truth, sessions).set_index("past_sessions")
    assert table.loc["all", "good"] == pytest.approx(1.0) and table.loc["all", "reversed"] == pytest.approx(-1.0)
    assert table.loc["2-4", "users"] == 4 and table.loc["20+", "good"] == pytest.approx(1.0)
    assert np.isnan(table.loc["5-9", "good"])  # nobody there


def test_count_intervals_hold_what_they_promise_poisson_or_negative_binomial() -> None:
    """Users drawn from the mixture the interval is made from (gone, else Poisson or negative
    binomial): the share inside is the probability promised, and a frailty widens the interval."""
    from interest_decay.model.evaluated import count_interval

    rng = np.random.default_rng(0)
    n, p, mean, shape = 20_000, 0.7, 3.0, 1.5
    p_alive, there = np.full((n, 1), p), np.full((n, 1), mean)
    alive = rng.random(n) < p
    for k in (None, shape):
        rates = np.full(n, mean) if k is None else rng.gamma(k, mean / k, n)
        observed = np.where(alive, rng.poisson(rates), 0)
        interval = count_interval(p_alive, there, frailty_shape=None if k is None else np.full((n, 1), k))
        inside = (interval[:, 0] <= observed) & (observed <= interval[:, 1])
        assert inside.mean() == pytest.approx(interval[0, 2], abs=0.015), k
        assert abs(interval[0, 2] - 0.8) < 0.1
    busy, ten = np.ones((1, 1)), np.full((1, 1), 10.0)  # there for sure, ten visits expected
    poisson_low, poisson_high, _ = count_interval(busy, ten)[0]
    low, high, _ = count_interval(busy, ten, frailty_shape=np.full((1, 1), shape))[0]
    assert low < poisson_low and high > poisson_high
    # A heavy user with a wide frailty beside light ones: the light users' intervals are theirs alone.
    alive, means, shapes = np.full((50, 1), 0.9), np.full((50, 1), 2.0), np.full((50, 1), 3.0)
    means[0], shapes[0] = 500.0, 0.05
    together = count_interval(alive, means, frailty_shape=shapes)
    np.testing.assert_array_equal(together[1:], count_interval(alive[1:], means[1:], frailty_shape=shapes[1:]))
    assert together[0, 1] > together[1, 1] and abs(together[0, 2] - 0.8) < 0.05  # its grid reached far enough
    # A shape past 1e8 is no frailty.
    np.testing.assert_array_equal(
        count_interval(p_alive[:5], there[:5], frailty_shape=np.full((5, 1), 1e13)), count_interval(p_alive[:5], there[:5])
    )
