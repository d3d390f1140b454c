"""The per-user maximum-likelihood reference on simulated users with known time constants."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import spearmanr

from interest_decay.model.reference import TAU_MAX_DAYS, TAU_MIN_DAYS, fit_decay_mle


def _users(n: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(true tau, session days after the first, span): a fading Poisson process plus a small floor."""
    rng = np.random.default_rng(seed)
    tau = 10 * np.exp(0.8 * rng.standard_normal(n))
    span = rng.uniform(60, 90, n)
    sessions = []
    for t, s in zip(tau, span, strict=False):
        fading = -t * np.log(1 - rng.random(rng.poisson(3 * t * (1 - np.exp(-s / t)))) * (1 - np.exp(-s / t)))
        sessions.append(np.sort(np.concatenate([fading, rng.uniform(0, s, rng.poisson(0.001 * s))])))
    return tau, sessions, span


def test_the_fit_ranks_the_true_time_constants() -> None:
    tau, sessions, span = _users(400)
    fit = fit_decay_mle(sessions, span)
    assert spearmanr(fit.tau_days, tau).statistic > 0.85
    assert ((fit.tau_days >= TAU_MIN_DAYS) & (fit.tau_days <= TAU_MAX_DAYS)).all()
    np.testing.assert_allclose(fit.interest_half_life_days, fit.tau_days * np.log(2))


def test_the_fit_is_the_maximum_of_the_likelihood() -> None:
    """Against scipy's optimiser on the same likelihood, for a few users."""
    tau, sessions, span = _users(6, seed=1)
    fit = fit_decay_mle(sessions, span, grid_points=96, em_steps=200)

    def nll(p: np.ndarray, t: np.ndarray, s: float) -> float:
        level, time_constant, floor = np.exp(p)
        return -(
            np.log(level * np.exp(-t / time_constant) + floor).sum() - level * time_constant * (1 - np.exp(-s / time_constant)) - floor * s
        )

    for u in range(6):
        best = min(
            (
                minimize(
                    nll,
                    [0.0, np.log(start), np.log(0.01)],
                    args=(sessions[u], span[u]),
                    method="Nelder-Mead",
                    options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10},
                )
                for start in (2.0, 10.0, 50.0)
            ),
            key=lambda r: r.fun,
        )
        assert fit.log_likelihood[u] == pytest.approx(-best.fun, abs=0.05)


def test_a_user_with_one_session_has_no_identified_time_constant() -> None:
    fit = fit_decay_mle([np.array([]), np.array([1.0, 2.0, 4.0])], np.array([30.0, 30.0]))
    assert fit.identified.tolist() == [False, True]
    assert fit.tau_days[0] == pytest.approx(np.sqrt(TAU_MIN_DAYS * TAU_MAX_DAYS))
    with pytest.raises(ValueError, match="span_days must be positive"):
        fit_decay_mle([np.array([])], np.array([0.0]))
