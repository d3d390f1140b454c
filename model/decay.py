"""The parametric decay head: each user's own fading interest on top of the user's own baseline.

A user's expected visit rate ``d`` days after the as-of date (visits = sessions) is

    rate(d)   = sum_k level_k * exp(-d / tau_k) + floor
    Lambda(d) = sum_k level_k * tau_k * (1 - exp(-d / tau_k)) + floor * d      (expected visits in d days)
    S(d)      = exp(-Lambda(d))                                                 (P(no visit in d days))

or, when users who look alike differ by a gamma factor of variance a on their rate (the
``frailty``), S(d) = (1 + a Lambda(d))^(-1/a), with Lambda still the mean visits.

``level_k`` is today's interest in component k (visits per day above the baseline), ``tau_k`` how
fast it fades (days), ``floor`` the baseline that stays. From these, in closed form:

- P(active within h days) = 1 - S(h), for any h;
- expected visits in h days = Lambda(h);
- the interest half-life: days until the excess rate (rate - floor) halves,
  sum_k level_k exp(-d / tau_k) = 1/2 sum_k level_k; for one component exactly tau ln 2;
- the return median: days until S(d) = 1/2 (the median wait for the next visit);
- the baseline (floor) and today's interest over it (sum_k level_k / floor).

The curve is learned from what follows each as-of date: the censored time to the next visit
(:func:`survival_nll`) and the visits in each of the next few windows (:func:`window_count_nll`).
The first alone mostly says which users are still away; how fast each one's visits fade is in
the counts over several windows.

``decay_params`` [B, 2K + 1] = (log level_k today, tau_k in days, log floor): logs, so a level that
has faded to almost nothing keeps its share of the excess (the interest half-life stays defined).
"""

from __future__ import annotations

import math

import tensorflow as tf

MIN_TAU_DAYS = 0.5
MAX_TAU_DAYS = 365.0
# Soft upper bounds on log rates (visits per day): e^7 ~ 1,100 visits a day is already a bot.
MAX_LOG_RATE = 7.0
RETURN_MEDIAN_CAP_DAYS = 365.0
# Bounds of the negative binomial count likelihood's dispersion (variance = mu (1 + dispersion mu)).
MIN_DISPERSION = 1e-3
MAX_DISPERSION = 10.0
PARAMS_LAYOUT = "log_level_now,tau_days,log_floor/v2"


def _soft_max(value: tf.Tensor, bound: float) -> tf.Tensor:
    """``value`` below ``bound``, smoothly: about ``value`` well below it, never above."""
    return bound - tf.nn.softplus(bound - value)


def tau_from_raw(raw: tf.Tensor) -> tf.Tensor:
    """Raw head outputs -> time constants bounded to [MIN_TAU_DAYS, MAX_TAU_DAYS], log-uniformly."""
    low, high = math.log(MIN_TAU_DAYS), math.log(MAX_TAU_DAYS)
    return tf.exp(low + (high - low) * tf.sigmoid(raw))


def raw_for_tau(tau_days: float) -> float:
    """The raw head output whose :func:`tau_from_raw` is ``tau_days`` (for initial biases)."""
    low, high = math.log(MIN_TAU_DAYS), math.log(MAX_TAU_DAYS)
    share = (math.log(tau_days) - low) / (high - low)
    return math.log(share / (1.0 - share))


def head_params(raw: tf.Tensor, n_components: int) -> tf.Tensor:
    """Raw head outputs [B, 2K + 1] -> decay_params [B, 2K + 1]: log levels and log floor kept
    below e^7 visits a day, time constants bounded to [MIN_TAU_DAYS, MAX_TAU_DAYS]. Nothing
    scales the floor or pins a time constant, so both can move per user."""
    k = n_components
    log_level = _soft_max(raw[:, :k], MAX_LOG_RATE)
    tau = tau_from_raw(raw[:, k : 2 * k])
    log_floor = _soft_max(raw[:, 2 * k :], MAX_LOG_RATE)
    return tf.concat([log_level, tau, log_floor], axis=1)


def average_curves(member_params: list[tf.Tensor], n_components: int) -> tf.Tensor:
    """The mean of several models' decay curves as one curve of the same form, [B, 2NK + 1].

    The mean of N curves sum_k level_k exp(-d / tau_k) + floor is itself such a curve with the
    N x K components, each level divided by N, and the mean of the floors. So every closed form
    (Lambda, S, the half-life, the return median) reads the average as it reads one model.
    """
    n = len(member_params)
    if n == 0:
        raise ValueError("member_params is empty: average at least one model's curves")
    k, shrink = n_components, math.log(float(n))
    levels = [params[:, :k] - shrink for params in member_params]
    taus = [params[:, k : 2 * k] for params in member_params]
    floors = tf.concat([params[:, 2 * k :] for params in member_params], axis=1)
    log_floor = tf.reduce_logsumexp(floors, axis=1, keepdims=True) - shrink
    return tf.concat([*levels, *taus, log_floor], axis=1)


