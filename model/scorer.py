"""A saved model loaded for scoring: every score of a batch of users as numpy arrays, and the
closed-form curves (P(active), expected visits) at any horizon from the decay parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from interest_decay.model import decay
from interest_decay.model.metadata import read_metadata


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

    @property
    def frailty(self) -> float | None:
        """The variance of the gamma factor on each user's rate that P(active) allows for (None:
        a Poisson process, as every model saved before it had one)."""
        value = self.metadata.get("frailty")
        return None if value is None else float(value)

    @property
    def visits_scale(self) -> float:
        """What the model multiplies its expected visits by (1 for models saved before it had one)."""
        return float(self.metadata.get("visits_scale", 1.0))

    @property
    def visits_slope(self) -> float:
        """The calibration slope of its expected visits (1 for models saved before it had one)."""
        return float(self.metadata.get("visits_slope", 1.0))

    def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
        tensors = {k: tf.convert_to_tensor(inputs[k], tf.float32) for k in ("x", "mask", "static")}
        return {k: v.numpy() for k, v in self._serve(**tensors).items()}

    def p_active(self, inputs: dict) -> np.ndarray:
        """P(active within each of the model's horizons), users x horizons: one light pass."""
        tensors = {k: tf.convert_to_tensor(inputs[k], tf.float32) for k in ("x", "mask", "static")}
        return self._p_active(**tensors)["p_active"].numpy()

    def p_active_within(self, inputs: dict, days: list[float], batch_size: int = 50_000) -> np.ndarray:
        """P(active within each of ``days``), users x days: the decay curve at any horizon,
        not only the model's own horizons."""
        parts = []
        for start in range(0, len(inputs["x"]), batch_size):
            params = self({name: value[start : start + batch_size] for name, value in inputs.items()})["decay_params"]
            parts.append(self.p_active_from(params, days))
        return np.concatenate(parts) if parts else np.zeros((0, len(days)), np.float32)

    def p_active_from(self, decay_params: np.ndarray, days: list[float]) -> np.ndarray:
        """P(active within each of ``days``) from the ``decay_params`` a call already returned,
        so one pass of the network serves every horizon and curve."""
        cumulative = tf.constant(self._cumulative_rate(decay_params, days))
        return 1.0 - decay.survival_from_cumulative(cumulative, self.frailty).numpy()

    def expected_visits_from(self, decay_params: np.ndarray, days: list[float]) -> np.ndarray:
        """Expected visits within each of ``days``, users x days, from ``decay_params``: Lambda
        times the model's calibration factor, as the serving function gives them."""
        shape = self.metadata["model_shape"]
        factor = decay.visits_calibration_factor(
            tf.constant(decay_params), shape["n_components"], self.visits_scale, self.visits_slope, float(shape["window_days"])
        ).numpy()
        return self._cumulative_rate(decay_params, days) * factor[:, None]

    def _cumulative_rate(self, decay_params: np.ndarray, days: list[float]) -> np.ndarray:
        """Lambda at each of ``days``, users x days."""
        k = self.metadata["model_shape"]["n_components"]
        return decay.cumulative_rate(tf.constant(decay_params), tf.constant([days], tf.float32), k).numpy()
