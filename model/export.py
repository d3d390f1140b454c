"""Saving the trained model as a TensorFlow SavedModel that loads without pickle or custom code.

The folder holds the SavedModel (its ``serving_default`` signature takes ``x``, ``mask`` and
``static`` and returns every score) and ``interest_decay.json``: the feature spec, horizons,
decay-curve days and the normalisation statistics, so a scorer can refuse a model whose
features do not match the view before it scores anything.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from interest_decay.model import decay
from interest_decay.model.metadata import write_metadata
from interest_decay.model.network import InterestDecayModel, MemberAverage, Normalisation

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
    write_metadata(path, metadata)
    return path
