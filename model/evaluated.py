"""What one evaluated date gives: the users, their labels and every method's predictions, and
the figures computed from them (the model's AUC gain over each baseline with a paired-bootstrap
interval, the headline against the best baseline, expected visits against observed, the decay
check, the explanations). Pure numpy and pandas; jobs/evaluate.py reads the data and writes the
results."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from interest_decay.contract import STATIC_FEATURES
from interest_decay.model.data import sample_indices
from interest_decay.model.evaluation import Predictions, decay_check, deciles, permutation_importance, session_buckets, visits_calibration
from interest_decay.model.metrics import auc_gain_intervals
from interest_decay.model.reference import generator_expected_visits
from interest_decay.model.scoring import drivers, typical_user

log = logging.getLogger(__name__)

# Users the permutation importance is computed on (a seeded sample above it).
IMPORTANCE_USERS = 20_000
# Expected visits are checked over the next 2 and 4 future windows; the decay check splits the longer.
VISIT_CHECK_WINDOWS = (2, 4)
# The decay curves by decile are compared with what was observed up to these days (and the longest horizon).
CURVE_CHECK_DAYS = (91,)


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
    observed_span_days: float = float("inf")  # days from the date to the end of the data
    curve_days: np.ndarray = field(default_factory=lambda: np.zeros(0))  # where the decay curves are checked
    baseline_curves: dict[str, np.ndarray] = field(default_factory=dict)  # "<btyd>_curve": P(active within d), users x curve_days
    visits_observed: dict[int, np.ndarray] = field(default_factory=dict)  # horizon -> each user's visits within it


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
            # The 80% interval of each user's expected visits (over the draws of their state)
            # against what the truth expects of them.
            low, high = (bound[:, 0] for bound in scorer.expected_visits_interval_from(params[known], [k * window_days]))
            inside = (low <= truth_expected) & (truth_expected <= high)
            metrics[f"truth_visits_interval_coverage_{k * window_days}d"] = float(inside.mean())
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
        return scorer.p_active_at(inputs, horizon)

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


def visit_accuracy(predicted: dict[str, np.ndarray], observed: np.ndarray, horizon: int) -> pd.DataFrame:
    """Per-user visits within ``horizon`` days, each method's expectation against what each user
    did: mean absolute error, Pearson correlation, and the totals (and their ratio)."""
    rows = []
    observed = np.asarray(observed, np.float64)
    for method, values in predicted.items():
        values = np.asarray(values, np.float64)
        spread = values.std() > 0 and observed.std() > 0
        rows.append(
            {
                "method": method,
                "horizon_days": horizon,
                "users": len(values),
                "mae": float(np.abs(values - observed).mean()),
                "correlation": float(np.corrcoef(values, observed)[0, 1]) if spread else np.nan,
                "predicted_total": float(values.sum()),
                "observed_total": float(observed.sum()),
                "total_ratio": float(values.sum() / observed.sum()) if observed.sum() > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def visit_accuracy_by_history(
    predicted: dict[str, np.ndarray], observed: np.ndarray, past_visits: np.ndarray, horizon: int
) -> pd.DataFrame:
    """:func:`visit_accuracy` by group of the visits each user made up to the date
    (model.evaluation.SESSION_BUCKETS): the users, their mean observed visits, and each method's
    mean prediction, mean absolute error and share of the whole error. An expectation is the mean
    of a skewed count, so where most users come back never (one-time buyers) an error measured in
    absolute terms rewards predicting less than the mean; this table shows where a difference in
    the overall error comes from."""
    observed, past_visits = np.asarray(observed, np.float64), np.asarray(past_visits, np.float64)
    if observed.shape != past_visits.shape:
        raise ValueError(f"observed and past_visits must have one value per user, got {observed.shape} and {past_visits.shape}")
    groups = [(label, members) for label, members in session_buckets(past_visits) if members.any()]
    rows = []
    for method, values in predicted.items():
        values = np.asarray(values, np.float64)
        error = np.abs(values - observed)
        rows.extend(
            {
                "method": method,
                "horizon_days": horizon,
                "past_visits": label,
                "users": int(members.sum()),
                "observed_mean": float(observed[members].mean()),
                "predicted_mean": float(values[members].mean()),
                "mae": float(error[members].mean()),
                "share_of_error": float(error[members].sum() / max(error.sum(), 1e-12)),
            }
            for label, members in groups
        )
    return pd.DataFrame(rows)


def _count_tops(visits_there: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Per user [B], the count below which their visits fall with probability 0.9999 at the
    least, over their draws (Poisson where ``shape`` is inf, negative binomial where it is not):
    the top of the counts' grid each user needs."""
    from scipy.stats import nbinom, poisson

    finite = np.isfinite(shape)
    safe_k = np.where(finite, shape, 1.0)
    tops = np.where(finite, nbinom.ppf(0.9999, safe_k, safe_k / (safe_k + visits_there)), poisson.ppf(0.9999, visits_there))
    return np.ceil(np.nan_to_num(tops, nan=0.0).max(axis=1)).astype(np.int64) + 1


