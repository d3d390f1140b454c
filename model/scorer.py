"""A saved model loaded for scoring: every score of a batch of users as numpy arrays, and the
closed-form curves (P(active), expected visits) at any horizon from the decay parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from interest_decay.model import decay
from interest_decay.model.metadata import read_metadata

# Values one step of the curves' computation may hold (float32): about 80 MB.
CHUNK_ELEMENTS = 20_000_000


class Scorer:
    """A loaded model: ``scorer(inputs)`` gives numpy arrays of every score."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(path)
        layout = self.metadata.get("decay_params_layout")
        if layout != decay.PARAMS_LAYOUT:
            raise ValueError(
                f"model {path} has decay parameters laid out as {layout or 'v1 (softplus levels)'}, this version reads "
                f"{decay.PARAMS_LAYOUT}: retrain it with `interest-decay train`"
            )
        loaded = tf.saved_model.load(str(path))
        self._serve, self._p_active = loaded.signatures["serving_default"], loaded.signatures["p_active"]

    @property
    def feature_spec(self) -> dict:
        return self.metadata["feature_spec"]

    def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
        tensors = {k: tf.convert_to_tensor(inputs[k], tf.float32) for k in ("x", "mask", "static")}
        return {k: v.numpy() for k, v in self._serve(**tensors).items()}

    def p_active(self, inputs: dict) -> np.ndarray:
        """P(active within each of the model's horizons), users x horizons: one light pass."""
        tensors = {k: tf.convert_to_tensor(inputs[k], tf.float32) for k in ("x", "mask", "static")}
        return self._p_active(**tensors)["p_active"].numpy()

    def p_active_at(self, inputs: dict, horizon: float, batch_size: int = 5_000) -> np.ndarray:
        """P(active within ``horizon`` days), per user: the light signature when it is one of
        the model's horizons (what explaining asks for many times over), in batches."""
        horizons = list(self.feature_spec["horizons_days"])
        if horizon not in horizons:
            return self.p_active_within(inputs, [horizon])[:, 0]
        column = horizons.index(horizon)
        parts = [
            self.p_active({k: v[i : i + batch_size] for k, v in inputs.items()})[:, column] for i in range(0, len(inputs["x"]), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def p_active_within(self, inputs: dict, days: list[float], batch_size: int = 2_000) -> np.ndarray:
        """P(active within each of ``days``), users x days: the decay curve at any horizon,
        not only the model's own horizons."""
        parts = []
        for start in range(0, len(inputs["x"]), batch_size):
            params = self({name: value[start : start + batch_size] for name, value in inputs.items()})["decay_params"]
            parts.append(self.p_active_from(params, days))
        return np.concatenate(parts) if parts else np.zeros((0, len(days)), np.float32)

    def draws_of(self, decay_params: np.ndarray) -> np.ndarray:
        """``decay_params`` as a call returns them, [B, D x 7], as [B, D, 7]: each user's draws."""
        params = np.asarray(decay_params, np.float32)
        return params.reshape(len(params), -1, decay.N_PARAMS)

    def p_active_from(self, decay_params: np.ndarray, days: list[float]) -> np.ndarray:
        """P(active within each of ``days``), users x days, from the ``decay_params`` a call
        already returned: the mean over the user's draws, read off the serving grid as the
        scores are, so one pass of the network serves every horizon and curve. In chunks of
        users: the grid holds users x draws x its days in memory."""
        draws = self.draws_of(decay_params)
        size = len(decay.day_grid(days))
        chunk = max(1, CHUNK_ELEMENTS // max(1, draws.shape[1] * size))
        parts = [
            tf.reduce_mean(decay.p_active_on(tf.constant(draws[i : i + chunk]), days), axis=1).numpy() for i in range(0, len(draws), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(days)), np.float32)

    def expected_visits_from(self, decay_params: np.ndarray, days: list[float]) -> np.ndarray:
        """Expected visits within each of ``days``, users x days, from ``decay_params``."""
        params = tf.constant(self.draws_of(decay_params))
        return tf.reduce_mean(decay.expected_visits(params, tf.constant(list(days), tf.float32)), axis=1).numpy()

    def expected_visits_interval_from(self, decay_params: np.ndarray, days: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the 80% interval of the expected visits within each of ``days``, users
        x days, as the scores' ``expected_visits_<h>d_low`` / ``_high`` are made: the draws'
        spread, each draw at its frailty's 10th and 90th percentiles, widened to hold the mean."""
        params = tf.constant(self.draws_of(decay_params))
        d = tf.constant(list(days), tf.float32)
        mean = tf.reduce_mean(decay.expected_visits(params, d), axis=1).numpy()
        low, high = (decay.expected_visits(decay.at_frailty_quantile(params, q), d).numpy() for q in decay.INTERVAL)
        return np.minimum(np.quantile(low, decay.INTERVAL[0], axis=1), mean), np.maximum(np.quantile(high, decay.INTERVAL[1], axis=1), mean)

    def by_draw(self, decay_params: np.ndarray, days: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(still there) [B, D], the visits within each of ``days`` of a user still there
        [B, D, H], the frailty's shape k [B, D]) for each of the user's draws: the parts of the
        mixture a count interval needs."""
        params = tf.constant(self.draws_of(decay_params))
        there = decay.expected_visits_there(params, tf.constant(list(days), tf.float32)).numpy()
        return decay.p_alive(params).numpy(), there, decay.frailty_shape(params).numpy()
