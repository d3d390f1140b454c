"""Comparing the model with its baselines on one set of users, and explaining its risk scores.

Pure numpy on the dicts of :func:`model.data.arrays`; jobs/evaluate.py does the reading,
the rolling origins and the writing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from interest_decay.contract import STATIC_FEATURES, WINDOW_FEATURES
from interest_decay.model.baselines import BuyTillYouDie, HazardModel, describe_failure, recency_rule
from interest_decay.model.metrics import binary_metrics
from interest_decay.model.scoring import feature_groups

log = logging.getLogger(__name__)

# Method name -> whether its scores are P(active within h). The recency rule, expected sessions
# and P(alive) only rank users, so the probability metrics are left out for them.
METHODS = {
    "model": True,
    "recency_rule": False,
    "logistic_rfm": True,
    "lightgbm": True,
    "bgnbd": True,
    "bgnbd_expected_sessions": False,
    "bgnbd_p_alive": False,
    "pareto_nbd": True,
    "pareto_nbd_expected_sessions": False,
    "pareto_nbd_p_alive": False,
}


def labels_within(targets: dict, horizons_days: list[int]) -> dict[int, np.ndarray]:
    """1 when the user came back within h days of the as-of date, else 0, for each horizon.

    Raises ValueError when a label is not known yet (the data end before as-of + h)."""
    days = np.asarray(targets["days_to_next"], dtype=np.float64)
    censored = np.asarray(targets["censored"], dtype=np.float64) > 0.5
    labels = {}
    for h in horizons_days:
        unknown = censored & (days < h)
        if unknown.any():
            raise ValueError(
                f"the {h}-day label is not known yet for {int(unknown.sum())} users: the events end too soon after the as-of date"
            )
        labels[h] = (~censored & (days < h)).astype(np.float64)
    return labels


@dataclass
class Predictions:
    """P(active within h) of every method: users x horizons, columns in ``horizons_days`` order;
    ``failures`` names each method that has none, with the reason."""

    horizons_days: list[int]
    by_method: dict[str, np.ndarray]
    failures: dict[str, str] = field(default_factory=dict)

    def at(self, method: str, horizon: int) -> np.ndarray:
        return self.by_method[method][:, self.horizons_days.index(horizon)]


class BaselineFailed(Exception):
    """A baseline gave no usable scores (its fit raised, or it returned NaN or infinity)."""


def _usable(scores: np.ndarray) -> np.ndarray:
    """``scores`` as float64 if every one is finite, else :class:`BaselineFailed` saying how many are not."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = ~np.isfinite(scores).reshape(len(scores), -1).all(axis=1)
    if bad.any():
        raise BaselineFailed(f"returned NaN or infinity for {int(bad.sum())} of {len(scores)} users")
    return scores


def _reason(exc: Exception) -> str:
    """Why a baseline failed, in one line (our own BaselineFailed says it without its kind)."""
    return str(exc) if isinstance(exc, BaselineFailed) else describe_failure(exc)


