"""What one evaluated date gives: the users, their labels and every method's predictions, and
the figures computed from them (the model's AUC gain over each baseline with a paired-bootstrap
interval, the headline against the best baseline, expected visits against observed, the decay
check, the explanations). Pure numpy and pandas; jobs/evaluate.py reads the data and writes the
results."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interest_decay.model.data import sample_indices
from interest_decay.model.evaluation import Predictions, decay_check, permutation_importance, visits_calibration
from interest_decay.model.metrics import auc_gain_intervals
from interest_decay.model.reference import generator_expected_visits
from interest_decay.model.scoring import drivers, typical_user

log = logging.getLogger(__name__)

# Users the permutation importance is computed on (a seeded sample above it).
IMPORTANCE_USERS = 20_000
# Expected visits are checked over the next 2 and 4 future windows; the decay check splits the longer.
VISIT_CHECK_WINDOWS = (2, 4)


@dataclass
class Evaluated:
    """One evaluation date: the users, their inputs and labels, and every method's predictions."""

    as_of: dt.date
    user_ids: np.ndarray
    inputs: dict
    labels: dict[int, np.ndarray]
    predictions: Predictions
    table: pd.DataFrame
    model_outputs: dict[str, np.ndarray]  # everything the saved model returns for these users
    days_to_return: np.ndarray  # inf for the users not back by the end of the data
    future_sessions: np.ndarray  # users x future windows, -1 where not observed
    population: int  # users at the date, of whom up to evaluate.max_users are evaluated
    history_rows: int  # earlier rows the hazard baselines learned from