def split_params(params: tf.Tensor, n_components: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """decay_params [B, 2K + 1] -> (level today [B, K], tau_days [B, K], floor [B, 1]), rates per day."""
    k = n_components
    return tf.exp(params[:, :k]), params[:, k : 2 * k], tf.exp(params[:, 2 * k :])


def cumulative_rate(params: tf.Tensor, days: tf.Tensor, n_components: int) -> tf.Tensor:
    """Lambda(d), the expected visits in the next d days: [B, H] for ``days`` of shape [B, H],
    [B, 1] (one per user) or [1, H] (a shared grid)."""
    level, tau, floor = split_params(params, n_components)
    d = tf.convert_to_tensor(days, dtype=params.dtype)
    faded = level[:, None, :] * tau[:, None, :] * (1.0 - tf.exp(-d[..., None] / tau[:, None, :]))
    return tf.reduce_sum(faded, axis=-1) + floor * d


def rate(params: tf.Tensor, days: tf.Tensor, n_components: int) -> tf.Tensor:
    """rate(d) [B, H] in visits per day, shapes as in :func:`cumulative_rate`."""
    level, tau, floor = split_params(params, n_components)
    d = tf.convert_to_tensor(days, dtype=params.dtype)
    return tf.reduce_sum(level[:, None, :] * tf.exp(-d[..., None] / tau[:, None, :]), axis=-1) + floor


def survival_from_cumulative(cumulative: tf.Tensor, frailty: tf.Tensor | float | None = None) -> tf.Tensor:
    """S = P(no visit) from Lambda, the expected visits: exp(-Lambda) for a Poisson process;
    (1 + a Lambda)^(-1/a) when each user's rate is Lambda's times a gamma-distributed factor of
    mean 1 and variance ``frailty`` = a (see :func:`survival`)."""
    if frailty is None:
        return tf.exp(-cumulative)
    a = tf.cast(frailty, cumulative.dtype)
    return tf.exp(-tf.math.log1p(a * cumulative) / a)


def survival(params: tf.Tensor, days: tf.Tensor, n_components: int, frailty: tf.Tensor | float | None = None) -> tf.Tensor:
    """S(d) = P(no visit within d days), [B, H].

    With ``frailty`` (a gamma frailty's variance, a > 0), Lambda(d) is the mean of the expected
    visits of the users who look like this one, and their own rates spread around it: P(active)
    is then below 1 - exp(-Lambda), because the visits of the busier ones do not bring back more
    users. Without it, one Poisson rate has to serve both how many users come back and how
    often, and neither comes out right when users who look alike differ.
    """
    return survival_from_cumulative(cumulative_rate(params, days, n_components), frailty)


def survival_nll(
    params: tf.Tensor, days_to_next: tf.Tensor, censored: tf.Tensor, n_components: int, frailty: tf.Tensor | None = None
) -> tf.Tensor:
    """Negative log-likelihood [B] of each user's time to the next visit, right-censored.

    Observed return after ``d`` days: minus the log density, -log rate(d) + Lambda(d). Censored
    at ``d`` (not back by then, as far as we know): -log S(d) = Lambda(d). With a gamma
    ``frailty`` a: -log S(d) = log(1 + a Lambda(d)) / a, and the density is
    rate(d) (1 + a Lambda(d))^(-1/a - 1).
    """
    d = tf.maximum(tf.cast(days_to_next, params.dtype), 1e-3)[:, None]
    observed = 1.0 - tf.cast(censored, params.dtype)
    log_rate = tf.math.log(rate(params, d, n_components)[:, 0] + 1e-8)
    cumulative = cumulative_rate(params, d, n_components)[:, 0]
    if frailty is None:
        return cumulative - observed * log_rate
    a = tf.cast(frailty, params.dtype)
    log_spread = tf.math.log1p(a * cumulative)
    return log_spread / a + observed * (log_spread - log_rate)


def _poisson_terms(expected: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """mu - n log mu per window (the log n! term does not depend on the model), [B, W]."""
    return expected - counts * tf.math.log(expected + 1e-8)


def window_visits(params: tf.Tensor, n_windows: int | tf.Tensor, window_days: float, n_components: int) -> tf.Tensor:
    """Expected visits [B, n_windows] in each of the next windows after the as-of date: window i
    expects Lambda((i + 1) W) - Lambda(i W)."""
    edges = tf.cast(tf.range(n_windows + 1), params.dtype)[None, :] * window_days
    cumulative = cumulative_rate(params, edges, n_components)
    return cumulative[:, 1:] - cumulative[:, :-1]


def _negative_binomial_terms(expected: tf.Tensor, counts: tf.Tensor, dispersion: tf.Tensor) -> tf.Tensor:
    """The negative binomial NLL per window with mean mu and variance mu (1 + dispersion mu),
    log n! left out as in :func:`_poisson_terms` (so the two compare, and it tends to the Poisson
    one as the dispersion goes to 0), [B, W].

    In float64: with r = 1 / dispersion in the hundreds, lgamma(n + r) - lgamma(r) loses most of
    its digits in float32.
    """
    mu, n = tf.cast(expected, tf.float64) + 1e-8, tf.cast(counts, tf.float64)
    r = 1.0 / tf.cast(dispersion, tf.float64)
    terms = tf.math.lgamma(r) - tf.math.lgamma(n + r) + r * tf.math.log1p(mu / r) + n * (tf.math.log(r + mu) - tf.math.log(mu))
    return tf.cast(terms, expected.dtype)


def dispersion_from_raw(raw: tf.Tensor) -> tf.Tensor:
    """A raw variable -> the negative binomial dispersion, bounded to [MIN_DISPERSION, MAX_DISPERSION]
    log-uniformly (0 would be Poisson; 10 is a variance ten times the square of the mean)."""
    low, high = math.log(MIN_DISPERSION), math.log(MAX_DISPERSION)
    return tf.exp(low + (high - low) * tf.sigmoid(raw))


def window_count_nll(
    params: tf.Tensor,
    future_sessions: tf.Tensor,
    window_days: float,
    n_components: int,
    dispersion: tf.Tensor | None = None,
    frailty: tf.Tensor | None = None,
) -> tf.Tensor:
    """Negative log-likelihood [B] of the visits in each of the next windows after the as-of
    date (:func:`window_visits`): Poisson; or negative binomial with ``dispersion``, each window
    on its own (visits that come in bursts); or, with a gamma ``frailty``, the windows together
    (:func:`_shared_frailty_terms`: one factor scales all of a user's windows). A count below 0
    marks a window not observed yet (past the end of the data) and is left out."""
    if dispersion is not None and frailty is not None:
        raise ValueError("give dispersion or frailty, not both: the frailty already makes the counts negative binomial")
    counts = tf.cast(future_sessions, params.dtype)
    expected = window_visits(params, tf.shape(counts)[1], window_days, n_components)
    seen = tf.maximum(counts, 0.0)
    if frailty is not None:
        return _shared_frailty_terms(expected, seen, counts >= 0, frailty)
    terms = _poisson_terms(expected, seen) if dispersion is None else _negative_binomial_terms(expected, seen, dispersion)
    return tf.reduce_sum(tf.where(counts >= 0, terms, 0.0), axis=-1)


def _shared_frailty_terms(expected: tf.Tensor, counts: tf.Tensor, known: tf.Tensor, frailty: tf.Tensor) -> tf.Tensor:
    """NLL [B] of the known windows' counts n_w with means mu_w, all scaled by one gamma factor
    of mean 1 and variance a = 1/r (log n_w! left out, as in :func:`_poisson_terms`; it tends to
    the Poisson sum as a goes to 0). With N = sum n_w and M = sum mu_w:

        -log P = lgamma(r) - lgamma(r + N) + (r + N) log(1 + M / r) + N log r - sum n_w log mu_w

    In float64, as :func:`_negative_binomial_terms` and for the same reason.
    """
    mu = tf.cast(expected, tf.float64) + 1e-8
    n = tf.where(known, tf.cast(counts, tf.float64), 0.0)
    mu_known = tf.where(known, mu, 0.0)
    total_n, total_mu = tf.reduce_sum(n, axis=-1), tf.reduce_sum(mu_known, axis=-1)
    r = 1.0 / tf.cast(frailty, tf.float64)
    nll = (
        tf.math.lgamma(r)
        - tf.math.lgamma(r + total_n)
        + (r + total_n) * tf.math.log1p(total_mu / r)
        + total_n * tf.math.log(r)
        - tf.reduce_sum(n * tf.math.log(mu), axis=-1)
    )
    return tf.cast(nll, expected.dtype)


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


def _bisect(function, low: tf.Tensor, high: tf.Tensor, steps: int = 40) -> tf.Tensor:  # noqa: ANN001
    """The d in [low, high] where the decreasing ``function(d)`` [B] crosses zero, per user."""

    def halve(step: tf.Tensor, low: tf.Tensor, high: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        middle = (low + high) / 2
        above = function(middle) > 0
        return step + 1, tf.where(above, middle, low), tf.where(above, high, middle)

    # A loop op, not a Python loop: unrolled, 40 steps made the saved model's graph (and the time
    # to trace and save it) several times larger.
    _, low, high = tf.while_loop(lambda step, *_: step < steps, halve, (tf.constant(0), low, high))
    return (low + high) / 2


def return_median_days(
    params: tf.Tensor, n_components: int, cap: float = RETURN_MEDIAN_CAP_DAYS, frailty: tf.Tensor | float | None = None
) -> tf.Tensor:
    """Days until the chance of having come back reaches one half (S(d) = 1/2), per user [B]:
    the median wait for the next visit. A curve that does not reach one half within ``cap``
    days gives ``cap``. Bisection on the closed form, in TensorFlow ops (it runs in the saved model).
    S = 1/2 where Lambda = ln 2, or (2^a - 1) / a with a gamma ``frailty`` a."""
    params = tf.convert_to_tensor(params, tf.float32)
    if frailty is None:
        target = math.log(2.0)
    else:
        a = tf.cast(frailty, tf.float32)
        target = tf.math.expm1(a * math.log(2.0)) / a

    def still_away(d: tf.Tensor) -> tf.Tensor:
        return target - cumulative_rate(params, d[:, None], n_components)[:, 0]

    low = tf.zeros_like(params[:, 0])
    reaches = still_away(low + cap) <= 0
    return tf.where(reaches, _bisect(still_away, low, low + cap), cap)


def interest_half_life_days(params: tf.Tensor, n_components: int) -> tf.Tensor:
    """Days until the user's excess rate over the baseline halves, per user [B].

    Solves sum_k w_k exp(-d / tau_k) = 1/2 with w_k each component's share of today's excess
    (from the log levels, so a faded excess keeps its shape); one component gives tau ln 2.
    Always reached within MAX_TAU_DAYS ln 2.
    """
    params = tf.convert_to_tensor(params, tf.float32)
    k = n_components
    share = tf.nn.softmax(params[:, :k], axis=1)
    tau = params[:, k : 2 * k]

    def excess_left(d: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(share * tf.exp(-d[:, None] / tau), axis=1) - 0.5

    low = tf.zeros_like(params[:, 0])
    return _bisect(excess_left, low, low + MAX_TAU_DAYS * math.log(2.0) * 1.001)


def visits_calibration_factor(params: tf.Tensor, n_components: int, scale: float, slope: float, reference_days: float) -> tf.Tensor:
    """What each user's expected visits are multiplied by, [B]: scale x Lambda(reference_days)^(slope - 1).

    ``reference_days`` is the span the slope was fitted on (one window: the level
    :func:`model.training.fit_visits_calibration` was given), so it has no default. A slope of 1
    is one scale for every user. Below 1 the busiest users' visits come down more
    than the quiet users' (a model whose predictions spread too wide); above 1, the reverse. The
    factor depends on the user's level over a fixed span, not on the horizon, so it scales the
    whole curve: Lambda(h) x factor still adds up over consecutive windows.
    """
    params = tf.convert_to_tensor(params, tf.float32)
    if slope == 1.0:
        return tf.fill(tf.shape(params[:, 0]), tf.constant(scale, tf.float32))
    level = cumulative_rate(params, tf.constant([[reference_days]], tf.float32), n_components)[:, 0]
    return scale * tf.pow(tf.maximum(level, 1e-8), slope - 1.0)


def baseline_visits(params: tf.Tensor, n_components: int, days: float = 30.0) -> tf.Tensor:
    """The baseline: expected visits in ``days`` days from the floor alone, [B]."""
    return split_params(params, n_components)[2][:, 0] * days


def interest_now(params: tf.Tensor, n_components: int) -> tf.Tensor:
    """Today's excess rate over the baseline, as a ratio (0: nothing left above the baseline), [B]."""
    level, _, floor = split_params(params, n_components)
    return tf.reduce_sum(level, axis=1) / floor[:, 0]
