"""Pareto/NBD as one more part of each user's mixture, with its weight chosen on validation users.

A deep model trained on a few thousand users can rank worse than the closed-form customer-base
model that every CRM team knows (Pareto/NBD, Schmittlein, Morrison and Colombo 1987), and a
deep model trained on a purchase log extrapolates far past its last label. So the saved model
serves a mixture of two parts for every user:

    w * (the network's draws of the user's state) + (1 - w) * (Pareto/NBD's posterior of it)

Pareto/NBD's posterior is written in the decay head's own parameters (model/decay.py), so every
score, interval and curve comes from one distribution, as before. Given the user's repeat
sessions x, the day of the last one t_x and their age T (days since the first session), with
the shop's prior fitted by lifetimes (r, alpha for the visit rate, s, beta for the dropout):

- P(still there) = 1 / (1 + s * integral_{t_x}^{T} ((alpha+T)/(alpha+y))^(r+x) ((beta+T)/(beta+y))^s / (beta+y) dy),
  a one-dimensional quadrature (lifetimes needs a hypergeometric function for it);
- given still there, rate ~ Gamma(r + x, alpha + T) and dropout ~ Gamma(s, beta + T),
  independently, each cut into ``DRAWS`` equally likely bins and taken at the bins' means (so
  the posterior means are kept), paired on a lattice: no excitation, no branching.

The weight is the one of ``WEIGHTS`` whose mixture gives the validation rows' labels "active
within h days" (every horizon of the model, where known) the highest likelihood: the mean log
loss of the P(active) a team reads, ranking and calibration together. The network alone unless
another weight is better by more than ``TOLERANCE``. Both parts' likelihoods are computed once,
so every weight is a sum, not a refit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from interest_decay.contract import STATIC_FEATURES
from interest_decay.model import decay

_TENURE, _RECENCY, _SESSIONS = (STATIC_FEATURES.index(c) for c in ("tenure_days", "recency_days", "total_sessions"))

# Draws of (rate, dropout) that stand for Pareto/NBD's posterior of a user still there.
DRAWS = 16
# The network's share of the mixture, as copies of the two parts' draws (uniform weights per draw,
# which every reader of decay_params assumes): (network copies, Pareto/NBD copies).
WEIGHTS = {1.0: (1, 0), 2 / 3: (2, 1), 0.5: (1, 1), 1 / 3: (1, 2), 0.0: (0, 1)}
# A weight other than the network alone must beat it by this much validation log likelihood per label.
TOLERANCE = 1e-3
# Nodes of the P(still there) quadrature, evenly spaced in log(alpha + y).
_NODES = 64
# The standard gamma's bin means are tabulated on these shapes (log-spaced) and interpolated.
_SHAPES = np.geomspace(1e-3, 1e5, 321)
_LOG_FLOOR = -60.0  # log of a bin mean too small for float (a shape near 0, its lowest bin)


@dataclass(frozen=True)
class ParetoNBDPrior:
    """The shop's Pareto/NBD parameters, time in days (lifetimes' ``params_``)."""

    r: float
    alpha: float
    s: float
    beta: float

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _bins(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the rate's bin of each draw, the dropout's) among ``n`` equally likely bins: the rate's
    in order, the dropout's on a golden-ratio lattice, so the pairs fill the square."""
    return np.arange(n), np.floor(np.mod(0.5 + np.arange(n) * (math.sqrt(5.0) - 1.0) / 2.0, 1.0) * n).astype(int)


