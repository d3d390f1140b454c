"""The interest model: a GRU over the user's windows, a latent state drawn from each user's
posterior given their history, and the head that turns a draw into one probability model of the
user's future (model/decay.py).

    x(1..T) -> log1p, normalise -> GRU (masked) -> h(T)
    per step:   P(t) = sigmoid(W . [x(t), h(t-1)] + b), supervised with "active in the next window"
    latent z:   q(z | history) = N(mean, var from [h(T), static])
    head:       [h(T), static, z] -> p_alive, baseline, excitation, tau, branching, dropout
                (the excitation now also reads the user's past visits, each faded by its age)
    decoder:    the posterior's mean -> GRU -> x_hat (the reconstruction error is an anomaly signal)

    loss = -log (1/S sum_s p(future | z_s)),  z_s ~ q(z | history)   (survival and counts, S draws)
         + beta * KL(q(z | history) || N(0, I))
         + step_weight * BCE(P(t)) + recon_weight * MSE(x_hat)

The decoder of the VAE is the likelihood of the user's own future, and the objective is the
likelihood of the future under the mixture of the user's draws: what scoring serves. So z is the
part of the user's state the history leaves uncertain, and how uncertain is learned from how much
users with the same history differ in what they do next (a frailty that the network shapes per
user). Scoring averages over ``shape.draws`` fixed draws (the same inputs always score the same):
every score is the mean over the draws of one mixture, and its 80% interval the spread over them.
Validation measures the same likelihood (``val_decay_nll``), which early stopping watches.

``use_vae=False`` drops z, the decoder and the KL: one draw, no intervals. The normalisation
statistics are fitted on training rows by :func:`fit_normalisation` and live in the model as
constants, so the saved model carries them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import tensorflow as tf

from interest_decay.contract import STATIC_FEATURES
from interest_decay.model import decay
from interest_decay.model.btyd import Mixer, copies_of, weighed_sum

SESSIONS_FEATURE = 0  # index of "sessions" in the window features: a window is active when > 0
TOTAL_SESSIONS = STATIC_FEATURES.index("total_sessions")  # in the static features: the frailty's evidence
# Draws of z's noise at scoring: fixed and seeded, so a user scores the same every time.
DRAWS_SEED = 20261203
# Draws of z each training row's likelihood averages over (random; scoring's are fixed).
TRAINING_DRAWS = 8


@dataclass(frozen=True)
class ModelShape:
    """What the model reads and how big it is."""

    n_windows: int
    n_window_features: int
    n_static: int
    window_days: int
    horizons_days: tuple[int, ...]
    hidden_units: int = 32
    latent_dim: int = 8
    use_vae: bool = True
    # Each user's visit rate times G ~ Gamma(k, k), k = a shape learned for the shop + the user's
    # repeat sessions (model/decay.py): the spread the history leaves, without the VAE too.
    frailty: bool = False
    # Draws of z a score averages over (with the VAE; one without).
    draws: int = 32
    # Windows after the as-of date whose visits label the view.
    future_windows: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss parts; beta ramps up linearly over ``kl_warmup_epochs``.

    ``baseline_pooling`` weighs the spread of the users' log baselines in the batch (a Gaussian
    prior around the shop's mean): shrinks the baseline of users with too little history to set
    their own towards the shop's. ``count_row_weights`` "none" gives every row's count term the
    same weight instead of :func:`model.decay.count_row_weights`. ``count_likelihood``
    "negative_binomial" learns one dispersion for the whole shop for the counts of a user still
    there, so visits that come in bursts are not read as a higher rate.
    """

    step: float = 0.2
    count: float = 1.0
    recon: float = 0.05
    beta: float = 0.01
    kl_warmup_epochs: int = 3
    count_likelihood: Literal["poisson", "negative_binomial"] = "poisson"
    baseline_pooling: float = 0.0
    count_row_weights: Literal["recent_sessions", "none"] = "recent_sessions"


@dataclass
class Normalisation:
    """Mean and variance of log1p(features), from training rows only."""

    x_mean: np.ndarray
    x_var: np.ndarray
    static_mean: np.ndarray
    static_var: np.ndarray
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items() if k != "extra"}


