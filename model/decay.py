"""The parametric decay head: a survival curve that can only fall and extrapolates in closed form.

A user's return rate ``d`` days after the as-of date is a mixture of interest components that
fade exponentially, plus a floor:

    rate(d)  = sum_k level_k * exp(-d / tau_k) + floor
    Lambda(d) = sum_k level_k * tau_k * (1 - exp(-d / tau_k)) + floor * d      (cumulative rate)
    S(d)     = exp(-Lambda(d))          P(no session in the next d days)

Lambda only grows, so S only falls; P(active within h days) = 1 - S(h) for any h.
"""

from __future__ import annotations

import math

import tensorflow as tf

MIN_TAU_DAYS = 0.5
HALF_LIFE_CAP_DAYS = 365.0


def split_params(params: tf.Tensor, n_components: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Raw head outputs [batch, 2K + 1] -> (level [B, K], tau_days [B, K], floor [B, 1]), all positive."""
    level = tf.nn.softplus(params[:, :n_components])
    tau = MIN_TAU_DAYS + tf.nn.softplus(params[:, n_components : 2 * n_components])
    floor = tf.nn.softplus(params[:, 2 * n_components :]) * 0.01
    return level, tau, floor


def cumulative_rate(params: tf.Tensor, days: tf.Tensor, n_components: int) -> tf.Tensor:
    """Lambda(d) [B, H] for ``days`` of shape [B, H], [B, 1] (one per user) or [1, H] (a shared grid)."""
    level, tau, floor = split_params(params, n_components)
    d = tf.convert_to_tensor(days, dtype=params.dtype)
    faded = level[:, None, :] * tau[:, None, :] * (1.0 - tf.exp(-d[..., None] / tau[:, None, :]))
    return tf.reduce_sum(faded, axis=-1) + floor * d


def rate(params: tf.Tensor, days: tf.Tensor, n_components: int) -> tf.Tensor:
    """rate(d) [B, H], shapes as in :func:`cumulative_rate`."""
    level, tau, floor = split_params(params, n_components)
    d = tf.convert_to_tensor(days, dtype=params.dtype)
    return tf.reduce_sum(level[:, None, :] * tf.exp(-d[..., None] / tau[:, None, :]), axis=-1) + floor


def survival(params: tf.Tensor, days: tf.Tensor, n_components: int) -> tf.Tensor:
    """S(d) = P(no session within d days), [B, H]."""
    return tf.exp(-cumulative_rate(params, days, n_components))


def survival_nll(params: tf.Tensor, days_to_next: tf.Tensor, censored: tf.Tensor, n_components: int) -> tf.Tensor:
    """Negative log-likelihood [B] of each user's time to the next session, right-censored.

    Observed return after ``d`` days: -log rate(d) + Lambda(d). Censored at ``d`` (not back by
    then, as far as we know): Lambda(d).
    """
    d = tf.maximum(tf.cast(days_to_next, params.dtype), 1e-3)[:, None]
    observed = 1.0 - tf.cast(censored, params.dtype)
    log_rate = tf.math.log(rate(params, d, n_components)[:, 0] + 1e-8)
    return cumulative_rate(params, d, n_components)[:, 0] - observed * log_rate


def half_life_days(params: tf.Tensor, n_components: int, cap: float = HALF_LIFE_CAP_DAYS) -> tf.Tensor:
    """Days until the chance of having come back reaches one half (S(d) = 0.5), per user [B].

    Bisection on the closed form (TensorFlow ops only, so it runs inside a saved model); a curve
    that does not reach one half within ``cap`` days gives ``cap``.
    """
    params = tf.convert_to_tensor(params, tf.float32)
    target = math.log(2.0)
    low = tf.zeros_like(params[:, 0])
    high = tf.fill(tf.shape(low), cap)
    reaches = cumulative_rate(params, high[:, None], n_components)[:, 0] >= target
    for _ in range(30):  # the bracket shrinks to cap / 2**30 days
        middle = (low + high) / 2
        above = cumulative_rate(params, middle[:, None], n_components)[:, 0] >= target
        high = tf.where(above, middle, high)
        low = tf.where(above, low, middle)
    return tf.where(reaches, (low + high) / 2, cap)


def interest_half_life_days(params: tf.Tensor, n_components: int, cap: float = HALF_LIFE_CAP_DAYS) -> tf.Tensor:
    """Days until the user's return rate falls to half of today's (rate(d) = rate(0) / 2), per user [B].

    This is the half-life of the interest itself (for one fading component, tau * ln 2), where
    :func:`half_life_days` is the median wait for the next visit. A rate whose floor keeps it
    above one half within ``cap`` days gives ``cap``.
    """
    params = tf.convert_to_tensor(params, tf.float32)
    target = rate(params, tf.zeros_like(params[:, :1]), n_components)[:, 0] / 2
    low = tf.zeros_like(params[:, 0])
    high = tf.fill(tf.shape(low), cap)
    reaches = rate(params, high[:, None], n_components)[:, 0] <= target
    for _ in range(30):
        middle = (low + high) / 2
        below = rate(params, middle[:, None], n_components)[:, 0] <= target
        high = tf.where(below, middle, high)
        low = tf.where(below, low, middle)
    return tf.where(reaches, (low + high) / 2, cap)