def _log_bin_means(shapes: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray:
    """log of the mean of a standard gamma inside each of its ``n`` equally likely bins (bin
    ``bins``), for every shape, [shapes, draws]. Bin means keep the posterior's mean exactly,
    where bin midpoints would lose most of a long tail's."""
    from scipy.stats import gamma  # here: scoring loads it only when building a model

    shapes = np.asarray(shapes, np.float64)[:, None]
    edges = gamma.ppf(np.arange(n + 1)[None, :] / n, shapes)  # [S, n + 1]
    # E[X 1{a < X < b}] = k (F_{k+1}(b) - F_{k+1}(a)) for X ~ Gamma(k, 1).
    mass = np.diff(gamma.cdf(edges, shapes + 1.0), axis=1)
    with np.errstate(divide="ignore"):
        logged = np.log(shapes * n * mass)[:, bins]
    return np.maximum(np.nan_to_num(logged, nan=_LOG_FLOOR, neginf=_LOG_FLOOR), _LOG_FLOOR)


def summary_of(static: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(x repeat sessions, t_x days from the first to the last, T days since the first) per user,
    float64, from the raw static features: what model.baselines.frequency_recency_age gives."""
    static = tf.cast(static, tf.float64)
    x = tf.maximum(static[:, _SESSIONS] - 1.0, 0.0)
    age = tf.maximum(static[:, _TENURE], 1e-3)
    t_x = tf.where(x > 0, tf.clip_by_value(static[:, _TENURE] - static[:, _RECENCY], 0.0, age), 0.0)
    return x, t_x, age


class ParetoNBDPosterior(tf.Module):
    """Each user's Pareto/NBD posterior as ``DRAWS`` draws of the decay head's parameters."""

    def __init__(self, prior: ParetoNBDPrior, draws: int = DRAWS) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.prior, self.draws = prior, draws
        rate_bins, dropout_bins = _bins(draws)
        self._rate_table = tf.constant(_log_bin_means(_SHAPES, rate_bins, draws), tf.float64)  # [S, K]
        self._log_dropout = tf.constant(_log_bin_means(np.array([prior.s]), dropout_bins, draws)[0], tf.float64)  # [K]

    def _log_rate_draws(self, shape: tf.Tensor) -> tf.Tensor:
        """log standard gamma bin means [B, K] at each user's ``shape`` [B], interpolated in log shape."""
        step = (math.log(_SHAPES[-1]) - math.log(_SHAPES[0])) / (len(_SHAPES) - 1)
        position = tf.clip_by_value((tf.math.log(shape) - math.log(_SHAPES[0])) / step, 0.0, len(_SHAPES) - 1.0)
        low = tf.minimum(tf.cast(tf.floor(position), tf.int32), len(_SHAPES) - 2)
        share = (position - tf.cast(low, tf.float64))[:, None]
        return tf.gather(self._rate_table, low) * (1.0 - share) + tf.gather(self._rate_table, low + 1) * share

    def logit_alive(self, static: tf.Tensor) -> tf.Tensor:
        """logit P(still there at the as-of date | x, t_x, T) per user [B], float64."""
        r, alpha, s, beta = (self.prior.r, self.prior.alpha, self.prior.s, self.prior.beta)
        x, t_x, age = summary_of(static)
        # v = log(alpha + y) from y = t_x to T: the rate's factor is exp(-(r + x) v) times a
        # constant, so the integrand is close to exponential in v between two nodes.
        shares = tf.constant(np.linspace(0.0, 1.0, _NODES), tf.float64)
        v_low, v_high = tf.math.log(alpha + t_x), tf.math.log(alpha + age)
        v = v_low[:, None] + (v_high - v_low)[:, None] * shares  # [B, N]
        y = tf.exp(v) - alpha
        log_f = (
            (r + x)[:, None] * (tf.math.log(alpha + age)[:, None] - v)
            + s * (tf.math.log(beta + age)[:, None] - tf.math.log(beta + y))
            - tf.math.log(beta + y)
            + v  # dy = (alpha + y) dv
        )
        left, right = log_f[:, :-1], log_f[:, 1:]
        gap = tf.abs(right - left)
        # log of the integral of exp(linear) over a step: width * exp(max) * (1 - exp(-gap)) / gap.
        log_mean = tf.where(gap < 1e-8, tf.zeros_like(gap), tf.math.log(-tf.math.expm1(-tf.maximum(gap, 1e-8)) / tf.maximum(gap, 1e-8)))
        width = ((v_high - v_low) / (_NODES - 1))[:, None]
        log_steps = tf.math.log(tf.maximum(width, 1e-300)) + tf.maximum(left, right) + log_mean
        log_dead_over_alive = math.log(s) + tf.reduce_logsumexp(log_steps, axis=-1)
        # No time between the last session and the as-of date: nothing to have left in.
        return tf.where(v_high - v_low > 1e-12, -log_dead_over_alive, tf.constant(30.0, tf.float64))

    def __call__(self, static: tf.Tensor) -> tf.Tensor:
        """params [B, DRAWS, 7] (float32) of each user's posterior, from the raw static features."""
        x, _, age = summary_of(static)
        logit = tf.clip_by_value(self.logit_alive(static), -30.0, 30.0)
        log_rate = self._log_rate_draws(self.prior.r + x) - tf.math.log(self.prior.alpha + age)[:, None]
        log_dropout = self._log_dropout[None, :] - tf.math.log(self.prior.beta + age)[:, None]
        ones = tf.ones_like(log_rate)
        params = tf.stack(
            [
                logit[:, None] * ones,
                tf.clip_by_value(log_rate, -30.0, decay.MAX_LOG_RATE),
                -30.0 * ones,  # no excitation
                decay.MIN_TAU_DAYS * ones,  # read only through the excitation, which is none
                0.0 * ones,  # no branching
                tf.clip_by_value(log_dropout, math.log(decay.MIN_DROPOUT), math.log(decay.MAX_DROPOUT)),
                decay.NO_FRAILTY_LOG_SHAPE * ones,  # the gamma's spread is in the draws already
            ],
            axis=-1,
        )
        return tf.cast(params, tf.float32)


@dataclass(frozen=True)
class Blend:
    """The network's share ``model_weight`` of every user's mixture with Pareto/NBD's posterior."""

    prior: ParetoNBDPrior
    model_weight: float
    draws: int = DRAWS

    def __post_init__(self) -> None:
        if self.model_weight not in WEIGHTS:
            raise ValueError(f"model_weight must be one of {sorted(WEIGHTS)}, got {self.model_weight!r}")

    def to_dict(self) -> dict:
        return {"kind": "pareto_nbd", "prior": self.prior.to_dict(), "model_weight": self.model_weight, "draws": self.draws}

    @classmethod
    def from_dict(cls, values: dict) -> Blend:
        return cls(ParetoNBDPrior(**values["prior"]), float(values["model_weight"]), int(values.get("draws", DRAWS)))


class Mixer(tf.Module):
    """Network draws [B, N, 7] + static features -> the blend's draws, copies making the weights."""

    def __init__(self, blend: Blend) -> None:
        super().__init__()
        self.blend = blend
        self.posterior = ParetoNBDPosterior(blend.prior, blend.draws)

    def parts(self, params: tf.Tensor, static: tf.Tensor) -> list[tuple[tf.Tensor, float, int]]:
        """(draws, weight, copies) of each part of the mixture: its curves are computed once on
        its own draws and weighed; the copies give the draws of :meth:`__call__` (the same
        number for both parts, the least common multiple, times the weight's copies)."""
        model_copies, btyd_copies = WEIGHTS[self.blend.model_weight]
        if btyd_copies == 0:
            return [(params, 1.0, 1)]
        btyd = self.posterior(static)
        if model_copies == 0:
            return [(btyd, 1.0, 1)]
        n = params.shape[1]
        if n is None:
            raise ValueError("the network's number of draws must be known when the graph is built")
        common = math.lcm(n, self.blend.draws)
        weight = self.blend.model_weight
        return [(params, weight, model_copies * common // n), (btyd, 1.0 - weight, btyd_copies * common // self.blend.draws)]

    def __call__(self, params: tf.Tensor, static: tf.Tensor) -> tf.Tensor:
        """The mixture's draws [B, D, 7], each part's repeated by its copies: uniform weights
        per draw, which every reader of ``decay_params`` assumes."""
        parts = self.parts(params, static)
        return copies_of([draws for draws, _, _ in parts], [copies for _, _, copies in parts])


def weighed_sum(values: list[tf.Tensor], weights: list[float]) -> tf.Tensor:
    """The mixture's value from each part's (already averaged over that part's draws)."""
    return values[0] if len(values) == 1 else tf.add_n([w * v for w, v in zip(weights, values, strict=True)])


def copies_of(values: list[tf.Tensor], copies: list[int]) -> tf.Tensor:
    """Per-draw ``values`` of each part [B, D_i, ...], each repeated ``copies`` times along the
    draws and put together: [B, sum D_i copies_i, ...]."""
    if len(values) == 1 and copies == [1]:
        return values[0]
    return tf.concat([tf.tile(v, [1, c] + [1] * (len(v.shape) - 2)) for v, c in zip(values, copies, strict=True)], axis=1)


def label_log_likelihood(params: tf.Tensor, targets: dict, horizons_days: list[int]) -> np.ndarray:
    """log P(each known label "active within h days" | the mixture of ``params`` [B, D, 7]),
    one entry per row and horizon whose label is known (-1 is not), flattened."""
    p_active = np.clip(tf.reduce_mean(decay.p_active_on(params, [float(h) for h in horizons_days]), axis=1).numpy(), 1e-6, 1 - 1e-6)
    labels = np.stack([np.asarray(targets[f"active_{h}d"], np.float64) for h in horizons_days], axis=1)
    known = labels >= 0
    return np.where(labels > 0.5, np.log(p_active), np.log1p(-p_active))[known]


def choose_weight(log_model: np.ndarray, log_btyd: np.ndarray) -> tuple[float, dict[float, float]]:
    """(the network's weight, the mean validation log likelihood of every weight) from each
    label's log likelihood under the network's mixture and under Pareto/NBD's: the mixture's
    is log(w L_model + (1 - w) L_btyd), so no weight needs its own pass."""
    log_model, log_btyd = np.asarray(log_model, np.float64), np.asarray(log_btyd, np.float64)
    if log_model.shape != log_btyd.shape or log_model.ndim != 1 or not len(log_model):
        raise ValueError(f"log_model and log_btyd must be equal-length non-empty vectors, got {log_model.shape} and {log_btyd.shape}")
    scores = {}
    for w in WEIGHTS:
        with np.errstate(divide="ignore"):
            parts = np.stack([np.log(w) + log_model, np.log1p(-w) + log_btyd]) if 0 < w < 1 else (log_model if w == 1 else log_btyd)[None]
        scores[w] = float(np.mean(np.logaddexp.reduce(parts, axis=0)))
    best = max(scores, key=scores.get)
    return (best if scores[best] > scores[1.0] + TOLERANCE else 1.0), scores


# Fewer validation rows than this cannot tell the weights apart: the network alone.
MIN_VALIDATION_ROWS = 100


def blend_on_validation(
    network: Callable[[dict], tf.Tensor],
    val_sample: tuple[dict, dict] | None,
    prior: dict | None,
    horizons_days: list[int],
    batch_size: int = 4096,
) -> tuple[Blend | None, dict]:
    """(the blend whose weight gives the validation rows' labels "active within h days" the
    highest likelihood, over every horizon of the model, or None for the network alone; what the
    choice rests on, for the model's metadata and the run).

    ``network(inputs)`` gives the network's draws [B, N, 7]; ``prior`` is a
    :class:`ParetoNBDPrior` as a dict (None: Pareto/NBD did not fit, or the blend is off)."""
    if prior is None:
        return None, {"model_weight": 1.0, "reason": "no Pareto/NBD prior (train.btyd_blend off, or it did not fit)"}
    rows = 0 if val_sample is None else len(val_sample[1]["censored"])
    if rows < MIN_VALIDATION_ROWS:
        return None, {"model_weight": 1.0, "reason": f"{rows} validation rows, fewer than {MIN_VALIDATION_ROWS}"}
    inputs, targets = val_sample
    btyd_prior = ParetoNBDPrior(**prior)
    posterior = ParetoNBDPosterior(btyd_prior)
    log_model, log_btyd = [], []
    for start in range(0, rows, batch_size):
        part = {k: tf.convert_to_tensor(v[start : start + batch_size], tf.float32) for k, v in inputs.items()}
        labels = {f"active_{h}d": targets[f"active_{h}d"][start : start + batch_size] for h in horizons_days}
        log_model.append(label_log_likelihood(network(part), labels, horizons_days))
        log_btyd.append(label_log_likelihood(posterior(part["static"]), labels, horizons_days))
    labels_known = sum(len(part) for part in log_model)
    if labels_known < MIN_VALIDATION_ROWS:
        return None, {"model_weight": 1.0, "reason": f"{labels_known} known validation labels, fewer than {MIN_VALIDATION_ROWS}"}
    weight, scores = choose_weight(np.concatenate(log_model), np.concatenate(log_btyd))
    facts = {
        "model_weight": weight,
        "prior": btyd_prior.to_dict(),
        "validation_rows": rows,
        "validation_labels": labels_known,
        "validation_log_likelihood": {f"{w:.3f}": round(v, 5) for w, v in sorted(scores.items())},
    }
    return (Blend(btyd_prior, weight) if weight < 1.0 else None), facts


def fit_prior(static: np.ndarray, max_users: int | None = None, seed: int = 0) -> ParetoNBDPrior:
    """The shop's Pareto/NBD prior from raw static features (one row per user and as-of date),
    fitted by lifetimes on a seeded sample of ``max_users`` rows; RuntimeError if it does not fit."""
    from interest_decay.model.baselines import BuyTillYouDie  # lifetimes, imported on use

    fitted = BuyTillYouDie("pareto_nbd").fit({"static": np.asarray(static, np.float32)}, max_users=max_users, seed=seed)
    return ParetoNBDPrior(**{k: float(v) for k, v in fitted.fitter.params_.items()})
