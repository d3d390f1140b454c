"""The interest model: a GRU over the user's windows, a VAE on its state, and the decay head.

    x(1..T) -> log1p, normalise -> GRU (masked) -> h(1..T), h(T)
    per step:   P(t) = sigmoid(W . [x(t), h(t-1)] + b), supervised with "active in the next window"
    VAE:        [h(T), static] -> mean, log-variance -> z (reparameterised) -> GRU decoder -> x_hat
    decay head: [h(T), static, mean of z] -> level_k, tau_k, floor -> rate(d), Lambda(d), S(d)

    loss = survival NLL (censored time to the next visit)
         + count_weight * Poisson (or negative binomial) NLL of the visits in each of the next
           windows (masked past the data, each row weighted by decay.count_row_weights)
         + step_weight * BCE(P(t)) + recon_weight * MSE(x_hat) + beta_t * KL

Early stopping watches the first two terms on the validation rows (``val_decay_nll``).

The time to the next visit mostly says which users are still away; how fast one user's own
interest fades is carried by the counts over several windows (see model/decay.py).

``use_vae=False`` drops z, the decoder and the KL term (the ablation of issue 4). The
normalisation statistics are fitted on training data by :func:`fit_normalisation` and live in the
model as constants, so the saved model carries them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import tensorflow as tf

from interest_decay.model import decay

SESSIONS_FEATURE = 0  # index of "sessions" in the window features: a window is active when > 0


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
    n_components: int = 3
    use_vae: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss parts; beta ramps up linearly over ``kl_warmup_epochs``.

    ``floor_pooling`` weighs the spread of the users' log floors in the batch (a Gaussian prior
    around the shop's mean): shrinks the baseline of users with too little history to set their
    own towards the shop's. ``count_row_weights`` "none" gives every row's count term the same
    weight instead of :func:`model.decay.count_row_weights`.

    ``count_likelihood`` "negative_binomial" learns one dispersion for the whole shop, so visits
    that come in bursts are not read as a higher rate; on Poisson visits it shrinks towards 0.

    ``frailty`` "gamma" learns one variance for the whole shop of a factor that scales each user's
    rate around the curve (:func:`model.decay.survival`): the survival, the counts (all of a
    user's windows together) and P(active) read it, so the curve can be the mean visits of the
    users who look alike while P(active) allows for how much they differ.
    """

    step: float = 0.2
    count: float = 1.0
    recon: float = 0.05
    beta: float = 0.01
    kl_warmup_epochs: int = 3
    count_likelihood: Literal["poisson", "negative_binomial"] = "poisson"
    floor_pooling: float = 0.0
    count_row_weights: Literal["recent_sessions", "none"] = "recent_sessions"
    frailty: Literal["none", "gamma"] = "none"

    def __post_init__(self) -> None:
        if self.frailty == "gamma" and self.count_likelihood == "negative_binomial":
            raise ValueError("frailty 'gamma' already makes the counts negative binomial: use count_likelihood 'poisson' with it")


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


class _DecayCurves:
    """What scoring reads from a model: its ``shape_spec`` and a call that returns ``params``
    (and, with the VAE, ``z_mean``, ``x_hat`` and ``x_norm``)."""

    def predict_curves(self, inputs: dict, days: tf.Tensor) -> dict:
        """What scoring needs: P(active within each horizon), S on ``days``, latent z, recon error."""
        out = self(inputs, training=False)
        k, frailty = self.shape_spec.n_components, self.frailty()
        horizons = tf.constant([list(self.shape_spec.horizons_days)], tf.float32)
        expected = decay.cumulative_rate(out["params"], horizons, k)
        result = {
            "p_active": 1.0 - decay.survival_from_cumulative(expected, frailty),
            "expected_visits": expected,
            "decay_curve": decay.survival(out["params"], tf.reshape(days, [1, -1]), k, frailty),
            "decay_params": out["params"],
        }
        if self.shape_spec.use_vae:
            real = tf.cast(inputs["mask"], tf.float32)
            squared = tf.reduce_mean(tf.square(out["x_hat"] - out["x_norm"]), axis=-1)
            result["z"] = out["z_mean"]
            result["reconstruction_error"] = tf.reduce_sum(squared * real, axis=-1) / tf.maximum(tf.reduce_sum(real, axis=-1), 1.0)
        return result


