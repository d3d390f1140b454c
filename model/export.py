"""Saving the trained model as a TensorFlow SavedModel that loads without pickle or custom code.

The folder holds the SavedModel (its ``serving_default`` signature takes ``x``, ``mask`` and
``static`` and returns every score) and ``interest_decay.json``: the feature spec, horizons,
decay-curve days and the normalisation statistics, so a scorer can refuse a model whose
features do not match the view before it scores anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from model import decay
from model.network import InterestDecayModel, MemberAverage, Normalisation
from model.scoring import METADATA_FILE, read_metadata

DECAY_CURVE_DAYS = (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90)


class _Serving(tf.Module):
    """The two serving functions and the variables they read. The Keras model is closed over,
    not kept as an attribute, so saving traces these two functions only: not every layer's
    call for Keras's own format, nor the optimizer's slots (which made a save take seconds)."""

    def __init__(self, model: InterestDecayModel | MemberAverage, visits_scale: float = 1.0, visits_slope: float = 1.0) -> None:
        super().__init__()
        self.weights_read = list(model.weights)
        shape = model.shape_spec
        k = shape.n_components
        frailty = model.frailty()
        signature = [
            tf.TensorSpec([None, shape.n_windows, shape.n_window_features], tf.float32, name="x"),
            tf.TensorSpec([None, shape.n_windows], tf.float32, name="mask"),
            tf.TensorSpec([None, shape.n_static], tf.float32, name="static"),
        ]

        def serve(x: tf.Tensor, mask: tf.Tensor, static: tf.Tensor) -> dict:
            out = model.predict_curves({"x": x, "mask": mask, "static": static}, tf.constant(DECAY_CURVE_DAYS, tf.float32))
            factor = decay.visits_calibration_factor(out["decay_params"], k, visits_scale, visits_slope, float(shape.window_days))
            out["expected_visits"] = out["expected_visits"] * factor[:, None]
            out["return_median_days"] = decay.return_median_days(out["decay_params"], k, frailty=frailty)
            out["interest_half_life_days"] = decay.interest_half_life_days(out["decay_params"], k)
            out["baseline_visits_per_30d"] = decay.baseline_visits(out["decay_params"], k, 30.0) * factor
            out["interest_now"] = decay.interest_now(out["decay_params"], k)
            return out

        def p_active(x: tf.Tensor, mask: tf.Tensor, static: tf.Tensor) -> dict:
            """P(active within each horizon) alone: what explaining a score asks for, many times over."""
            out = model({"x": x, "mask": mask, "static": static}, training=False)
            horizons = tf.constant([list(shape.horizons_days)], tf.float32)
            return {"p_active": 1.0 - decay.survival(out["params"], horizons, k, frailty)}

        self.serve = tf.function(serve, input_signature=signature)
        self.p_active = tf.function(p_active, input_signature=signature)


def save_model(
    model: InterestDecayModel | MemberAverage,
    path: str | Path,
    norm: Normalisation,
    feature_spec: dict,
    training: dict | None = None,
    visits_scale: float = 1.0,
    visits_slope: float = 1.0,
) -> Path:
    """Write the SavedModel and its metadata to ``path``; returns it. ``training``: facts about
    how the model was trained (for example ``until``), kept in the metadata. ``visits_scale``
    and ``visits_slope`` calibrate the expected visits (and the baseline in visits) the model
    serves, not P(active), as fitted on the validation users
    (:func:`model.decay.visits_calibration_factor`)."""
    path = Path(path)
    serving = _Serving(model, float(visits_scale), float(visits_slope))
    frailty = model.frailty()
    tf.saved_model.save(serving, str(path), signatures={"serving_default": serving.serve, "p_active": serving.p_active})
    metadata = {
        "feature_spec": feature_spec,
        "model_shape": model.shape_spec.to_dict(),
        "decay_curve_days": list(DECAY_CURVE_DAYS),
        "decay_params_layout": decay.PARAMS_LAYOUT,
        "normalisation": norm.to_dict(),
        "training": dict(training or {}),
        "visits_scale": float(visits_scale),
        "visits_slope": float(visits_slope),
        # The gamma frailty's variance that P(active) reads (None: a Poisson process).
        "frailty": None if frailty is None else float(frailty.numpy()),
    }
    (path / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return path


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
