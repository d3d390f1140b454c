"""Each user's interest as one probability model: a chance of still being there, and for a user
who is, visits that re-excite interest and fade, over a baseline, until the user leaves.

Per user (and per draw of the user's latent state, see model/network.py), from the as-of date on:

    there now    with probability p_alive; a user who has left never visits again
    leaving      a user still there leaves at rate ``dropout`` per day (as in Pareto/NBD)
    visits       while there, a self-exciting (Hawkes) process with intensity
                     lambda(s) = baseline + Y(s)
                 where the excitation Y fades with time constant ``tau`` and jumps by
                 alpha = branching / tau at every visit: each visit brings ``branching`` (< 1)
                 more visits on average. Y(0), the excitation now, is alpha times what the user's
                 own past visits left (each faded by its age) plus what the network adds.

Closed forms for a user still there, s days on:

    before the next visit    lambda(s) = baseline + excitation exp(-s / tau)
                             R(s) = baseline s + excitation tau (1 - exp(-s / tau))
    P(no visit within d)     S_there(d) = exp(-dropout d - R(d)) + int_0^d dropout exp(-dropout t - R(t)) dt
    expected visits          M(d) = mu_e E(dropout, d) + (excitation - y_inf) E(dropout + kappa, d)
                             with kappa = (1 - branching) / tau, y_inf = branching baseline / (1 - branching),
                             mu_e = baseline / (1 - branching), E(c, d) = (1 - exp(-c d)) / c

(the first return is exact: nothing new excites before it; M counts the visits that visits bring).
Over being there or not, one distribution, from which every output comes:

    P(active within d) = p_alive (1 - S_there(d)),   E[visits within d] = p_alive M(d)

The interest measures a team reads (docs/model.md):

- the interest half-life: days until the interest a visit brings, alpha exp(-s / tau), has
  halved (tau ln 2, over the draws);
- the silence half-life: days of silence until the expected visit rate, P(still there | silent
  s days) x lambda(s), has halved; silence lowers it twice, through the excitation fading and
  through the growing chance the user has left, and the dropout share says how much of it is
  the second;
- interest now: the share of today's rate that is excitation, times P(still there), in [0, 1].

A draw can carry a frailty: the user's visit rate (baseline and excitation together) is the
draw's times G ~ Gamma(k, k), mean 1, for what the history leaves unknown (:func:`with_frailty`,
k learned for the shop in model/network.py). G keeps M(d), and averaging over it is closed
form, so a frailty costs nothing:

    P(no visit within d | there)    E[exp(-G R(d))] = (1 + R(d) / k)^-k
    first visit at d                lambda(d) (1 + R(d) / k)^-(k + 1)
    rate after d days of silence    lambda(d) k / (k + R(d))      (E[G | no visit yet])
    visits in the next windows      negative binomial, one G for all of them

k = e^NO_FRAILTY_LOG_SHAPE is no frailty (G = 1 to float precision). The intervals of a draw
with a frailty are its values at G's 10th and 90th percentiles (:func:`at_frailty_quantile`).

``params`` [..., 7] = (logit p_alive, log baseline, log excitation, tau in days, branching,
log dropout, log frailty shape k).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

PARAMS_LAYOUT = "logit_alive,log_baseline,log_excitation,tau_days,branching,log_dropout,log_frailty_shape/v4"
N_PARAMS = 7
N_RAW = 6  # the network's head outputs all but the frailty, which is the shop's (model/network.py)
# log k of a draw without frailty: k = 1e13, so G ~ Gamma(k, k) is 1 to float precision.
NO_FRAILTY_LOG_SHAPE = 30.0
# Above this shape the frailty is taken as none where a formula would lose its digits.
_NO_FRAILTY_SHAPE = 1e8
# Bounds of the shop's frailty shape (before a user's repeat sessions are added): from rates
# that differ a hundredfold among users alike to next to none.
MIN_FRAILTY_SHAPE, MAX_FRAILTY_SHAPE = 0.05, 1000.0
MIN_TAU_DAYS, MAX_TAU_DAYS = 0.5, 365.0
MAX_BRANCHING = 0.9
# Soft upper bound on log rates (visits per day): e^7 ~ 1,100 visits a day is already a bot.
MAX_LOG_RATE = 7.0
MIN_DROPOUT, MAX_DROPOUT = 1e-5, 1.0
# Interest that does not halve (or a return median not reached) within this many days is given as it.
CAP_DAYS = 3650.0
# Bounds of the negative binomial count likelihood's dispersion (variance = mu (1 + dispersion mu)).
MIN_DISPERSION, MAX_DISPERSION = 1e-3, 10.0
# The dropout integral's grid on [0, d], as shares of d: fine near 0, where a busy user's chance of
# no visit falls fastest.
_SHARES = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 47)]).astype(np.float32)
# The days on which the silence curves (half-life, return median) are computed for every user.
SILENCE_DAYS = np.concatenate([[0.0], np.geomspace(0.05, CAP_DAYS, 159)]).astype(np.float32)


def _soft_max(value: tf.Tensor, bound: float) -> tf.Tensor:
    """``value`` below ``bound``, smoothly: about ``value`` well below it, never above."""
    return bound - tf.nn.softplus(bound - value)


def _log_bounded(raw: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """A raw output -> a value in [low, high], log-uniformly."""
    return tf.exp(math.log(low) + (math.log(high) - math.log(low)) * tf.sigmoid(raw))


def raw_for_log_bounded(value: float, low: float, high: float) -> float:
    """The raw output whose :func:`_log_bounded` is ``value`` (for initial biases)."""
    share = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return math.log(share / (1.0 - share))


def raw_for_branching(value: float) -> float:
    share = value / MAX_BRANCHING
    return math.log(share / (1.0 - share))


def past_excitation(sessions: tf.Tensor, ages_days: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
    """What the user's own past visits left of excitation per unit of alpha, [B, D]:
    sum over windows w of sessions_w exp(-age_w / tau). ``sessions`` [B, T], ``ages_days`` [T]
    (each window's middle, days before the as-of date), ``tau`` [B, D] (one per draw)."""
    faded = tf.exp(-ages_days[None, None, :] / tau[..., None])  # [B, D, T]
    return tf.reduce_sum(tf.cast(sessions, tau.dtype)[:, None, :] * faded, axis=-1)


def params_from_raw(raw: tf.Tensor, sessions: tf.Tensor, ages_days: tf.Tensor) -> tf.Tensor:
    """Raw head outputs [B, D, 6] -> params [B, D, 7] (no frailty).

    raw = (logit p_alive, log baseline, log excitation the past visits do not explain, tau,
    branching, dropout): the excitation now is alpha x :func:`past_excitation` + the network's
    own (for example what a first visit started)."""
    tau = _log_bounded(raw[..., 3], MIN_TAU_DAYS, MAX_TAU_DAYS)
    branching = MAX_BRANCHING * tf.sigmoid(raw[..., 4])
    excitation = branching / tau * past_excitation(sessions, ages_days, tau) + tf.exp(_soft_max(raw[..., 2], MAX_LOG_RATE))
    return tf.stack(
        [
            raw[..., 0],
            _soft_max(raw[..., 1], MAX_LOG_RATE),
            tf.math.log(excitation + 1e-12),
            tau,
            branching,
            tf.math.log(_log_bounded(raw[..., 5], MIN_DROPOUT, MAX_DROPOUT)),
            tf.fill(tf.shape(tau), NO_FRAILTY_LOG_SHAPE),
        ],
        axis=-1,
    )


def split(params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(p_alive, baseline, excitation, tau, branching, dropout), each params' shape without its last axis."""
    return (
        tf.sigmoid(params[..., 0]),
        tf.exp(params[..., 1]),
        tf.exp(params[..., 2]),
        params[..., 3],
        params[..., 4],
        tf.exp(params[..., 5]),
    )


def frailty_shape(params: tf.Tensor) -> tf.Tensor:
    """k of each draw's frailty G ~ Gamma(k, k), params' shape without its last axis."""
    return tf.exp(params[..., 6])


def frailty_shape_from_raw(raw: tf.Tensor) -> tf.Tensor:
    """A raw variable -> the shop's frailty shape, in [MIN_FRAILTY_SHAPE, MAX_FRAILTY_SHAPE] log-uniformly."""
    return _log_bounded(raw, MIN_FRAILTY_SHAPE, MAX_FRAILTY_SHAPE)


def with_frailty(params: tf.Tensor, shape: tf.Tensor, total_sessions: tf.Tensor) -> tf.Tensor:
    """params [B, D, 7] with the frailty k = ``shape`` + the user's repeat sessions (``total_sessions``
    [B] - 1): Gamma-Poisson's posterior shape, so the more visits, the less spread."""
    repeat = tf.maximum(tf.cast(total_sessions, params.dtype) - 1.0, 0.0)
    log_k = tf.math.log(tf.cast(shape, params.dtype) + repeat)[:, None, None] * tf.ones_like(params[..., :1])
    return tf.concat([params[..., :6], log_k], axis=-1)


def _no_visit(expected_before: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """E[exp(-G R)] = (1 + R / k)^-k for R = ``expected_before``: exp(-R) without frailty."""
    return tf.exp(-shape * tf.math.log1p(expected_before / shape))


def _segments(values: tf.Tensor, grid: tf.Tensor) -> tf.Tensor:
    """The integral of a positive function over each step of ``grid`` (last axis), from its
    ``values`` on the grid, taking it as exponential between two grid days: exact for
    exp(-c t), and within a trapezoid's error of it for anything smoother. [..., G - 1]."""
    left, right = values[..., :-1], values[..., 1:]
    width = grid[..., 1:] - grid[..., :-1]
    log_ratio = tf.math.log(tf.maximum(left, 1e-30)) - tf.math.log(tf.maximum(right, 1e-30))
    flat = tf.abs(log_ratio) < 1e-3
    safe = tf.where(flat, tf.ones_like(log_ratio), log_ratio)
    return width * tf.where(flat, (left + right) / 2.0, (left - right) / safe)


def _e(c: tf.Tensor, d: tf.Tensor) -> tf.Tensor:
    """(1 - exp(-c d)) / c, which is d where c d is near 0."""
    cd = c * d
    small = cd < 1e-4
    safe = tf.where(small, tf.ones_like(c), c)
    return tf.where(small, d * (1.0 - cd / 2.0), -tf.math.expm1(-cd) / safe)


def _expand(params: tf.Tensor, days: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """params [..., 7] and ``days`` [H] or [..., H] -> (params [..., 1, 7], days [..., H])."""
    days = tf.convert_to_tensor(days, params.dtype)
    return params[..., None, :], days


def before_next_visit(params: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
    """R(d): the expected visits before the next one, as if it never came: [..., H]."""
    p, d = _expand(params, days)
    _, baseline, excitation, tau, _, _ = split(p)
    return baseline * d + excitation * tau * (-tf.math.expm1(-d / tau))


def rate_before_next_visit(params: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
    """lambda(d) = baseline + excitation exp(-d / tau): [..., H]."""
    p, d = _expand(params, days)
    _, baseline, excitation, tau, _, _ = split(p)
    return baseline + excitation * tf.exp(-d / tau)


def survival_there(params: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
    """S_there(d) = P(no visit within d days | still there at the as-of date): [..., H]."""
    p, d = _expand(params, days)
    dropout, shape = split(p)[5][..., None], frailty_shape(p)[..., None]
    grid = d[..., None] * tf.constant(_SHARES)  # [..., H, G]
    inside = tf.exp(-dropout * grid) * _no_visit(before_next_visit(params[..., None, :], grid), shape)
    integral = tf.reduce_sum(_segments(dropout * inside, grid), axis=-1)
    return inside[..., -1] + integral


def expected_visits_there(params: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
    """M(d): the visits a user still there at the as-of date makes within d days, on average: [..., H]."""
    p, d = _expand(params, days)
    _, baseline, excitation, tau, branching, dropout = split(p)
    kappa = (1.0 - branching) / tau
    y_inf = branching * baseline / (1.0 - branching)
    return baseline / (1.0 - branching) * _e(dropout, d) + (excitation - y_inf) * _e(dropout + kappa, d)


def p_alive(params: tf.Tensor) -> tf.Tensor:
    return tf.sigmoid(params[..., 0])


def p_active(params: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
    """P(at least one visit within d days) = p_alive (1 - S_there(d)): [..., H]."""
    return p_alive(params)[..., None] * (1.0 - survival_there(params, days))


def expected_visits(params: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
    """E[visits within d days] = p_alive M(d): [..., H]."""
    return p_alive(params)[..., None] * expected_visits_there(params, days)


def window_visits_there(params: tf.Tensor, n_windows: int | tf.Tensor, window_days: float) -> tf.Tensor:
    """Expected visits of a user still there in each of the next windows, [..., W]."""
    edges = tf.cast(tf.range(n_windows + 1), params.dtype) * window_days
    cumulative = expected_visits_there(params, edges)
    return cumulative[..., 1:] - cumulative[..., :-1]


# --- likelihoods (training) -------------------------------------------------------------------


def survival_nll(params: tf.Tensor, days_to_next: tf.Tensor, censored: tf.Tensor) -> tf.Tensor:
    """-log likelihood [B] of each user's time to the next visit, right-censored; params [B, 7].

    Back after d days: -log(p_alive exp(-dropout d) lambda(d) (1 + R(d) / k)^-(k + 1)) (the user
    was there, did not leave, and came; exp(-R(d)) without frailty). Not back by d as far as we
    know: -log(1 - p_alive + p_alive S_there(d)).
    """
    d = tf.maximum(tf.cast(days_to_next, params.dtype), 1e-3)[:, None]
    observed = 1.0 - tf.cast(censored, params.dtype)
    log_alive, log_gone = tf.math.log_sigmoid(params[:, 0]), tf.math.log_sigmoid(-params[:, 0])
    dropout, shape = tf.exp(params[:, 5]), frailty_shape(params)
    log_first = -(shape + 1.0) * tf.math.log1p(before_next_visit(params, d)[:, 0] / shape)
    back = log_alive - dropout * d[:, 0] + log_first + tf.math.log(rate_before_next_visit(params, d)[:, 0] + 1e-12)
    away = tf.reduce_logsumexp(tf.stack([log_gone, log_alive + tf.math.log(survival_there(params, d)[:, 0] + 1e-12)], axis=-1), axis=-1)
    return -(observed * back + (1.0 - observed) * away)


def _log_counts_there(expected: tf.Tensor, counts: tf.Tensor, dispersion: tf.Tensor | None) -> tf.Tensor:
    """log P(counts | there) per window without the log n! term (0 for a count of 0), [B, W]."""
    if dispersion is None:
        return counts * tf.math.log(expected + 1e-8) - expected
    mu, n = tf.cast(expected, tf.float64) + 1e-8, tf.cast(counts, tf.float64)
    r = 1.0 / tf.cast(dispersion, tf.float64)
    # In float64: with r in the hundreds lgamma(n + r) - lgamma(r) loses most of its digits in float32.
    log_p = tf.math.lgamma(n + r) - tf.math.lgamma(r) - r * tf.math.log1p(mu / r) + n * (tf.math.log(mu) - tf.math.log(r + mu))
    return tf.cast(log_p, expected.dtype)


def window_count_nll(params: tf.Tensor, future_sessions: tf.Tensor, window_days: float, dispersion: tf.Tensor | None = None) -> tf.Tensor:
    """-log likelihood [B] of the visits in each of the next windows, params [B, 7].

    A user who has left shows no visit in any window; a user still there shows Poisson (or,
    with ``dispersion``, negative binomial) counts with :func:`window_visits_there` as means.
    So the chance of having left is one for all of a user's windows, as it is in the world. A
    draw with a frailty (and no ``dispersion``) makes them negative binomial jointly, one G for
    all the windows. A count below 0 marks a window not over when the data end, left out. log n!
    is left out (it does not depend on the model)."""
    counts = tf.cast(future_sessions, params.dtype)
    known = counts >= 0
    seen = tf.maximum(counts, 0.0)
    expected = window_visits_there(params, tf.shape(counts)[1], window_days)
    log_there = tf.reduce_sum(tf.where(known, _log_counts_there(expected, seen, dispersion), 0.0), axis=-1)
    if dispersion is None:
        log_there = _log_counts_with_frailty(log_there, tf.where(known, expected, 0.0), tf.where(known, seen, 0.0), frailty_shape(params))
    silent = tf.reduce_all(tf.logical_or(~known, seen == 0), axis=-1)
    log_alive, log_gone = tf.math.log_sigmoid(params[:, 0]), tf.math.log_sigmoid(-params[:, 0])
    gone = tf.where(silent, log_gone, tf.fill(tf.shape(log_gone), tf.constant(-1e9, params.dtype)))
    return -tf.reduce_logsumexp(tf.stack([gone, log_alive + log_there], axis=-1), axis=-1)


def _log_counts_with_frailty(log_poisson: tf.Tensor, expected: tf.Tensor, counts: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """log P(counts | there) [B] over windows sharing one G ~ Gamma(k, k), from the Poisson
    log likelihood given G = 1, ``log_poisson`` = sum n log mu - M (windows not over have mu = n = 0):

        lgamma(k + N) - lgamma(k) - N log k + sum n log mu - (k + N) log1p(M / k)

    with N, M the visits and expected visits over the windows (in float64); the Poisson one
    where k is past ``_NO_FRAILTY_SHAPE``."""
    n, m = tf.cast(tf.reduce_sum(counts, axis=-1), tf.float64), tf.cast(tf.reduce_sum(expected, axis=-1), tf.float64)
    k = tf.cast(shape, tf.float64)
    none = k > _NO_FRAILTY_SHAPE
    k = tf.where(none, tf.ones_like(k), k)
    sum_n_log_mu = tf.cast(log_poisson, tf.float64) + m
    log_p = tf.math.lgamma(k + n) - tf.math.lgamma(k) - n * tf.math.log(k) + sum_n_log_mu - (k + n) * tf.math.log1p(m / k)
    return tf.where(none, log_poisson, tf.cast(log_p, log_poisson.dtype))


def dispersion_from_raw(raw: tf.Tensor) -> tf.Tensor:
    """A raw variable -> the negative binomial dispersion, in [MIN_DISPERSION, MAX_DISPERSION] log-uniformly."""
    return _log_bounded(raw, MIN_DISPERSION, MAX_DISPERSION)


def count_row_weights(recent_sessions: tf.Tensor, last_windows: int = 4) -> tf.Tensor:
    """Weights [B] of each row's count likelihood: 1 / (1 + sessions per window in the user's
    last ``last_windows`` input windows).

    A user with ten visits a week adds a gradient of tens of visits per step, a fading one a
    fraction of a visit, so unweighted the busy users set the fit and the fading ones, whose decay
    the model is for, are left over- or under-predicted. The weights depend on the inputs only, so
    the weighted likelihood still has the true rates at its optimum.
    """
    recent = tf.reduce_mean(tf.cast(recent_sessions[:, -last_windows:], tf.float32), axis=1)
    return 1.0 / (1.0 + tf.maximum(recent, 0.0))


# --- what a user's row says (serving) ---------------------------------------------------------


def day_grid(*days: object) -> np.ndarray:
    """The serving grid: SILENCE_DAYS and every day asked for (horizons, the decay curve's days),
    sorted and unique, from 0. Whatever is read off it is read at a grid day exactly."""
    wanted = np.concatenate([np.ravel(np.asarray(d, np.float32)) for d in days]) if days else np.zeros(0, np.float32)
    return np.union1d(SILENCE_DAYS, wanted).astype(np.float32)


def at_days(curve: tf.Tensor, grid: np.ndarray, days: object) -> tf.Tensor:
    """``curve`` [..., G] on ``grid`` read at ``days`` (each of them a grid day)."""
    return tf.gather(curve, np.searchsorted(grid, np.asarray(days, np.float32)), axis=-1)


def survival_there_on(params: tf.Tensor, grid: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """(S_there, still there with no visit yet), each [..., G], on every day of ``grid`` (from
    0) at once: the dropout integral is one cumulative sum over the grid, where :func:`survival_there`
    takes a quadrature per day."""
    survival, undropped, _ = _survival_on(params, grid)
    return survival, undropped


def _survival_on(params: tf.Tensor, grid: np.ndarray) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """:func:`survival_there_on`'s two curves and R(d) on ``grid``, which they are made from."""
    days = tf.constant(grid)
    dropout, shape = split(params)[5][..., None], frailty_shape(params)[..., None]
    expected_before = before_next_visit(params, days)
    undropped = tf.exp(-dropout * days) * _no_visit(expected_before, shape)
    steps = _segments(dropout * undropped, days)
    left_silent = tf.concat([tf.zeros_like(steps[..., :1]), tf.cumsum(steps, axis=-1)], axis=-1)
    return undropped + left_silent, undropped, expected_before


INTERVAL = (0.1, 0.9)  # the 80% interval every score comes with
# The shapes G's quantiles are tabulated on (log-spaced), interpolated in log k between them.
_QUANTILE_SHAPES = np.geomspace(1e-2, _NO_FRAILTY_SHAPE, 241)
_LOG_FLOOR = -60.0  # log of a quantile too small for float (a shape near 0, a low quantile)


@functools.lru_cache(maxsize=8)
def _log_frailty_quantiles(q: float) -> np.ndarray:
    """log of the ``q`` quantile of G ~ Gamma(k, k) at every k of ``_QUANTILE_SHAPES``."""
    from scipy.stats import gamma  # here: a SavedModel holds the table, scoring never calls it

    with np.errstate(divide="ignore"):
        logged = np.log(gamma.ppf(q, _QUANTILE_SHAPES) / _QUANTILE_SHAPES)
    return np.maximum(np.nan_to_num(logged, nan=_LOG_FLOOR, neginf=_LOG_FLOOR), _LOG_FLOOR).astype(np.float32)


def at_frailty_quantile(params: tf.Tensor, q: float) -> tf.Tensor:
    """params [..., 7] with each draw's frailty G fixed at its ``q`` quantile: the visit rate
    times it, no frailty left. P(active) and expected visits rise with G, so a draw's interval
    is its values at G's INTERVAL quantiles; a draw without frailty stays as it is."""
    table = tf.constant(_log_frailty_quantiles(float(q)))
    log_k = params[..., 6]
    first, last = math.log(_QUANTILE_SHAPES[0]), math.log(_QUANTILE_SHAPES[-1])
    position = tf.clip_by_value((log_k - first) / ((last - first) / (len(_QUANTILE_SHAPES) - 1)), 0.0, len(_QUANTILE_SHAPES) - 1.0)
    low = tf.minimum(tf.cast(tf.floor(position), tf.int32), len(_QUANTILE_SHAPES) - 2)
    share = position - tf.cast(low, position.dtype)
    log_g = tf.gather(table, low) * (1.0 - share) + tf.gather(table, low + 1) * share
    log_g = tf.where(log_k >= last, tf.zeros_like(log_g), log_g)[..., None]
    # Not clipped at MAX_LOG_RATE: the excitation is not bounded by it, and G's 90th percentile
    # is under 3 for any shape, so a clip would only pull a busy user's high bound below the point.
    rates = params[..., 1:3] + log_g
    return tf.concat([params[..., :1], rates, params[..., 3:6], tf.fill(tf.shape(log_k[..., None]), NO_FRAILTY_LOG_SHAPE)], axis=-1)


def p_active_on(params: tf.Tensor, days: object) -> tf.Tensor:
    """P(active within each of ``days``) [..., H] (``days`` known when the graph is built), on
    the serving grid: what every score reads."""
    grid = day_grid(days)
    survival, _ = survival_there_on(params, grid)
    return p_alive(params)[..., None] * (1.0 - at_days(survival, grid, days))


def silence_curves(params: tf.Tensor, grid: np.ndarray = SILENCE_DAYS) -> dict[str, tf.Tensor]:
    """For params [B, D, 7] (D draws of each user's state), on ``grid`` [G] from 0, if the user
    stays silent that long:

    - ``silent``: P(no visit within d) over the draws, [B, G] (the decay curve);
    - ``rate``: the expected visit rate after d days of silence (the next visit's hazard), [B, G];
    - ``there``: P(still there | silent d days), [B, G];
    - ``active_by_draw``: P(active within d) for each draw, [B, D, G].
    """
    p_there = p_alive(params)[..., None]  # [B, D, 1]
    _, baseline, excitation, tau, _, _ = (v[..., None] for v in split(params))
    survival, undropped, expected_before = _survival_on(params, grid)  # [B, D, G]
    silent = tf.reduce_mean(1.0 - p_there + p_there * survival, axis=1)
    there_joint = tf.reduce_mean(p_there * undropped, axis=1)
    # E[G | no visit yet] = k / (k + R(d)): a silent user is likelier a slow one.
    slower = 1.0 / (1.0 + expected_before / frailty_shape(params)[..., None])
    rate = tf.reduce_mean(p_there * undropped * slower * (baseline + excitation * tf.exp(-tf.constant(grid) / tau)), axis=1) / silent
    return {"silent": silent, "rate": rate, "there": there_joint / silent, "active_by_draw": p_there * (1.0 - survival), "grid": grid}


def weighed_curves(parts: list[dict[str, tf.Tensor]], weights: list[float]) -> dict[str, tf.Tensor]:
    """The :func:`silence_curves` of a mixture of parts, from each part's own (on one grid) and
    its weight: P(silent) is the weighed sum; the rate and P(there) given silence are the
    weighed sums of each part's joint quantity, over the mixture's P(silent)."""
    silent = tf.add_n([w * part["silent"] for w, part in zip(weights, parts, strict=True)])
    rate = tf.add_n([w * part["rate"] * part["silent"] for w, part in zip(weights, parts, strict=True)]) / silent
    there = tf.add_n([w * part["there"] * part["silent"] for w, part in zip(weights, parts, strict=True)]) / silent
    return {"silent": silent, "rate": rate, "there": there, "grid": parts[0]["grid"]}


def excitation_kernel(params: tf.Tensor, days: np.ndarray = SILENCE_DAYS) -> tf.Tensor:
    """What a visit adds to the visit rate d days later, over the draws, [B, G]: the mean of
    p_alive alpha exp(-d / tau), alpha = branching / tau. Its half-life is the interest half-life."""
    p_there, _, _, tau, branching, _ = (v[..., None] for v in split(params))
    return tf.reduce_mean(p_there * branching / tau * tf.exp(-tf.constant(days) / tau), axis=1)


def first_below(curve: tf.Tensor, level: tf.Tensor, days: np.ndarray = SILENCE_DAYS, cap: float = CAP_DAYS) -> tf.Tensor:
    """The first day on the grid ``days`` where the decreasing ``curve`` [..., G] reaches
    ``level`` [...], interpolated linearly between grid days; ``cap`` where it never does."""
    grid = tf.constant(days)
    below = curve <= level[..., None]
    reached = tf.reduce_any(below, axis=-1)
    index = tf.maximum(tf.argmax(tf.cast(below, tf.int32), axis=-1), 1)
    batch_dims = len(curve.shape) - 1
    after, before = tf.gather(curve, index, batch_dims=batch_dims), tf.gather(curve, index - 1, batch_dims=batch_dims)
    d_after, d_before = tf.gather(grid, index), tf.gather(grid, index - 1)
    share = tf.clip_by_value((before - level) / tf.maximum(before - after, 1e-12), 0.0, 1.0)
    return tf.where(reached, d_before + share * (d_after - d_before), cap)


def interest_half_life_days(params: tf.Tensor) -> tf.Tensor:
    """Days until the interest a visit brings has halved, per user [B]: the half-life of
    :func:`excitation_kernel` (tau ln 2 when the draws agree on tau)."""
    kernel = excitation_kernel(params)
    return first_below(kernel, kernel[:, 0] / 2.0)


def silence_half_life_days(curves: dict[str, tf.Tensor]) -> tf.Tensor:
    """Days of silence until the expected visit rate has halved, per user [B] (``CAP_DAYS`` if
    it never does): the excitation fading and the chance of having left growing, together."""
    rate = curves["rate"]
    return first_below(rate, rate[:, 0] / 2.0, curves["grid"])


def dropout_share(curves: dict[str, tf.Tensor], half_life: tf.Tensor) -> tf.Tensor:
    """How much of the visit rate's halving in silence the growing chance of having left
    explains, in [0, 1]: log(P(there | silent 0) / P(there | silent h)) / log 2 at the silence
    half-life h (the rest is the excitation fading)."""
    grid = tf.constant(curves["grid"])
    there = curves["there"]
    index = tf.minimum(tf.searchsorted(tf.broadcast_to(grid, tf.shape(there)), half_life[:, None])[:, 0], len(curves["grid"]) - 1)
    at_half = tf.gather(there, index, batch_dims=1)
    return tf.clip_by_value(tf.math.log(there[:, 0] / tf.maximum(at_half, 1e-12)) / math.log(2.0), 0.0, 1.0)


def return_median_days(curves: dict[str, tf.Tensor]) -> tf.Tensor:
    """Days until the chance of having come back reaches one half, per user [B] (``CAP_DAYS`` if never)."""
    silent = curves["silent"]
    return first_below(silent, tf.fill(tf.shape(silent[:, 0]), 0.5), curves["grid"])


def interest_now(params: tf.Tensor) -> tf.Tensor:
    """The share of today's visit rate that is excitation, times the chance the user is still
    there, averaged over the draws: 0 (nothing left, or gone) to 1 (all of it interest), [B]."""
    p_there, baseline, excitation, _, _, _ = split(params)
    return tf.reduce_mean(p_there * excitation / (baseline + excitation), axis=1)


def baseline_visits(params: tf.Tensor, days: float = 30.0) -> tf.Tensor:
    """The visits in ``days`` days the user makes without any excitation, if still there, times
    the chance of being there, averaged over the draws, [B]."""
    p_there, baseline, _, _, _, _ = split(params)
    return tf.reduce_mean(p_there * baseline, axis=1) * days