def _attempt(name: str, score: Callable[[], np.ndarray], predictions: dict, failures: dict) -> None:
    """Run one baseline; its scores go to ``predictions``, or its reason to ``failures``.

    Any exception is caught on purpose: a baseline is someone else's numerics on this shop's
    data (lifetimes' fits can diverge on one-visit-heavy logs), and one baseline's failure must
    not throw away the judgement of the model and the others."""
    started = time.perf_counter()
    try:
        predictions[name] = _usable(score())
        log.info("baseline %s: scored in %.1f s", name, time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        failures[name] = _reason(exc)
        log.warning("baseline %s failed and is reported as such: %s", name, failures[name])


def _hazard_scores(
    model: HazardModel, history_inputs: dict, history_targets: dict, customers: np.ndarray | None, inputs: dict, horizons_days: list[int]
) -> np.ndarray:
    return model.fit(history_inputs, history_targets, customers).p_active_within(inputs, horizons_days)


def fit_baselines(
    history_inputs: dict,
    history_targets: dict,
    inputs: dict,
    horizons_days: list[int],
    period_days: float,
    seed: int = 0,
    history_customers: np.ndarray | None = None,
    btyd_fit_users: int | None = None,
    curve_days: list[float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, np.ndarray]]:
    """Every baseline fitted on what was known at the evaluation date, predicting ``inputs``:
    (scores by method, reason by failed method, BG/NBD's and Pareto/NBD's P(active within d)
    on each of ``curve_days``, users x days, for the decay curves they are judged by).

    BG/NBD and Pareto/NBD are fitted on the evaluated users' own histories (as they are meant
    to be; on a seeded sample of ``btyd_fit_users`` of them when there are more) and give three
    scores each, for every user: P(active within h), expected sessions and P(alive); the
    hazard models learn from ``history`` rows (earlier as-of dates, labels censored at the
    evaluation date; ``history_customers`` names each row's customer, for LightGBM's early
    stopping on held-out customers). A baseline whose fit fails, or whose scores are not all finite, is left
    out of the scores and named in the failures."""
    n_horizons = len(horizons_days)
    predictions: dict[str, np.ndarray] = {}
    failures: dict[str, str] = {}
    curves: dict[str, np.ndarray] = {}
    _attempt("recency_rule", lambda: np.repeat(recency_rule(inputs)[:, None], n_horizons, axis=1), predictions, failures)
    for kind in ("logistic_rfm", "lightgbm"):
        model = HazardModel(kind, period_days, horizons_days, seed)
        _attempt(
            kind,
            partial(_hazard_scores, model, history_inputs, history_targets, history_customers, inputs, horizons_days),
            predictions,
            failures,
        )
    for kind in ("bgnbd", "pareto_nbd"):
        try:
            fitted = BuyTillYouDie(kind).fit(inputs, btyd_fit_users, seed)
        except Exception as exc:  # noqa: BLE001 - as in _attempt
            for method in (kind, f"{kind}_expected_sessions", f"{kind}_p_alive"):
                failures[method] = _reason(exc)
            log.warning("baseline %s failed and is reported as such: %s", kind, failures[kind])
            continue
        _attempt(kind, lambda fitted=fitted: fitted.p_active_within(inputs, horizons_days), predictions, failures)
        _attempt(f"{kind}_expected_sessions", lambda fitted=fitted: fitted.expected_sessions(inputs, horizons_days), predictions, failures)
        _attempt(
            f"{kind}_p_alive", lambda fitted=fitted: np.repeat(fitted.p_alive(inputs)[:, None], n_horizons, axis=1), predictions, failures
        )
        if curve_days and kind in predictions:
            _attempt(f"{kind}_curve", lambda fitted=fitted: fitted.p_active_within(inputs, list(curve_days)), curves, failures)
    return {name: predictions[name] for name in METHODS if name in predictions}, failures, curves


def comparison_table(labels: dict[int, np.ndarray], predictions: Predictions) -> pd.DataFrame:
    """One row per method and horizon with every metric of :func:`model.metrics.binary_metrics`,
    ``status`` "ok"; a failed method keeps its rows, with ``status`` "failed", its reason in
    ``failure`` and no metrics."""
    rows = []
    for h in predictions.horizons_days:
        for method in METHODS:
            if method in predictions.by_method:
                metrics = binary_metrics(labels[h], predictions.at(method, h), is_probability=METHODS[method])
                rows.append({"method": method, "horizon_days": h, "status": "ok", "failure": "", **metrics})
            elif method in predictions.failures:
                rows.append({"method": method, "horizon_days": h, "status": "failed", "failure": predictions.failures[method]})
    return pd.DataFrame(rows)


def permutation_importance(
    predict: Callable[[dict], np.ndarray], inputs: dict, labels: np.ndarray, rounds: int = 2, seed: int = 0
) -> pd.DataFrame:
    """Drop in ROC-AUC when one feature is shuffled across users (all its windows at once)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    base = roc_auc_score(labels, predict(inputs))
    rows = []
    for name, swap in feature_groups(WINDOW_FEATURES, STATIC_FEATURES).items():
        drops = []
        for _ in range(rounds):
            order = rng.permutation(len(labels))
            drops.append(base - roc_auc_score(labels, predict(swap(inputs, {k: v[order] for k, v in inputs.items()}))))
        rows.append({"feature": name, "auc_drop": float(np.mean(drops)), "auc_drop_sd": float(np.std(drops))})
    return pd.DataFrame(rows).sort_values("auc_drop", ascending=False, ignore_index=True)


def principal_components(z: np.ndarray, k: int = 2) -> np.ndarray:
    """The first ``k`` principal components of ``z`` (users x latent), for the latent-space plot."""
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T


def deciles(values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin number 0..n_bins-1 of each value by its rank (ties split by order), equal-sized bins."""
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return (ranks * n_bins // max(len(values), 1)).astype(int)


def visits_calibration(
    expected: np.ndarray, observed: np.ndarray, n_bins: int = 10, truth_expected: np.ndarray | None = None
) -> pd.DataFrame:
    """Predicted against observed visits by decile of the prediction: (decile, users, predicted,
    observed (means per user), observed_visits (the decile's total), relative_error, and
    count_noise: the relative error that Poisson noise alone gives on that total, 1/sqrt(n),
    so a decile of near-silent users, whose relative error is mostly noise, reads as such).

    With ``truth_expected`` (generated data: each user's expected visits under the process that
    drew them), also truth_expected (its mean per user) and relative_error_vs_truth: the model's
    error without the noise of the one draw that was observed."""
    if len(expected) != len(observed):
        raise ValueError(f"expected has {len(expected)} users, observed {len(observed)}")
    frame = pd.DataFrame({"decile": deciles(expected, n_bins) + 1, "predicted": expected, "observed": observed})
    aggregates = {
        "users": ("predicted", "size"),
        "predicted": ("predicted", "mean"),
        "observed": ("observed", "mean"),
        "observed_visits": ("observed", "sum"),
    }
    if truth_expected is not None:
        if len(truth_expected) != len(expected):
            raise ValueError(f"truth_expected has {len(truth_expected)} users, expected {len(expected)}")
        frame["truth_expected"] = truth_expected
        aggregates["truth_expected"] = ("truth_expected", "mean")
    table = frame.groupby("decile").agg(**aggregates).reset_index()
    table["relative_error"] = (table["predicted"] - table["observed"]) / table["observed"].where(table["observed"] > 0)
    table["count_noise"] = 1.0 / np.sqrt(table["observed_visits"].where(table["observed_visits"] > 0))
    if truth_expected is not None:
        truth = table["truth_expected"].where(table["truth_expected"] > 0)
        table["relative_error_vs_truth"] = (table["predicted"] - truth) / truth
    return table


def decay_check(
    half_life: np.ndarray, predicted: tuple[np.ndarray, np.ndarray], observed: tuple[np.ndarray, np.ndarray], n_bins: int = 10
) -> pd.DataFrame:
    """A check of the decay that needs no truth: by decile of the predicted interest half-life,
    the visits in the second half of a span over those in the first half, predicted (from the
    decay curve) and observed (pooled over the decile's users). A decay that is right predicts
    the observed ratio in every decile (both near 1 where little interest is left above the
    baseline)."""
    frame = pd.DataFrame(
        {
            "decile": deciles(half_life, n_bins) + 1,
            "half_life": half_life,
            "predicted_first": predicted[0],
            "predicted_second": predicted[1],
            "observed_first": observed[0],
            "observed_second": observed[1],
        }
    )
    table = (
        frame.groupby("decile")
        .agg(
            users=("half_life", "size"),
            median_half_life_days=("half_life", "median"),
            predicted_first=("predicted_first", "sum"),
            predicted_second=("predicted_second", "sum"),
            observed_first=("observed_first", "sum"),
            observed_second=("observed_second", "sum"),
        )
        .reset_index()
    )
    table["predicted_ratio"] = table["predicted_second"] / table["predicted_first"]
    table["observed_ratio"] = table["observed_second"] / table["observed_first"].where(table["observed_first"] > 0)
    return table[["decile", "users", "median_half_life_days", "predicted_ratio", "observed_ratio"]]


SESSION_BUCKETS = ((1, 1), (2, 4), (5, 9), (10, 19), (20, None))


def session_buckets(past_sessions: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, members) for each of SESSION_BUCKETS: the users by the sessions they had before
    the as-of date ("1", "2-4", ..., "20+")."""
    return [
        (f"{lo}" if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}"), (past_sessions >= lo) & (past_sessions <= (hi or np.inf)))
        for lo, hi in SESSION_BUCKETS
    ]


def spearman_by_sessions(predicted: dict[str, np.ndarray], truth: np.ndarray, past_sessions: np.ndarray) -> pd.DataFrame:
    """Spearman correlation of each predicted half-life with the true one, over every user and
    by the number of sessions the user had before the as-of date."""
    from scipy.stats import spearmanr

    rows = []
    buckets = [("all", np.ones(len(truth), bool)), *session_buckets(past_sessions)]
    for name, members in buckets:
        row = {"past_sessions": name, "users": int(members.sum())}
        for method, values in predicted.items():
            ok = members & np.isfinite(values) & np.isfinite(truth)
            row[method] = float(spearmanr(values[ok], truth[ok]).statistic) if ok.sum() > 2 and np.ptp(values[ok]) > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
