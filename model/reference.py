"""The achievable reference for a user's interest decay: the generator's own process fitted to
each user by maximum likelihood, from what is known at the as-of date.

The process (one fading interest plus a floor, as in features/synthetic.py without re-engagement),
timed from the user's first session, which is taken as given:

    rate(t) = level * exp(-t / tau) + floor,          t = days since the first session

and the other sessions up to the as-of date (``span`` days after the first) are its events:

    log L = sum_i log rate(t_i) - level * tau * (1 - exp(-span / tau)) - floor * span

For a fixed tau the likelihood is that of a two-part mixture with known shapes, so (level,
floor) come from a few EM steps (each step raises L); tau is the best point of a log-spaced
grid, refined by a parabola through its neighbours. Everything is vectorised over users, so a
few hundred thousand users take seconds. Pure numpy: no TensorFlow, no Spark.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

TAU_MIN_DAYS = 0.5
TAU_MAX_DAYS = 365.0


@dataclass(frozen=True)
class DecayFit:
    """Per-user maximum-likelihood estimates; ``identified`` is False where the user has no
    session after the first (every tau explains that equally: tau is then the grid's middle)."""

    tau_days: np.ndarray
    level_per_day: np.ndarray
    floor_per_day: np.ndarray
    log_likelihood: np.ndarray
    identified: np.ndarray

    @property
    def interest_half_life_days(self) -> np.ndarray:
        return self.tau_days * np.log(2.0)


def _profile(t: np.ndarray, valid: np.ndarray, span: np.ndarray, taus: np.ndarray, em_steps: int) -> tuple[np.ndarray, ...]:
    """(log L, level, floor) for every user [U] and tau [G]: arrays [U, G]."""
    n = valid.sum(axis=1).astype(np.float64)[:, None]  # [U, 1]
    g = np.exp(-t[:, None, :] / taus[None, :, None]) * valid[:, None, :]  # [U, G, M]
    mass = taus[None, :] * (1.0 - np.exp(-span[:, None] / taus[None, :]))  # [U, G]: integral of exp(-t/tau)
    level = n / (2.0 * mass)
    floor = np.broadcast_to(n / (2.0 * span[:, None]), level.shape).copy() + 1e-12
    for _ in range(em_steps):
        excess = level[..., None] * g
        share = np.where(valid[:, None, :], excess / (excess + floor[..., None]), 0.0)
        fading = share.sum(axis=2)
        level = fading / mass
        floor = np.maximum((n - fading) / span[:, None], 1e-12)
    rate = level[..., None] * g + floor[..., None]
    log_rate = np.where(valid[:, None, :], np.log(np.maximum(rate, 1e-300)), 0.0).sum(axis=2)
    return log_rate - level * mass - floor * span[:, None], level, floor


def fit_decay_mle(
    session_days: list[np.ndarray],
    span_days: np.ndarray,
    *,
    grid_points: int = 48,
    em_steps: int = 60,
    chunk_elements: int = 4_000_000,
) -> DecayFit:
    """Fit the process to each user.

    ``session_days[u]``: days from user u's first session to each later session before the
    as-of date (the first session itself left out); ``span_days[u]``: days from the first
    session to the as-of date.
    """
    span = np.asarray(span_days, dtype=np.float64)
    if len(session_days) != len(span):
        raise ValueError(f"session_days has {len(session_days)} users, span_days {len(span)}")
    if (span <= 0).any():
        raise ValueError("span_days must be positive: the first session is before the as-of date")
    taus = np.geomspace(TAU_MIN_DAYS, TAU_MAX_DAYS, grid_points)
    counts = np.array([len(s) for s in session_days])
    result = {k: np.zeros(len(span)) for k in ("tau", "level", "floor", "loglik")}
    # Users sorted by how many sessions they have, so each chunk pads little.
    order = np.argsort(counts, kind="stable")
    start = 0
    while start < len(order):
        # Sorted by count, so a chunk's last user is its widest and its size, rows x widest x
        # grid, only grows with more rows: take the longest run that fits (one user at least).
        widest = np.maximum(counts[order[start:]], 1)
        fits = np.arange(1, len(widest) + 1) * widest * grid_points <= chunk_elements
        users = order[start : start + max(1, int(np.count_nonzero(fits)))]
        width = max(1, counts[users].max())
        t = np.zeros((len(users), width))
        valid = np.zeros((len(users), width), dtype=bool)
        for i, u in enumerate(users):
            t[i, : counts[u]] = session_days[u]
            valid[i, : counts[u]] = True
        loglik, level, floor = _profile(t, valid, span[users], taus, em_steps)
        best = np.argmax(loglik, axis=1)
        log_tau = np.log(taus)[best]
        # Parabola through the best grid point and its neighbours, in log tau.
        inner = (best > 0) & (best < grid_points - 1)
        i = np.clip(best, 1, grid_points - 2)
        rows_i = np.arange(len(users))
        y0, y1, y2 = loglik[rows_i, i - 1], loglik[rows_i, i], loglik[rows_i, i + 1]
        curvature = y0 - 2 * y1 + y2
        step = np.log(taus[1] / taus[0])
        shift = np.where(inner & (curvature < 0), 0.5 * (y0 - y2) / np.where(curvature < 0, curvature, -1.0), 0.0)
        log_tau = log_tau + np.clip(shift, -0.5, 0.5) * step
        result["tau"][users] = np.exp(log_tau)
        result["level"][users] = level[rows_i, best]
        result["floor"][users] = floor[rows_i, best]
        result["loglik"][users] = loglik[rows_i, best]
        start += len(users)
    identified = counts > 0
    middle = float(np.sqrt(TAU_MIN_DAYS * TAU_MAX_DAYS))
    return DecayFit(
        tau_days=np.where(identified, result["tau"], middle),
        level_per_day=result["level"],
        floor_per_day=result["floor"],
        log_likelihood=result["loglik"],
        identified=identified,
    )


def generator_expected_visits(truth: pd.DataFrame, start: dt.datetime, days: float) -> np.ndarray:
    """Each user's expected sessions in ``days`` days from ``start`` under the process that drew
    them (features/synthetic.py), from the ``truth`` table's columns: the fading interest from
    ``joined_at``, the floor, and the win-back from ``reengaged_at`` (missing: none). What the
    observed count of a user like this scatters around, so a decile's predicted visits can be
    set against the truth without the Poisson noise of one draw."""
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    missing = {"joined_at", "initial_rate_per_day", "tau_days", "floor_rate_per_day"} - set(truth.columns)
    if missing:
        raise ValueError(f"truth lacks the columns {sorted(missing)}: pass the generator's truth table")

    def since(column: str) -> tuple[np.ndarray, np.ndarray]:
        elapsed = (pd.Timestamp(start) - pd.to_datetime(truth[column])).dt.total_seconds().to_numpy(np.float64) / 86_400
        return np.maximum(elapsed, 0.0), np.maximum(elapsed + days, 0.0)

    def fading(rate: np.ndarray, tau: np.ndarray, window: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return rate * tau * (np.exp(-window[0] / tau) - np.exp(-window[1] / tau))

    joined = since("joined_at")
    expected = truth["floor_rate_per_day"].to_numpy(np.float64) * (joined[1] - joined[0])
    expected = expected + fading(truth["initial_rate_per_day"].to_numpy(np.float64), truth["tau_days"].to_numpy(np.float64), joined)
    if "reengaged_at" in truth.columns:
        rate, tau = (truth[c].to_numpy(np.float64) for c in ("reengage_rate_per_day", "reengage_tau_days"))
        win_back = fading(rate, tau, since("reengaged_at"))  # NaN for users who never came back
        expected = expected + np.where(truth["reengaged_at"].notna(), win_back, 0.0)
    return expected
