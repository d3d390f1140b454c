"""The baselines the model is judged against, each giving P(active within h) for any horizon h.

- recency rule: the sooner the last visit, the likelier a return (a ranking, not a probability);
- BG/NBD and Pareto/NBD (lifetimes) on frequency, recency and age, fitted on every user;
- logistic regression on RFM features and LightGBM on the window features, both as
  discrete-time hazard models: one row per user and period at risk, so rows whose return is
  censored still teach them, exactly as the decay head's likelihood does.

Inputs are the numpy dicts of :func:`model.data.arrays` (``static`` in STATIC_FEATURES order).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

import numpy as np

from interest_decay.contract import STATIC_FEATURES
from interest_decay.model.data import sample_indices

log = logging.getLogger(__name__)

_TENURE, _RECENCY, _SESSIONS = (STATIC_FEATURES.index(c) for c in ("tenure_days", "recency_days", "total_sessions"))


def recency_rule(inputs: dict) -> np.ndarray:
    """Days since the last event, negated: higher means likelier to return."""
    return -inputs["static"][:, _RECENCY].astype(np.float64)


def frequency_recency_age(inputs: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(repeat sessions, days from first to last session, days since the first) per user: the
    summary BG/NBD and Pareto/NBD are fitted on, with a session as the transaction."""
    static = inputs["static"].astype(np.float64)
    frequency = np.maximum(static[:, _SESSIONS] - 1.0, 0.0)
    age = np.maximum(static[:, _TENURE], 1e-3)
    recency = np.clip(static[:, _TENURE] - static[:, _RECENCY], 0.0, age)
    return frequency, np.where(frequency > 0, recency, 0.0), age


