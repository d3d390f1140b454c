"""Comparing the model with its baselines on one set of users, and explaining its risk scores.

Pure numpy on the dicts of :func:`model.data.arrays`; jobs/evaluate.py does the reading,
the rolling origins and the writing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.windows import STATIC_FEATURES, WINDOW_FEATURES
from model.baselines import BuyTillYouDie, HazardModel, recency_rule
from model.metrics import binary_metrics

# Method name -> whether its scores are P(active within h). The recency rule, expected sessions
# and P(alive) only rank users, so the probability metrics are left out for them.
METHODS = {
    "model": True, "recency_rule": False, "logistic_rfm": True, "lightgbm": True,
    "bgnbd": True, "bgnbd_expected_sessions": False, "bgnbd_p_alive": False,
    "pareto_nbd": True, "pareto_nbd_expected_sessions": False, "pareto_nbd_p_alive": False,
}  # fmt: skip


def labels_within(targets: dict, horizons_days: list[int]) -> dict[int, np.ndarray]:
    """1 when the user came back within h days of the as-of date, else 0, for each horizon.

    Raises ValueError when a label is not known yet (the data end before as-of + h)."""
    days = np.asarray(targets["days_to_next"], dtype=np.float64)
    censored = np.asarray(targets["censored"], dtype=np.float64) > 0.5
    labels = {}
    for h in horizons_days:
        unknown = censored & (days < h)
        if unknown.any():
            raise ValueError(f"the {h}-day label is not known yet for {int(unknown.sum())} users: the events end too soon after the as-of date")
        labels[h] = (~censored & (days < h)).astype(np.float64)
    return labels


@dataclass
class Predictions:
    """P(active within h) of every method: users x horizons, columns in ``horizons_days`` order."""

    horizons_days: list[int]
    by_method: dict[str, np.ndarray]

    def at(self, method: str, horizon: int) -> np.ndarray:
        return self.by_method[method][:, self.horizons_days.index(horizon)]


def fit_baselines(
    history_inputs: dict, history_targets: dict, inputs: dict, horizons_days: list[int], period_days: float, seed: int = 0
) -> dict[str, np.ndarray]:
    """Every baseline fitted on what was known at the evaluation date, predicting ``inputs``.

    BG/NBD and Pareto/NBD are fitted on the evaluated users' own histories (as they are meant
    to be) and give three scores each: P(active within h), expected sessions and P(alive); the
    hazard models learn from ``history`` rows (earlier as-of dates, labels censored at the
    evaluation date)."""
    rule = recency_rule(inputs)
    predictions = {"recency_rule": np.repeat(rule[:, None], len(horizons_days), axis=1)}
    for kind in ("logistic_rfm", "lightgbm"):
        predictions[kind] = HazardModel(kind, period_days, horizons_days, seed).fit(history_inputs, history_targets).p_active_within(inputs, horizons_days)
    for kind in ("bgnbd", "pareto_nbd"):
        fitted = BuyTillYouDie(kind).fit(inputs)
        predictions[kind] = fitted.p_active_within(inputs, horizons_days)
        predictions[f"{kind}_expected_sessions"] = fitted.expected_sessions(inputs, horizons_days)
        predictions[f"{kind}_p_alive"] = np.repeat(fitted.p_alive(inputs)[:, None], len(horizons_days), axis=1)
    return {name: predictions[name] for name in METHODS if name in predictions}


def comparison_table(labels: dict[int, np.ndarray], predictions: Predictions) -> pd.DataFrame:
    """One row per method and horizon with every metric of :func:`model.metrics.binary_metrics`."""
    rows = []
    for h in predictions.horizons_days:
        for method in predictions.by_method:
            metrics = binary_metrics(labels[h], predictions.at(method, h), is_probability=METHODS[method])
            rows.append({"method": method, "horizon_days": h, **metrics})
    return pd.DataFrame(rows)


def risk_tier(p_active: np.ndarray, high_risk_below: float, medium_risk_below: float) -> np.ndarray:
    """'high' / 'medium' / 'low' from P(active within the longest horizon), as the score stage does."""
    return np.where(p_active < high_risk_below, "high", np.where(p_active < medium_risk_below, "medium", "low"))


def feature_groups(n_windows: int) -> dict[str, Callable[[dict, np.ndarray], dict]]:
    """For every window and static feature, a function (inputs, replacement) -> inputs with that
    feature taken from ``replacement`` (same shapes), so one feature can be shuffled or reset."""

    def window(i: int) -> Callable[[dict, dict], dict]:
        def swap(inputs: dict, other: dict) -> dict:
            x = inputs["x"].copy()
            x[:, :, i] = other["x"][:, :, i]
            return {**inputs, "x": x}

        return swap

    def static(i: int) -> Callable[[dict, dict], dict]:
        def swap(inputs: dict, other: dict) -> dict:
            values = inputs["static"].copy()
            values[:, i] = other["static"][:, i]
            return {**inputs, "static": values}

        return swap

    return {**{f: window(i) for i, f in enumerate(WINDOW_FEATURES)}, **{f: static(i) for i, f in enumerate(STATIC_FEATURES)}}


def permutation_importance(
    predict: Callable[[dict], np.ndarray], inputs: dict, labels: np.ndarray, rounds: int = 2, seed: int = 0
) -> pd.DataFrame:
    """Drop in ROC-AUC when one feature is shuffled across users (all its windows at once)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    base = roc_auc_score(labels, predict(inputs))
    rows = []
    for name, swap in feature_groups(inputs["x"].shape[1]).items():
        drops = []
        for _ in range(rounds):
            order = rng.permutation(len(labels))
            drops.append(base - roc_auc_score(labels, predict(swap(inputs, {k: v[order] for k, v in inputs.items()}))))
        rows.append({"feature": name, "auc_drop": float(np.mean(drops)), "auc_drop_sd": float(np.std(drops))})
    return pd.DataFrame(rows).sort_values("auc_drop", ascending=False, ignore_index=True)


def explain_users(predict: Callable[[dict], np.ndarray], inputs: dict, users: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
    """For each chosen user, the features that lower their P(active) most: how much it would
    rise if that one feature were the typical user's (the median, window by window)."""
    typical = {k: np.median(v, axis=0, keepdims=True) for k, v in inputs.items()}
    chosen = {k: v[users] for k, v in inputs.items()}
    base = predict(chosen)
    effects = {}
    for name, swap in feature_groups(inputs["x"].shape[1]).items():
        effects[name] = predict(swap(chosen, {k: np.repeat(v, len(users), axis=0) for k, v in typical.items()})) - base
    return [sorted(((name, float(e[u])) for name, e in effects.items()), key=lambda item: -item[1])[:top] for u in range(len(users))]


def principal_components(z: np.ndarray, k: int = 2) -> np.ndarray:
    """The first ``k`` principal components of ``z`` (users x latent), for the latent-space plot."""
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T