def model_outputs_from(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ``model_<name>`` columns of a sample as arrays (list columns stacked, float32 as the
    network gives them), dropped from ``frame``."""
    outputs = {}
    for column in [c for c in frame.columns if c.startswith("model_")]:
        values = frame.pop(column).to_numpy()
        is_list = len(values) > 0 and isinstance(values[0], np.ndarray | list)
        outputs[column.removeprefix("model_")] = np.stack(values).astype(np.float32) if is_list else values.astype(np.float32)
    return outputs


def with_auc_gain_intervals(evaluated: Evaluated, rounds: int, seed: int, max_users: int) -> pd.DataFrame:
    """The comparison table plus, on each baseline's row, the model's AUC minus the baseline's
    with a 95% paired-bootstrap interval (the same users resampled for every method), on a
    seeded sample of ``max_users`` users when there are more."""
    sample = sample_indices(len(evaluated.user_ids), max_users, seed)
    gains = {}
    for h in evaluated.predictions.horizons_days:
        at_h = evaluated.table[(evaluated.table["horizon_days"] == h) & (evaluated.table["status"] == "ok")]
        others = {m: evaluated.predictions.at(m, h)[sample] for m in at_h["method"] if m != "model"}
        started = time.perf_counter()
        found = auc_gain_intervals(evaluated.labels[h][sample], evaluated.predictions.at("model", h)[sample], others, rounds, seed)
        log.info(
            "bootstrap of AUC gains at %d days: %d rounds x %d methods on %d users in %.1f s",
            h,
            rounds,
            len(others),
            len(sample),
            time.perf_counter() - started,
        )
        gains.update({(m, h): g for m, g in found.items()})
    nothing = {"difference": np.nan, "low": np.nan, "high": np.nan}
    table = pd.DataFrame(
        [gains.get((m, h), nothing) for m, h in zip(evaluated.table["method"], evaluated.table["horizon_days"], strict=True)],
        index=evaluated.table.index,
    )
    return evaluated.table.assign(model_auc_gain=table["difference"], model_auc_gain_low=table["low"], model_auc_gain_high=table["high"])


def _headline(table_h: pd.DataFrame, h: int) -> dict[str, object]:
    """The model's AUC at horizon ``h`` against the best baseline that did not fail."""
    model = table_h.loc["model"]
    headline = {
        f"model_auc_{h}d": model["roc_auc"],
        f"predicted_returners_{h}d": model["predicted_returners"],
        f"actual_returners_{h}d": model["actual_returners"],
    }
    judged = table_h.drop(index="model").query("status == 'ok'")["roc_auc"].dropna()
    if judged.empty:
        return headline
    best = table_h.loc[judged.idxmax()]
    return {
        **headline,
        f"best_baseline_{h}d": best.name,
        f"best_baseline_auc_{h}d": best["roc_auc"],
        f"auc_gain_{h}d": best["model_auc_gain"],
        f"auc_gain_low_{h}d": best["model_auc_gain_low"],
        f"auc_gain_high_{h}d": best["model_auc_gain_high"],
    }


def cross_validation_summary(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over the rolling origins of the main metrics, per method and horizon."""
    if folds.empty:
        return folds
    grouped = folds.groupby(["method", "horizon_days"], sort=False)[["roc_auc", "pr_auc", "brier"]]
    summary = grouped.mean().join(grouped.std(ddof=0), rsuffix="_sd").reset_index()
    return summary.assign(origins=folds["fold"].nunique())


def visit_checks(  # noqa: ANN001
    scorer, evaluated: Evaluated, window_days: int, truth: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(expected-visits calibration by decile over the next 2 and 4 windows, the decay check by
    decile of interest half-life, their headline metrics), from the observed future windows;
    with the generator's ``truth``, each decile also against the visits the truth expects."""
    params, future = evaluated.model_outputs["decay_params"], evaluated.future_sessions
    spans = sorted({min(k, future.shape[1]) for k in VISIT_CHECK_WINDOWS} - {0})
    start = dt.datetime.combine(evaluated.as_of, dt.time())
    tables, metrics = [], {}
    for k in spans:
        known = (future[:, :k] >= 0).all(axis=1)
        if known.sum() < 20:
            continue
        expected = scorer.expected_visits_from(params[known], [k * window_days])[:, 0]
        truth_expected = None
        if truth is not None:
            truth_expected = generator_expected_visits(truth[known], start, float(k * window_days))
        table = visits_calibration(expected, future[known, :k].sum(axis=1), truth_expected=truth_expected).assign(days=k * window_days)
        # Over the deciles with 100 visits or more, where Poisson noise alone is within 10%.
        measurable = table["observed_visits"] >= 100
        metrics[f"visits_calibration_max_error_{k * window_days}d"] = float(table.loc[measurable, "relative_error"].abs().max())
        if truth_expected is not None:
            # The same deciles against the truth's expectation: the model's error without the draw's noise.
            errors = table.loc[measurable, "relative_error_vs_truth"].abs()
            metrics[f"visits_calibration_max_error_vs_truth_{k * window_days}d"] = float(errors.max())
        metrics[f"visits_predicted_over_observed_{k * window_days}d"] = float(expected.sum() / max(table["observed_visits"].sum(), 1))
        tables.append(table)
    decay = pd.DataFrame()
    # The decay check spans the calibration's longest span: a view labelled with more future
    # windows than the evaluation date has seen still gets one.
    span = spans[-1] if spans else 0
    known = (future[:, :span] >= 0).all(axis=1) if span >= 2 else np.zeros(len(params), bool)
    if known.sum() >= 20:
        half = span // 2
        first, whole = scorer.expected_visits_from(params[known], [half * window_days, span * window_days]).T
        observed = future[known, :half].sum(axis=1), future[known, half:span].sum(axis=1)
        decay = decay_check(evaluated.model_outputs["interest_half_life_days"][known], (first, whole - first), observed)
        decay = decay.assign(first_days=f"0-{half * window_days}", second_days=f"{half * window_days}-{span * window_days}")
        from scipy.stats import spearmanr

        metrics["decay_check_ratio_spearman"] = float(
            spearmanr(decay["predicted_ratio"], decay["observed_ratio"], nan_policy="omit").statistic
        )
        metrics["decay_check_ratio_mean_abs_error"] = float((decay["predicted_ratio"] - decay["observed_ratio"]).abs().mean())
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), decay, metrics


def headline_metrics(main: Evaluated, horizons: list[int], tiers: np.ndarray) -> dict[str, object]:
    """The model against the best baseline at every horizon, failed baselines and tier sizes."""
    metrics: dict[str, object] = {}
    for h in horizons:
        metrics.update(_headline(main.table[main.table["horizon_days"] == h].set_index("method"), h))
    if main.predictions.failures:
        metrics["failed_baselines"] = ", ".join(main.predictions.failures)
    metrics.update({f"tier_{t}_users": int((tiers == t).sum()) for t in ("high", "medium", "low")})
    return metrics


def explain(scorer, main: Evaluated, horizon: int, seed: int, explain_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:  # noqa: ANN001
    """(permutation importance of every input on up to IMPORTANCE_USERS users; the
    ``explain_users`` users least likely to return within ``horizon`` with the three
    inputs that lower their P(active) most)."""
    model_p = main.predictions.at("model", horizon)

    def predict(inputs: dict) -> np.ndarray:
        return scorer.p_active_within(inputs, [horizon])[:, 0]

    explained = np.arange(min(len(model_p), IMPORTANCE_USERS))
    importance = permutation_importance(
        predict, {k: v[explained] for k, v in main.inputs.items()}, main.labels[horizon][explained], seed=seed
    )
    at_risk = np.argsort(model_p, kind="stable")[:explain_users]
    names, effects = drivers(predict, {k: v[at_risk] for k, v in main.inputs.items()}, typical_user(scorer.metadata), scorer.feature_spec)
    users = pd.DataFrame(
        {
            "user_id": main.user_ids[at_risk],
            f"p_active_{horizon}d": model_p[at_risk],
            "interest_half_life_days": main.model_outputs["interest_half_life_days"][at_risk],
            **{
                f"driver_{i + 1}": [f"{n[i]} (+{e[i]:.3f})" if len(n) > i else "" for n, e in zip(names, effects, strict=False)]
                for i in range(3)
            },
        }
    )
    return importance, users