# The values one step of count_interval holds (users x draws x counts): about 32 MB of float64.
_COUNT_STEP_VALUES = 4_000_000


def count_interval(
    p_alive: np.ndarray, visits_there: np.ndarray, mass: float = 0.8, max_count: int | None = None, frailty_shape: np.ndarray | None = None
) -> np.ndarray:
    """Each user's interval of the number of visits within a horizon that holds ``mass`` of
    the probability: (low, high, its probability) per user, [B, 3].

    The visits are the model's mixture over the user's draws: none when gone (1 - p_alive), else
    Poisson with the draw's expected visits (``visits_there`` [B, D], ``p_alive`` [B, D]), or
    with a frailty of shape k (``frailty_shape`` [B, D]) negative binomial (a Poisson whose mean
    is spread by G ~ Gamma(k, k)); a shape past 1e8 is none. Counts
    are whole numbers, so no interval holds exactly ``mass``: it starts at the 10th percentile
    and ends where its probability comes closest to ``mass``; the probability it does hold is
    returned, so coverage is judged against what was promised."""
    from scipy.stats import nbinom, poisson

    p_alive, visits_there = np.asarray(p_alive, np.float64), np.maximum(np.asarray(visits_there, np.float64), 1e-12)
    shape = np.full_like(visits_there, np.inf) if frailty_shape is None else np.asarray(frailty_shape, np.float64)
    shape = np.where(shape > 1e8, np.inf, shape)
    tail = (1.0 - mass) / 2.0
    result = np.zeros((len(p_alive), 3))
    draws = visits_there.shape[1]
    # Users in the order of how far their counts reach, so that one heavy user with a wide
    # frailty lengthens the grid of the few users beside them, not of everyone.
    tops = np.full(len(p_alive), max_count + 1) if max_count else _count_tops(visits_there, shape)
    order = np.argsort(tops, kind="stable")
    start = 0
    while start < len(order):
        rows = max(1, _COUNT_STEP_VALUES // (draws * int(tops[order[start]]) + 1))
        while rows > 1 and rows * draws * int(tops[order[min(start + rows, len(order)) - 1]]) > _COUNT_STEP_VALUES:
            rows //= 2
        users = order[start : start + rows]
        start += rows
        counts = np.arange(int(tops[users].max()) + 1)
        alive, mean, k = p_alive[users], visits_there[users][..., None], shape[users]
        finite = np.isfinite(k)[..., None]
        safe_k = np.where(finite, k[..., None], 1.0)
        if finite.all():
            by_count = nbinom.pmf(counts, safe_k, safe_k / (safe_k + mean))
        elif not finite.any():
            by_count = poisson.pmf(counts, mean)
        else:
            by_count = np.where(finite, nbinom.pmf(counts, safe_k, safe_k / (safe_k + mean)), poisson.pmf(counts, mean))
        pmf = (alive[..., None] * by_count).mean(axis=1)  # [b, K]
        pmf[:, 0] += (1.0 - alive).mean(axis=1)
        cdf = np.cumsum(pmf, axis=1)
        low = np.argmax(cdf >= tail - 1e-12, axis=1)
        below = np.where(low > 0, np.take_along_axis(cdf, np.maximum(low - 1, 0)[:, None], axis=1)[:, 0], 0.0)
        held = cdf - below[:, None]  # the probability of [low, k] for every k
        held = np.where(counts[None, :] >= low[:, None], held, -np.inf)
        high = np.argmin(np.abs(held - mass), axis=1)
        result[users] = np.column_stack([low, high, np.take_along_axis(held, high[:, None], axis=1)[:, 0]])
    return result


def interval_coverage(interval: np.ndarray, observed: np.ndarray, score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """How often the observed visits fall inside each user's interval, overall (decile "all")
    and by decile of ``score`` (the predicted visits), beside the probability the intervals hold."""
    inside = (interval[:, 0] <= observed) & (observed <= interval[:, 1])
    frame = pd.DataFrame({"decile": deciles(score, n_bins) + 1, "inside": inside, "promised": interval[:, 2], "score": score})
    table = frame.groupby("decile").agg(
        users=("inside", "size"), coverage=("inside", "mean"), promised=("promised", "mean"), median_predicted=("score", "median")
    )
    overall = pd.DataFrame(
        {
            "users": [len(frame)],
            "coverage": [inside.mean()],
            "promised": [frame["promised"].mean()],
            "median_predicted": [np.median(score)],
        },
        index=pd.Index(["all"], name="decile"),
    )
    table.index = table.index.astype(str)
    return pd.concat([overall, table]).reset_index()


def curves_by_decile(
    score: np.ndarray, predicted_away: np.ndarray, days: np.ndarray, days_to_return: np.ndarray, n_bins: int = 10
) -> pd.DataFrame:
    """By decile of ``score``: the share of users not yet back after each of ``days`` as observed
    (every user followed to the last of ``days``, so the Kaplan-Meier curve is that share) and
    as predicted (the mean of each user's P(still away), ``predicted_away`` users x days), and
    the largest gap between the two. One row per decile and day."""
    bins = deciles(score, n_bins) + 1
    rows = []
    for decile in range(1, n_bins + 1):
        members = bins == decile
        if not members.any():
            continue
        observed = (days_to_return[members, None] > days[None, :]).mean(axis=0)
        predicted = predicted_away[members].mean(axis=0)
        for day, seen, expected in zip(days, observed, predicted, strict=True):
            rows.append(
                {
                    "decile": decile,
                    "users": int(members.sum()),
                    "median_score": float(np.median(score[members])),
                    "day": float(day),
                    "observed_away": float(seen),
                    "predicted_away": float(expected),
                }
            )
    table = pd.DataFrame(rows)
    table["gap"] = (table["predicted_away"] - table["observed_away"]).abs()
    return table


def largest_gap(curves: pd.DataFrame, up_to_days: float) -> float:
    """The largest gap between predicted and observed curves over every decile, up to ``up_to_days``."""
    within = curves[curves["day"] <= up_to_days + 1e-9]
    return float(within["gap"].max()) if len(within) else float("nan")


# Recency groups of the interest check: seen within the last week, silent for two months or more.
RECENT_DAYS, SILENT_DAYS = 7.0, 60.0


def interest_by_recency(interest_now: np.ndarray, recency_days: np.ndarray) -> dict[str, float]:
    """Mean ``interest_now`` of the users seen in the last RECENT_DAYS and of those silent for
    SILENT_DAYS or more, and how many of each: interest is a share of the user's own rate that
    fades in silence, so the silent group must not stand above the recent one. A group with no
    user is left out."""
    interest_now, recency_days = np.asarray(interest_now, np.float64), np.asarray(recency_days, np.float64)
    if interest_now.shape != recency_days.shape:
        raise ValueError(f"interest_now and recency_days must have one value per user, got {interest_now.shape} and {recency_days.shape}")
    metrics: dict[str, float] = {}
    for name, members in (("recent_7d", recency_days <= RECENT_DAYS), ("silent_60d", recency_days >= SILENT_DAYS)):
        metrics[f"interest_now_users_{name}"] = float(members.sum())
        if members.any():
            metrics[f"interest_now_mean_{name}"] = float(interest_now[members].mean())
    return metrics


# How each baseline's expected visits are named in the predictions, and in the metrics.
VISIT_METHODS = {"pareto_nbd_expected_sessions": "pareto_nbd", "bgnbd_expected_sessions": "bgnbd"}


def future_checks(scorer, evaluated: Evaluated) -> tuple[dict[str, pd.DataFrame], dict]:  # noqa: ANN001
    """The checks that need no truth, from what each user did after the date: (tables, metrics).

    - ``visit_accuracy``: per-user visits within each observed horizon, the model's expectation
      against Pareto/NBD's and BG/NBD's conditional expectations (mean absolute error,
      correlation, totals);
    - ``visit_accuracy_by_history``: the same by the visits each user made before the date,
      with each group's share of the error (:func:`visit_accuracy_by_history`);
    - ``interval_coverage``: how often each user's visits fall inside their 80% interval,
      overall and by decile of the predicted visits;
    - ``decay_curves``: by decile of the interest half-life, the observed share of users not yet
      back after each day against the mean predicted P(still away); Pareto/NBD's the same by
      decile of its own expected visits (every decile's size and median score with them);
    - ``interest_now`` of the users seen in the last week against the users silent two months
      (:func:`interest_by_recency`).
    """
    params = evaluated.model_outputs["decay_params"]
    tables: dict[str, pd.DataFrame] = {}
    metrics: dict[str, float] = {}
    if "interest_now" in evaluated.model_outputs:
        recency = evaluated.inputs["static"][:, STATIC_FEATURES.index("recency_days")]
        metrics.update(interest_by_recency(evaluated.model_outputs["interest_now"], recency))
    accuracy, coverage, by_history = [], [], []
    past_visits = evaluated.inputs["static"][:, STATIC_FEATURES.index("total_sessions")]
    for h, observed in sorted(evaluated.visits_observed.items()):
        expected = scorer.expected_visits_from(params, [h])[:, 0]
        predicted = {"model": expected}
        predicted.update({m: evaluated.predictions.at(m, h) for m in VISIT_METHODS if m in evaluated.predictions.by_method})
        table = visit_accuracy(predicted, observed, h)
        accuracy.append(table)
        groups = visit_accuracy_by_history(predicted, observed, past_visits, h)
        by_history.append(groups)
        for row in groups[groups["past_visits"] == "1"].itertuples():
            name = VISIT_METHODS.get(row.method, row.method)
            metrics[f"{name}_visits_mae_{h}d_one_past_visit"] = row.mae
            metrics[f"{name}_visits_mean_over_observed_{h}d_one_past_visit"] = row.predicted_mean / max(row.observed_mean, 1e-12)
        for row in table.itertuples():
            name = VISIT_METHODS.get(row.method, row.method)
            metrics.update(
                {
                    f"{name}_visits_mae_{h}d": row.mae,
                    f"{name}_visits_correlation_{h}d": row.correlation,
                    f"{name}_visits_total_ratio_{h}d": row.total_ratio,
                }
            )
        p_alive, there, frailty = scorer.by_draw(params, [h])
        interval = count_interval(p_alive, there[..., 0], frailty_shape=frailty)
        by_decile = interval_coverage(interval, observed, expected).assign(horizon_days=h)
        coverage.append(by_decile)
        metrics[f"visits_interval_coverage_{h}d"] = float(by_decile.loc[by_decile["decile"] == "all", "coverage"].iloc[0])
        metrics[f"visits_interval_promised_{h}d"] = float(by_decile.loc[by_decile["decile"] == "all", "promised"].iloc[0])
    if accuracy:
        tables["visit_accuracy"], tables["interval_coverage"] = (
            pd.concat(accuracy, ignore_index=True),
            pd.concat(coverage, ignore_index=True),
        )
        tables["visit_accuracy_by_history"] = pd.concat(by_history, ignore_index=True)
    days = evaluated.curve_days
    if len(days):
        half_life = evaluated.model_outputs["interest_half_life_days"]
        curves = [
            curves_by_decile(half_life, 1.0 - scorer.p_active_from(params, list(days)), days, evaluated.days_to_return).assign(
                method="model"
            )
        ]
        longest = max(evaluated.predictions.horizons_days)
        if "pareto_nbd_curve" in evaluated.baseline_curves and "pareto_nbd_expected_sessions" in evaluated.predictions.by_method:
            score = evaluated.predictions.at("pareto_nbd_expected_sessions", longest)
            away = 1.0 - evaluated.baseline_curves["pareto_nbd_curve"]
            curves.append(curves_by_decile(score, away, days, evaluated.days_to_return).assign(method="pareto_nbd"))
        tables["decay_curves"] = pd.concat(curves, ignore_index=True)
        for table in curves:
            method = table["method"].iloc[0]
            for limit in sorted({*CURVE_CHECK_DAYS, float(days.max())}):
                if limit <= days.max():
                    metrics[f"{method}_curve_max_gap_{int(limit)}d"] = largest_gap(table, limit)
        medians = curves[0].groupby("decile")["median_score"].first()
        metrics["half_life_decile_median_ratio"] = float(medians.iloc[-1] / max(medians.iloc[0], 1e-9))
    return tables, metrics