class InterestDecayModel(_DecayCurves, tf.keras.Model):
    """GRU encoder + VAE + parametric decay head, with its own training step."""

    def __init__(self, shape: ModelShape, norm: Normalisation, weights: LossWeights | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shape_spec = shape
        self.loss_weights_spec = weights or LossWeights()
        self.x_norm = tf.keras.layers.Normalization(mean=norm.x_mean, variance=norm.x_var)
        self.static_norm = tf.keras.layers.Normalization(mean=norm.static_mean, variance=norm.static_var)
        self.encoder = tf.keras.layers.GRU(shape.hidden_units, return_sequences=True, return_state=True)
        self.step_head = tf.keras.layers.Dense(1)
        if shape.use_vae:
            self.z_mean = tf.keras.layers.Dense(shape.latent_dim)
            self.z_log_var = tf.keras.layers.Dense(shape.latent_dim)
            self.decoder = tf.keras.layers.GRU(shape.hidden_units, return_sequences=True)
            self.reconstruct = tf.keras.layers.Dense(shape.n_window_features)
        self.head_hidden = tf.keras.layers.Dense(shape.hidden_units, activation="relu")
        # Start the components at different speeds (fast, medium and slow fading interest), each
        # at a visit every 20 days, over a baseline of one visit in 100 days.
        taus = np.geomspace(3.0, 60.0, shape.n_components)
        bias = np.concatenate([np.full(shape.n_components, np.log(0.05)), [decay.raw_for_tau(t) for t in taus], [np.log(0.01)]])
        self.head_out = tf.keras.layers.Dense(
            2 * shape.n_components + 1, bias_initializer=tf.keras.initializers.Constant(bias), kernel_initializer="zeros"
        )
        self.kl_weight = tf.Variable(0.0, trainable=False, name="kl_weight")
        self.dispersion_raw = None
        if self.loss_weights_spec.count_likelihood == "negative_binomial":
            # 0 is a dispersion of 0.1, the geometric middle of its bounds.
            self.dispersion_raw = self.add_weight(name="count_dispersion_raw", shape=(), initializer="zeros", trainable=True)
        self.frailty_raw = None
        if self.loss_weights_spec.frailty == "gamma":
            # The same bounds as the dispersion: 0 is a variance of 0.1.
            self.frailty_raw = self.add_weight(name="frailty_raw", shape=(), initializer="zeros", trainable=True)
        self.trackers = {
            name: tf.keras.metrics.Mean(name=name) for name in ("loss", "decay_nll", "survival_nll", "count_nll", "step_bce", "recon", "kl")
        }

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def call(self, inputs: dict, training: bool = False) -> dict:
        x, mask, static = inputs["x"], inputs["mask"], inputs["static"]
        xn = self.x_norm(tf.math.log1p(tf.maximum(x, 0.0)))
        xn = xn * tf.cast(mask, xn.dtype)[..., None]  # bfloat16 under a mixed-precision policy
        sequence, last = self.encoder(xn, mask=tf.cast(mask, tf.bool), training=training)
        previous = tf.concat([tf.zeros_like(sequence[:, :1]), sequence[:, :-1]], axis=1)
        step_logits = self.step_head(tf.concat([xn, previous], axis=-1))[..., 0]
        encoded = tf.concat([last, self.static_norm(tf.math.log1p(tf.maximum(static, 0.0)))], axis=-1)
        out = {"step_logits": step_logits, "x_norm": xn, "state": last}
        head_input = encoded
        if self.shape_spec.use_vae:
            z_mean, z_log_var = self.z_mean(encoded), self.z_log_var(encoded)
            z = z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(tf.shape(z_mean), dtype=z_mean.dtype) if training else z_mean
            repeated = tf.repeat(z[:, None, :], self.shape_spec.n_windows, axis=1)
            out.update(z_mean=z_mean, z_log_var=z_log_var, z=z, x_hat=self.reconstruct(self.decoder(repeated, training=training)))
            # The head reads the posterior mean: a sampled z would teach it rates that are right
            # on average over the noise, and too low at scoring time (the rate is convex in z).
            head_input = tf.concat([encoded, z_mean], axis=-1)
        # Under a mixed-precision policy the layers compute in bfloat16; the losses and the
        # decay maths stay in float32.
        out = {k: tf.cast(v, tf.float32) for k, v in out.items()}
        raw = tf.cast(self.head_out(self.head_hidden(head_input)), tf.float32)
        out["params"] = decay.head_params(raw, self.shape_spec.n_components)
        return out

    def build_with_zeros(self) -> None:
        """Create every weight now, by a call on one all-zero user (the input shapes are known)."""
        s = self.shape_spec
        self({"x": tf.zeros([1, s.n_windows, s.n_window_features]), "mask": tf.ones([1, s.n_windows]), "static": tf.zeros([1, s.n_static])})

    def loss_parts(self, out: dict, inputs: dict, targets: dict) -> dict:
        """Each part of the loss, averaged over the batch."""
        k, w = self.shape_spec.n_components, self.loss_weights_spec
        real = tf.cast(inputs["mask"], tf.float32)
        frailty = self.frailty()
        nll = tf.reduce_mean(decay.survival_nll(out["params"], targets["days_to_next"], targets["censored"], k, frailty))
        step_target, step_weight = self.step_targets(inputs, targets)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=step_target, logits=out["step_logits"])
        step_bce = tf.reduce_sum(bce * step_weight) / tf.maximum(tf.reduce_sum(step_weight), 1.0)
        parts = {"survival_nll": nll, "step_bce": step_bce, "recon": tf.constant(0.0), "kl": tf.constant(0.0)}
        parts["count_nll"] = tf.constant(0.0)
        if "future_sessions" in targets:
            future = decay.window_count_nll(
                out["params"], targets["future_sessions"], float(self.shape_spec.window_days), k, self.count_dispersion(), frailty
            )
            if w.count_row_weights == "none":
                weight = tf.ones_like(future)
            else:
                weight = decay.count_row_weights(inputs["x"][:, :, SESSIONS_FEATURE])
            parts["count_nll"] = tf.reduce_sum(future * weight) / tf.reduce_sum(weight)
        if self.shape_spec.use_vae:
            squared = tf.reduce_mean(tf.square(out["x_hat"] - out["x_norm"]), axis=-1)
            parts["recon"] = tf.reduce_sum(squared * real) / tf.maximum(tf.reduce_sum(real), 1.0)
            kl = -0.5 * tf.reduce_sum(1 + out["z_log_var"] - tf.square(out["z_mean"]) - tf.exp(out["z_log_var"]), axis=-1)
            parts["kl"] = tf.reduce_mean(kl)
        # The decay curve's own likelihood: what early stopping watches. The loss adds the step
        # head and the VAE's terms, and the KL weight still ramps up in the first epochs.
        parts["decay_nll"] = nll + w.count * parts["count_nll"]
        parts["loss"] = parts["decay_nll"] + w.step * step_bce + w.recon * parts["recon"] + self.kl_weight * parts["kl"]
        if w.floor_pooling:
            parts["loss"] += w.floor_pooling * tf.math.reduce_variance(out["params"][:, 2 * k])
        return parts

    def count_dispersion(self) -> tf.Tensor | None:
        """The negative binomial dispersion of the visit counts (None: Poisson)."""
        return None if self.dispersion_raw is None else decay.dispersion_from_raw(self.dispersion_raw)

    def frailty(self) -> tf.Tensor | None:
        """The variance of the gamma factor on each user's rate (None: a plain Poisson process)."""
        return None if self.frailty_raw is None else decay.dispersion_from_raw(self.frailty_raw)

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
        inputs, targets = data
        return self._track(self.loss_parts(self(inputs, training=False), inputs, targets))

    def _track(self, parts: dict) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(parts[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}


class KLWarmup(tf.keras.callbacks.Callback):
    """beta_t = beta * min(1, (epoch + 1) / warmup_epochs): the KL term eases in."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        w = self.model.loss_weights_spec
        ramp = min(1.0, (epoch + 1) / max(w.kl_warmup_epochs, 1))
        self.model.kl_weight.assign(w.beta * ramp if self.model.shape_spec.use_vae else 0.0)


class MemberAverage(_DecayCurves, tf.keras.Model):
    """Several independently trained models (``train.members``) served as one: the decay curve
    is the mean of the members' curves (:func:`model.decay.average_curves`, N x K components),
    so P(active), expected visits and the half-life are those of the averaged rates. The latent
    z and the reconstruction error are the first member's.

    Members differ by their random start and batch order only; their mean is steadier than any
    one of them (run-to-run spread is most of what one run gets wrong in expected visits).
    """

    def __init__(self, members: list[InterestDecayModel], **kwargs) -> None:
        super().__init__(**kwargs)
        if not members:
            raise ValueError("members is empty: average at least one model")
        self.members = list(members)
        first = members[0].shape_spec
        self.member_components = first.n_components
        self.shape_spec = replace(first, n_components=first.n_components * len(members))

    def frailty(self) -> tf.Tensor | None:
        """The members' mean frailty variance (None when they have none)."""
        values = [member.frailty() for member in self.members]
        return None if values[0] is None else tf.add_n(values) / len(values)

    def call(self, inputs: dict, training: bool = False) -> dict:
        outs = [member(inputs, training=False) for member in self.members]
        return {**outs[0], "params": decay.average_curves([out["params"] for out in outs], self.member_components)}