def describe_failure(exc: BaseException) -> str:
    """An exception as one readable line: its kind and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"


# Tried in turn until a fit converges with finite parameters: a log where most users visit once
# gives the likelihood flat directions that an unpenalised fit can run off along.
PENALIZERS = (0.001, 0.01, 0.1)


class BuyTillYouDie:
    """BG/NBD (``"bgnbd"``) or Pareto/NBD (``"pareto_nbd"``) from lifetimes, with P(active within h)."""

    def __init__(self, kind: str, penalizers: tuple[float, ...] = PENALIZERS) -> None:
        if kind not in ("bgnbd", "pareto_nbd"):
            raise ValueError(f"kind must be 'bgnbd' or 'pareto_nbd', got {kind!r}")
        if not penalizers or min(penalizers) < 0:
            raise ValueError(f"penalizers must be one or more non-negative numbers, got {penalizers!r}")
        self.kind, self.penalizers = kind, tuple(penalizers)
        self.penalizer: float | None = None
        self._alive_of: tuple[np.ndarray, np.ndarray] | None = None  # (static inputs, their P(alive))

    def _fitter(self, penalizer: float):  # noqa: ANN202 - a lifetimes fitter
        from lifetimes import BetaGeoFitter, ParetoNBDFitter

        return BetaGeoFitter(penalizer_coef=penalizer) if self.kind == "bgnbd" else ParetoNBDFitter(penalizer_coef=penalizer)

    def fit(self, inputs: dict, max_users: int | None = None, seed: int = 0) -> BuyTillYouDie:
        """Fit on every user's (frequency, recency, age), or on a seeded sample of ``max_users``
        of them, raising the penalizer until the fit converges to finite parameters;
        RuntimeError naming each attempt if none does."""
        frequency, recency, age = frequency_recency_age(inputs)
        given = len(frequency)
        pick = sample_indices(given, max_users, seed)
        frequency, recency, age = frequency[pick], recency[pick], age[pick]
        # Pareto/NBD's default start is random (lifetimes draws it unseeded); one fixed start
        # keeps the baseline the same from run to run. Its parameters are on lifetimes' scaled
        # time (the oldest user's age is 1), where 1 is a sane order of magnitude.
        start = {"initial_params": np.ones(4)} if self.kind == "pareto_nbd" else {}
        attempts = []
        for penalizer in self.penalizers:
            fitter = self._fitter(penalizer)
            try:
                # lifetimes prints the optimiser's state on a failed fit and warns on every
                # overflow it meets on the way; the outcome is checked below instead.
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    fitter.fit(frequency, recency, age, **start)
                    alive = np.asarray(fitter.conditional_probability_alive(frequency, recency, age), dtype=np.float64)
            except Exception as exc:  # noqa: BLE001 - lifetimes raises several kinds; each attempt is reported
                attempts.append(f"penalizer {penalizer}: {describe_failure(exc)}")
                continue
            if not np.isfinite(fitter.params_.to_numpy(dtype=np.float64)).all() or not np.isfinite(alive).all():
                attempts.append(f"penalizer {penalizer}: parameters or P(alive) not finite")
                continue
            self.fitter, self.penalizer = fitter, penalizer
            log.info("%s: fitted on %d of %d users with penalizer %s", self.kind, len(frequency), given, penalizer)
            return self
        raise RuntimeError(f"{self.kind} did not fit on {len(frequency)} users: " + "; ".join(attempts))

    def p_active_within(self, inputs: dict, horizons_days: list[int]) -> np.ndarray:
        """P(at least one session in (now, now + h]) per user and horizon."""
        frequency, recency, age = frequency_recency_age(inputs)
        columns = []
        for h in horizons_days:
            if self.kind == "bgnbd":
                # No session in (T, T + h] means dropped out already, or alive with no arrival:
                # 1 - P(alive) * (1 - ((alpha + T) / (alpha + T + h)) ** (r + x)).
                r, alpha = self.fitter.params_["r"], self.fitter.params_["alpha"]
                alive = self.p_alive(inputs)
                columns.append(alive * (1.0 - ((alpha + age) / (alpha + age + h)) ** (r + frequency)))
            else:
                none = self.fitter.conditional_probability_of_n_purchases_up_to_time(0, h, frequency, recency, age)
                columns.append(1.0 - np.asarray(none, dtype=np.float64))
        return np.clip(np.column_stack(columns), 0.0, 1.0)

    def expected_sessions(self, inputs: dict, horizons_days: list[int]) -> np.ndarray:
        """Expected number of sessions in (now, now + h]: the ranking the BTYD literature reports."""
        frequency, recency, age = frequency_recency_age(inputs)
        return np.column_stack(
            [self.fitter.conditional_expected_number_of_purchases_up_to_time(h, frequency, recency, age) for h in horizons_days]
        )

    def p_alive(self, inputs: dict) -> np.ndarray:
        """P(the user has not dropped out), the same for every horizon; kept for the last inputs
        (BG/NBD's P(active) and the P(alive) score both need it, and it is the costly part)."""
        if self._alive_of is None or self._alive_of[0] is not inputs["static"]:
            alive = np.asarray(self.fitter.conditional_probability_alive(*frequency_recency_age(inputs)), dtype=np.float64)
            self._alive_of = (inputs["static"], alive)
        return self._alive_of[1]


def person_periods(targets: dict, period_days: float, n_periods: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, period index, returned in that period) for every period a user was at risk.

    Period k is [k * period_days, (k + 1) * period_days) after the as-of date. A user is at
    risk until the period of the return; a censored user for every period fully observed.
    """
    days = np.asarray(targets["days_to_next"], dtype=np.float64)
    censored = np.asarray(targets["censored"], dtype=np.float64) > 0.5
    event_period = np.floor(days / period_days)
    last = np.where(censored, np.floor(days / period_days) - 1, event_period)  # inclusive
    last = np.minimum(last, n_periods - 1).astype(int)
    rows = np.repeat(np.arange(len(days)), np.maximum(last + 1, 0))
    periods = np.concatenate([np.arange(n + 1) for n in last if n >= 0]) if len(rows) else np.zeros(0, int)
    returned = (~censored[rows]) & (periods == event_period[rows])
    return rows, periods, returned.astype(np.float64)


def _within(hazards: np.ndarray, period_days: float, horizons_days: list[int]) -> np.ndarray:
    """P(return within h) from per-period hazards (users x periods), constant hazard inside a period."""
    log_stay = np.log1p(-np.clip(hazards, 0.0, 1.0 - 1e-9))
    cumulative = np.concatenate([np.zeros((len(hazards), 1)), np.cumsum(log_stay, axis=1)], axis=1)
    columns = []
    for h in horizons_days:
        whole, part = divmod(h / period_days, 1.0)
        whole = int(min(whole, hazards.shape[1]))
        partial = log_stay[:, whole] * part if whole < hazards.shape[1] else 0.0
        columns.append(1.0 - np.exp(cumulative[:, whole] + partial))
    return np.column_stack(columns)


# LightGBM's hazard baseline, tuned as one would for production: small learning rate, leaves
# regularised, the number of trees chosen by early stopping on held-out customers.
LIGHTGBM_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "lambda_l2": 1.0,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "verbose": -1,
    "num_threads": 2,
}
LIGHTGBM_MAX_ROUNDS = 2000
LIGHTGBM_PATIENCE = 50


def held_out_customers(customers: np.ndarray, seed: int, share: float = 0.2) -> np.ndarray:
    """True for the rows of a random ``share`` of the customers (all rows of a customer alike)."""
    _, index = np.unique(np.asarray(customers), return_inverse=True)
    chosen = np.random.default_rng(seed).random(index.max() + 1 if len(index) else 0) < share
    return chosen[index]


def _early_stopped_lightgbm(design: np.ndarray, returned: np.ndarray, held_out: np.ndarray, seed: int):  # noqa: ANN202
    """A booster refitted on every row with the number of trees that did best on ``held_out``
    rows; 200 trees when the held-out rows cannot judge (too few, or one class only)."""
    import lightgbm  # here: each baseline pulls in its own library

    # The native API: lightgbm's scikit-learn wrapper lags behind scikit-learn releases.
    params = {**LIGHTGBM_PARAMS, "seed": seed}
    rounds = 200
    judged = held_out.sum() >= 100 and len(np.unique(returned[held_out])) == 2 and len(np.unique(returned[~held_out])) == 2
    if judged:
        train = lightgbm.Dataset(design[~held_out], returned[~held_out])
        check = lightgbm.Dataset(design[held_out], returned[held_out], reference=train)
        probe = lightgbm.train(
            params,
            train,
            num_boost_round=LIGHTGBM_MAX_ROUNDS,
            valid_sets=[check],
            callbacks=[lightgbm.early_stopping(LIGHTGBM_PATIENCE, verbose=False)],
        )
        rounds = max(1, probe.best_iteration)
        log.info("lightgbm: %d trees (early stopping on %d held-out person-periods)", rounds, int(held_out.sum()))
    return lightgbm.train(params, lightgbm.Dataset(design, returned), num_boost_round=rounds)


class HazardModel:
    """A discrete-time hazard model: ``"logistic_rfm"`` (scikit-learn, RFM features) or
    ``"lightgbm"`` (every window feature plus the static ones)."""

    def __init__(self, kind: str, period_days: float, horizons_days: list[int], seed: int = 0) -> None:
        if kind not in ("logistic_rfm", "lightgbm"):
            raise ValueError(f"kind must be 'logistic_rfm' or 'lightgbm', got {kind!r}")
        if period_days <= 0:
            raise ValueError(f"period_days must be positive, got {period_days}")
        self.kind, self.period_days, self.seed = kind, float(period_days), seed
        self.n_periods = max(1, math.ceil(max(horizons_days) / period_days))

    def _features(self, inputs: dict) -> np.ndarray:
        static = np.log1p(np.maximum(inputs["static"].astype(np.float64), 0.0))
        if self.kind == "logistic_rfm":
            return static  # recency, frequency, monetary value and tenure, log-scaled
        x = inputs["x"].astype(np.float64)
        return np.concatenate([x.reshape(len(x), -1), static], axis=1)

    def _design(self, features: np.ndarray, periods: np.ndarray) -> np.ndarray:
        if self.kind == "logistic_rfm":  # one baseline hazard per period
            return np.concatenate([features, np.eye(self.n_periods)[periods]], axis=1)
        return np.concatenate([features, periods[:, None].astype(np.float64)], axis=1)

    def fit(self, inputs: dict, targets: dict, customers: np.ndarray | None = None) -> HazardModel:
        """Fit on history rows. ``customers`` (one id per row) lets LightGBM pick its number of
        trees on held-out customers, so rows of one customer at other dates cannot leak into
        the check; without it the rows themselves are held out."""
        rows, periods, returned = person_periods(targets, self.period_days, self.n_periods)
        if len(np.unique(returned)) < 2:
            raise ValueError(f"{self.kind}: the training rows have no {'returns' if returned.sum() == 0 else 'non-returns'} to learn from")
        design = self._design(self._features(inputs)[rows], periods)
        if self.kind == "logistic_rfm":  # imports here: each baseline pulls in its own library
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(design, returned)
            self._hazard = lambda d: logistic.predict_proba(d)[:, 1]
        else:
            held_out = held_out_customers(customers if customers is not None else np.arange(len(inputs["static"])), self.seed)[rows]
            self._hazard = _early_stopped_lightgbm(design, returned, held_out, self.seed).predict
        log.info("%s: fitted on %d person-periods from %d history rows", self.kind, len(rows), len(inputs["static"]))
        return self

    def p_active_within(self, inputs: dict, horizons_days: list[int]) -> np.ndarray:
        """P(return within each of ``horizons_days``) from the fitted per-period hazards."""
        features = self._features(inputs)
        hazards = np.column_stack([self._hazard(self._design(features, np.full(len(features), k))) for k in range(self.n_periods)])
        return _within(hazards, self.period_days, horizons_days)