def fit_normalisation(x: np.ndarray, mask: np.ndarray, static: np.ndarray) -> Normalisation:
    """Statistics of log1p(x) over real (unmasked) windows and of log1p(static), per feature."""
    real = np.log1p(np.maximum(x[mask.astype(bool)], 0.0))
    logged_static = np.log1p(np.maximum(static, 0.0))
    return Normalisation(
        x_mean=real.mean(axis=0).astype(np.float32),
        x_var=np.maximum(real.var(axis=0), 1e-6).astype(np.float32),
        static_mean=logged_static.mean(axis=0).astype(np.float32),
        static_var=np.maximum(logged_static.var(axis=0), 1e-6).astype(np.float32),
    )


def draw_quantile(values: tf.Tensor, q: float) -> tf.Tensor:
    """The ``q`` quantile over the draws (axis 1) of ``values`` [B, D, ...], interpolated linearly."""
    ordered = tf.sort(values, axis=1)
    n = ordered.shape[1]
    position = q * (n - 1)
    low = int(np.floor(position))
    high = min(low + 1, n - 1)
    share = position - low
    return ordered[:, low] * (1.0 - share) + ordered[:, high] * share


INTERVAL = decay.INTERVAL


def interval(by_draw: tf.Tensor, point: tf.Tensor, by_draw_high: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """(low, high): the 10th and 90th percentiles over the draws (axis 1) of ``by_draw``, widened
    to hold ``point``, the mixture's own value, which can lie outside its draws' spread (a mean
    pulled by a long tail; a half-life of a mixture of fadings). With a frailty, ``by_draw`` holds
    each draw at G's 10th percentile and ``by_draw_high`` at its 90th (decay.at_frailty_quantile)."""
    high = by_draw if by_draw_high is None else by_draw_high
    return tf.minimum(draw_quantile(by_draw, INTERVAL[0]), point), tf.maximum(draw_quantile(high, INTERVAL[1]), point)


class _Scores:
    """What scoring reads from a model (``shape_spec`` and a call that returns ``params`` [B, D, 7],
    with the VAE ``z_mean``, ``x_hat`` and ``x_norm`` too): every score from the draws' mixture."""

    @staticmethod
    def _at_frailty_quantile(parts: list[tuple[tf.Tensor, float, int]], horizons: list[int], q: float) -> tuple[tf.Tensor, tf.Tensor]:
        """(P(active) [B, D, H], expected visits [B, D, H]) of every draw of the mixture's
        ``parts`` with its frailty at its ``q`` quantile."""
        fixed = [decay.at_frailty_quantile(draws, q) for draws, _, _ in parts]
        copies = [c for _, _, c in parts]
        return (
            copies_of([decay.p_active_on(draws, horizons) for draws in fixed], copies),
            copies_of([decay.expected_visits(draws, tf.constant(horizons, tf.float32)) for draws in fixed], copies),
        )

    def predict_curves(self, inputs: dict, days: object, mixer: Mixer | None = None) -> dict:
        """Every score of a batch of users; ``days`` are the decay curve's (known when the graph
        is built). Everything is read off one grid of days (model/decay.py: day_grid).
        ``mixer`` (model/btyd.py) mixes Pareto/NBD's posterior in: each part's curves are
        computed on its own draws and weighed; the intervals are over the mixture's draws. The
        interest half-life stays the network's (the other part has no excitation)."""
        out = self(inputs, training=False)
        network = out["params"]
        parts = [(network, 1.0, 1)] if mixer is None else mixer.parts(network, inputs["static"])
        weights, copies = [w for _, w, _ in parts], [c for _, _, c in parts]

        def mean(values: list[tf.Tensor]) -> tf.Tensor:
            return weighed_sum(values, weights)

        horizons = list(self.shape_spec.horizons_days)
        curve_days = np.ravel(np.asarray(days, np.float32))
        grid = decay.day_grid(horizons, curve_days)
        each = [decay.silence_curves(draws, grid) for draws, _, _ in parts]
        curves = each[0] if len(each) == 1 else decay.weighed_curves(each, weights)
        p_active_parts = [decay.at_days(c["active_by_draw"], grid, horizons) for c in each]  # [B, D_i, H]
        visits_parts = [decay.expected_visits(draws, tf.constant(horizons, tf.float32)) for draws, _, _ in parts]
        p_active, visits = copies_of(p_active_parts, copies), copies_of(visits_parts, copies)
        half_life = decay.interest_half_life_days(network)
        half_life_by_draw = network[..., 3] * float(np.log(2.0))
        silence = decay.silence_half_life_days(curves)
        point = {
            "p_active": mean([tf.reduce_mean(v, axis=1) for v in p_active_parts]),
            "expected_visits": mean([tf.reduce_mean(v, axis=1) for v in visits_parts]),
        }
        at_low = at_high = (p_active, visits)
        if self.shape_spec.frailty:
            # Each draw at its frailty's 10th and 90th percentiles (the drivers' signature does not pay for it).
            at_low, at_high = (self._at_frailty_quantile(parts, horizons, q) for q in INTERVAL)
        p_low, p_high = interval(at_low[0], point["p_active"], at_high[0])
        v_low, v_high = interval(at_low[1], point["expected_visits"], at_high[1])
        h_low, h_high = interval(half_life_by_draw, half_life)
        params = copies_of([draws for draws, _, _ in parts], copies)
        result = {
            "p_active": point["p_active"],
            "p_active_low": p_low,
            "p_active_high": p_high,
            "expected_visits": point["expected_visits"],
            "expected_visits_low": v_low,
            "expected_visits_high": v_high,
            "decay_curve": decay.at_days(curves["silent"], grid, curve_days),
            "p_alive": mean([tf.reduce_mean(decay.p_alive(draws), axis=1) for draws, _, _ in parts]),
            "interest_half_life_days": half_life,
            "interest_half_life_days_low": h_low,
            "interest_half_life_days_high": h_high,
            "silence_half_life_days": silence,
            "dropout_share": decay.dropout_share(curves, silence),
            "baseline_visits_per_30d": mean([decay.baseline_visits(draws, 30.0) for draws, _, _ in parts]),
            "interest_now": mean([decay.interest_now(draws) for draws, _, _ in parts]),
            "return_median_days": decay.return_median_days(curves),
            "decay_params": tf.reshape(params, [tf.shape(params)[0], -1]),
        }
        if self.shape_spec.use_vae:
            real = tf.cast(inputs["mask"], tf.float32)
            squared = tf.reduce_mean(tf.square(out["x_hat"] - out["x_norm"]), axis=-1)
            result["z"] = out["z_mean"]
            result["reconstruction_error"] = tf.reduce_sum(squared * real, axis=-1) / tf.maximum(tf.reduce_sum(real, axis=-1), 1.0)
        return result


class InterestDecayModel(_Scores, tf.keras.Model):
    """GRU encoder + VAE whose decoder is the head of model/decay.py, with its own training step."""

    def __init__(self, shape: ModelShape, norm: Normalisation, weights: LossWeights | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shape_spec = shape
        self.loss_weights_spec = weights or LossWeights()
        self.x_norm = tf.keras.layers.Normalization(mean=norm.x_mean, variance=norm.x_var)
        self.static_norm = tf.keras.layers.Normalization(mean=norm.static_mean, variance=norm.static_var)
        self.encoder = tf.keras.layers.GRU(shape.hidden_units, return_sequences=True, return_state=True)
        self.step_head = tf.keras.layers.Dense(1)
        if shape.use_vae:
            self.posterior = tf.keras.layers.Dense(2 * shape.latent_dim, kernel_initializer="zeros")
            self.decoder = tf.keras.layers.GRU(shape.hidden_units, return_sequences=True)
            self.reconstruct = tf.keras.layers.Dense(shape.n_window_features)
            noise = np.random.default_rng(DRAWS_SEED).standard_normal((shape.draws, shape.latent_dim))
            self.draw_noise = tf.constant(noise, tf.float32)
        self.head_hidden = tf.keras.layers.Dense(shape.hidden_units, activation="relu")
        # The start: two users in three still there, a visit in 100 days anyway, a little
        # excitation fading over 30 days, a visit bringing 0.3 more, leaving in 3 years or so.
        bias = [
            np.log(2.0),
            np.log(0.01),
            np.log(0.01),
            decay.raw_for_log_bounded(30.0, decay.MIN_TAU_DAYS, decay.MAX_TAU_DAYS),
            decay.raw_for_branching(0.3),
            decay.raw_for_log_bounded(1.0 / 1000.0, decay.MIN_DROPOUT, decay.MAX_DROPOUT),
        ]
        self.head_out = tf.keras.layers.Dense(
            decay.N_RAW, bias_initializer=tf.keras.initializers.Constant(bias), kernel_initializer="zeros"
        )
        # Each input window's middle, in days before the as-of date: the age of its visits.
        self.window_ages = tf.constant((np.arange(shape.n_windows)[::-1] + 0.5) * shape.window_days, tf.float32)
        self.kl_weight = tf.Variable(0.0, trainable=False, name="kl_weight")
        self.frailty_raw = None
        if shape.frailty:
            start = decay.raw_for_log_bounded(2.0, decay.MIN_FRAILTY_SHAPE, decay.MAX_FRAILTY_SHAPE)
            self.frailty_raw = self.add_weight(
                name="frailty_shape_raw", shape=(), initializer=tf.keras.initializers.Constant(start), trainable=True
            )
        self.dispersion_raw = None
        if self.loss_weights_spec.count_likelihood == "negative_binomial":
            # 0 is a dispersion of 0.1, the geometric middle of its bounds.
            self.dispersion_raw = self.add_weight(name="count_dispersion_raw", shape=(), initializer="zeros", trainable=True)
        self.trackers = {
            name: tf.keras.metrics.Mean(name=name) for name in ("loss", "decay_nll", "survival_nll", "count_nll", "step_bce", "recon", "kl")
        }

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def encode(self, inputs: dict, training: bool = False) -> dict:
        """The history's part: the encoder state, the step logits and the normalised windows."""
        x, mask, static = inputs["x"], inputs["mask"], inputs["static"]
        xn = self.x_norm(tf.math.log1p(tf.maximum(x, 0.0)))
        xn = xn * tf.cast(mask, xn.dtype)[..., None]  # bfloat16 under a mixed-precision policy
        sequence, last = self.encoder(xn, mask=tf.cast(mask, tf.bool), training=training)
        previous = tf.concat([tf.zeros_like(sequence[:, :1]), sequence[:, :-1]], axis=1)
        step_logits = self.step_head(tf.concat([xn, previous], axis=-1))[..., 0]
        encoded = tf.concat([last, self.static_norm(tf.math.log1p(tf.maximum(static, 0.0)))], axis=-1)
        return {"encoded": encoded, "step_logits": step_logits, "x_norm": xn}

    def head(self, encoded: tf.Tensor, z: tf.Tensor | None, sessions: tf.Tensor) -> tf.Tensor:
        """params [B, D, 7] for ``z`` [B, D, latent] (D draws; None without the VAE: one)."""
        encoded = tf.cast(encoded, tf.float32)
        if z is None:
            head_input = encoded[:, None, :]
        else:
            draws = tf.shape(z)[1]
            head_input = tf.concat([tf.repeat(encoded[:, None, :], draws, axis=1), z], axis=-1)
        raw = tf.cast(self.head_out(self.head_hidden(head_input)), tf.float32)
        return decay.params_from_raw(raw, sessions, self.window_ages)

    def call(self, inputs: dict, training: bool = False) -> dict:
        """params [B, D, 7]: in training ``TRAINING_DRAWS`` random draws of z from the user's
        posterior; otherwise its ``shape.draws`` fixed draws (one draw without the VAE)."""
        history = self.encode(inputs, training)
        encoded = history["encoded"]
        sessions = tf.cast(inputs["x"][:, :, SESSIONS_FEATURE], tf.float32)
        out = {"step_logits": history["step_logits"], "x_norm": history["x_norm"]}
        z = None
        if self.shape_spec.use_vae:
            mean, log_var = tf.split(tf.cast(self.posterior(encoded), tf.float32), 2, axis=-1)
            out.update(z_mean=mean, z_log_var=log_var)
            if training:
                noise = tf.random.normal([tf.shape(mean)[0], TRAINING_DRAWS, self.shape_spec.latent_dim])
            else:
                noise = self.draw_noise[None, :, :]
            z = mean[:, None, :] + tf.exp(0.5 * log_var)[:, None, :] * noise
            repeated = tf.repeat(tf.cast(mean, self.decoder.compute_dtype)[:, None, :], self.shape_spec.n_windows, axis=1)
            out["x_hat"] = self.reconstruct(self.decoder(repeated, training=training))
        # Under a mixed-precision policy the layers compute in bfloat16; the losses and the
        # decay maths stay in float32.
        out = {k: tf.cast(v, tf.float32) for k, v in out.items()}
        out["params"] = self.head(encoded, z, sessions)
        if self.frailty_raw is not None:
            out["params"] = decay.with_frailty(out["params"], self.frailty_shape(), inputs["static"][:, TOTAL_SESSIONS])
        return out

    def frailty_shape(self) -> tf.Tensor | None:
        """The shop's frailty shape, before each user's repeat sessions are added (None: no frailty)."""
        return None if self.frailty_raw is None else decay.frailty_shape_from_raw(self.frailty_raw)

    def build_with_zeros(self) -> None:
        """Create every weight now, by a call on one all-zero user (the input shapes are known)."""
        s = self.shape_spec
        inputs = {
            "x": tf.zeros([1, s.n_windows, s.n_window_features]),
            "mask": tf.ones([1, s.n_windows]),
            "static": tf.zeros([1, s.n_static]),
        }
        self(inputs, training=False)

    def decay_nll(self, params: tf.Tensor, inputs: dict, targets: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """(survival NLL [B], count NLL [B] weighted per row) of params [B, 7]."""
        w = self.loss_weights_spec
        survival = decay.survival_nll(params, targets["days_to_next"], targets["censored"])
        counts = tf.zeros_like(survival)
        if "future_sessions" in targets:
            nll = decay.window_count_nll(params, targets["future_sessions"], float(self.shape_spec.window_days), self.count_dispersion())
            if w.count_row_weights == "none":
                weight = tf.ones_like(nll)
            else:
                weight = decay.count_row_weights(inputs["x"][:, :, SESSIONS_FEATURE])
                weight = weight / tf.reduce_mean(weight)
            counts = nll * weight
        return survival, counts

    def mixture_nll(self, params: tf.Tensor, inputs: dict, targets: dict) -> dict:
        """The future's likelihood under the mixture of the draws params [B, D, 7]:
        ``decay_nll`` [B] = -log of the mean over the draws of each draw's likelihood (survival
        and counts together), and each part's own mixture NLL (``survival_nll``, ``count_nll``)."""
        draws = tf.shape(params)[1]
        flat = tf.reshape(params, [-1, decay.N_PARAMS])
        repeated = {k: tf.repeat(v, draws, axis=0) for k, v in targets.items() if k in ("days_to_next", "censored", "future_sessions")}
        survival, counts = self.decay_nll(flat, {"x": tf.repeat(inputs["x"], draws, axis=0)}, repeated)
        log_draws = tf.math.log(tf.cast(draws, tf.float32))

        def mixture(per_row: tf.Tensor) -> tf.Tensor:
            return -(tf.reduce_logsumexp(-tf.reshape(per_row, [-1, draws]), axis=1) - log_draws)

        weight = self.loss_weights_spec.count
        return {"decay_nll": mixture(survival + weight * counts), "survival_nll": mixture(survival), "count_nll": mixture(counts)}

    def loss_parts(self, out: dict, inputs: dict, targets: dict) -> dict:
        """Each part of the loss, averaged over the batch."""
        w = self.loss_weights_spec
        real = tf.cast(inputs["mask"], tf.float32)
        step_target, step_weight = self.step_targets(inputs, targets)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=step_target, logits=out["step_logits"])
        step_bce = tf.reduce_sum(bce * step_weight) / tf.maximum(tf.reduce_sum(step_weight), 1.0)
        parts = {name: tf.reduce_mean(value) for name, value in self.mixture_nll(out["params"], inputs, targets).items()}
        parts.update(step_bce=step_bce, recon=tf.constant(0.0), kl=tf.constant(0.0))
        if self.shape_spec.use_vae:
            squared = tf.reduce_mean(tf.square(out["x_hat"] - out["x_norm"]), axis=-1)
            parts["recon"] = tf.reduce_sum(squared * real) / tf.maximum(tf.reduce_sum(real), 1.0)
            parts["kl"] = tf.reduce_mean(standard_normal_kl(out["z_mean"], out["z_log_var"]))
        parts["loss"] = parts["decay_nll"] + w.step * step_bce + w.recon * parts["recon"] + self.kl_weight * parts["kl"]
        if w.baseline_pooling:
            parts["loss"] += w.baseline_pooling * tf.math.reduce_variance(out["params"][..., 1])
        return parts

    def count_dispersion(self) -> tf.Tensor | None:
        """The negative binomial dispersion of the visit counts (None: Poisson)."""
        return None if self.dispersion_raw is None else decay.dispersion_from_raw(self.dispersion_raw)

    def step_targets(self, inputs: dict, targets: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """Target of P(t): the next window is active; for the last step, from the labels."""
        active = tf.cast(inputs["x"][:, :, SESSIONS_FEATURE] > 0, tf.float32)
        real = tf.cast(inputs["mask"], tf.float32)
        days = tf.cast(targets["days_to_next"], tf.float32)
        censored = tf.cast(targets["censored"], tf.float32)
        window = float(self.shape_spec.window_days)
        last_target = tf.cast(days < window, tf.float32) * (1.0 - censored)
        last_known = tf.maximum(1.0 - censored, tf.cast(days >= window, tf.float32))
        target = tf.concat([active[:, 1:], last_target[:, None]], axis=1)
        weight = tf.concat([real[:, :-1], (real[:, -1] * last_known)[:, None]], axis=1)
        return target, weight

    def train_step(self, data: tuple) -> dict:
        inputs, targets = data
        with tf.GradientTape() as tape:
            parts = self.loss_parts(self(inputs, training=True), inputs, targets)
        self.optimizer.minimize(parts["loss"], self.trainable_variables, tape=tape)
        return self._track(parts)

    def test_step(self, data: tuple) -> dict:
        """On validation rows: the same parts, under the scores' own fixed draws."""
        inputs, targets = data
        return self._track(self.loss_parts(self(inputs, training=False), inputs, targets))

    def _track(self, parts: dict) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(parts[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def standard_normal_kl(mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(mean, e^log_var) || N(0, I)), summed over the latent axis, [B]."""
    return 0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(mean) - 1.0 - log_var, axis=-1)


class KLWarmup(tf.keras.callbacks.Callback):
    """beta_t = beta * min(1, (epoch + 1) / warmup_epochs): the KL term eases in."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        w = self.model.loss_weights_spec
        ramp = min(1.0, (epoch + 1) / max(w.kl_warmup_epochs, 1))
        self.model.kl_weight.assign(w.beta * ramp if self.model.shape_spec.use_vae else 0.0)


class MemberAverage(_Scores, tf.keras.Model):
    """Several independently trained models (``train.members``) served as one: their draws
    together make one mixture, so every score is the mean over all of them and the intervals
    span the members' disagreement too. The latent z and the reconstruction error are the
    first member's."""

    def __init__(self, members: list[InterestDecayModel], **kwargs) -> None:
        super().__init__(**kwargs)
        if not members:
            raise ValueError("members is empty: average at least one model")
        self.members = list(members)
        first = members[0].shape_spec
        self.shape_spec = replace(first, draws=(first.draws if first.use_vae else 1) * len(members))

    def call(self, inputs: dict, training: bool = False) -> dict:
        outs = [member(inputs, training=False) for member in self.members]
        return {**outs[0], "params": tf.concat([out["params"] for out in outs], axis=1)}
