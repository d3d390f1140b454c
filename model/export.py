"""Saving the trained model as a TensorFlow SavedModel that loads without pickle or custom code.

The folder holds the SavedModel (its ``serving_default`` signature takes ``x``, ``mask`` and
``static`` and returns every score; ``p_active`` returns P(active) at the model's horizons
alone, for explaining scores) and ``interest_decay.json``: the feature spec, horizons, decay-
curve days and the normalisation statistics, so a scorer can refuse a model whose features do
not match the view before it scores anything.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from interest_decay.model import decay
from interest_decay.model.btyd import Blend, Mixer, weighed_sum
from interest_decay.model.metadata import write_metadata
from interest_decay.model.network import InterestDecayModel, MemberAverage, Normalisation

# The decay curve's days up to 90; longer horizons add their own and the months before them.
DECAY_CURVE_DAYS = (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90)
LONG_CURVE_DAYS = (120, 180, 270, 365)


def decay_curve_days(horizons_days: tuple[int, ...] | list[int]) -> list[int]:
    """The days the ``decay_curve`` column gives P(still away) on: every day of
    DECAY_CURVE_DAYS, the longer ones up to the longest horizon, and every horizon."""
    longest = max(horizons_days)
    return sorted({*DECAY_CURVE_DAYS, *(d for d in LONG_CURVE_DAYS if d <= longest), *horizons_days})


class _Serving(tf.Module):
    """The two serving functions and the variables they read. The Keras model is closed over,
    not kept as an attribute, so saving traces these two functions only: not every layer's
    call for Keras's own format, nor the optimizer's slots (which made a save take seconds)."""

    def __init__(self, model: InterestDecayModel | MemberAverage, blend: Blend | None = None) -> None:
        super().__init__()
        self.weights_read = list(model.weights)
        # Saved with the model: the Pareto/NBD part's constants, so the SavedModel serves the mixture.
        self.mixer = Mixer(blend) if blend is not None else None
        shape = model.shape_spec
        curve_days = decay_curve_days(shape.horizons_days)
        horizons = list(shape.horizons_days)
        signature = [
            tf.TensorSpec([None, shape.n_windows, shape.n_window_features], tf.float32, name="x"),
            tf.TensorSpec([None, shape.n_windows], tf.float32, name="mask"),
            tf.TensorSpec([None, shape.n_static], tf.float32, name="static"),
        ]

        def serve(x: tf.Tensor, mask: tf.Tensor, static: tf.Tensor) -> dict:
            return model.predict_curves({"x": x, "mask": mask, "static": static}, curve_days, self.mixer)

        def p_active(x: tf.Tensor, mask: tf.Tensor, static: tf.Tensor) -> dict:
            """P(active within each horizon) alone: what explaining a score asks for, many times over."""
            params = model({"x": x, "mask": mask, "static": static}, training=False)["params"]
            parts = [(params, 1.0, 1)] if self.mixer is None else self.mixer.parts(params, static)
            return {
                "p_active": weighed_sum(
                    [tf.reduce_mean(decay.p_active_on(draws, horizons), axis=1) for draws, _, _ in parts], [w for _, w, _ in parts]
                )
            }

        self.serve = tf.function(serve, input_signature=signature)
        self.p_active = tf.function(p_active, input_signature=signature)


def save_model(
    model: InterestDecayModel | MemberAverage,
    path: str | Path,
    norm: Normalisation,
    feature_spec: dict,
    training: dict | None = None,
    blend: Blend | None = None,
) -> Path:
    """Write the SavedModel and its metadata to ``path``; returns it. ``training``: facts about
    how the model was trained (for example ``until``), kept in the metadata. ``blend``: the
    Pareto/NBD part every served score mixes in (model/btyd.py); none, the network alone."""
    path = Path(path)
    serving = _Serving(model, blend)
    tf.saved_model.save(serving, str(path), signatures={"serving_default": serving.serve, "p_active": serving.p_active})
    write_metadata(
        path,
        {
            "feature_spec": feature_spec,
            "model_shape": model.shape_spec.to_dict(),
            "decay_curve_days": decay_curve_days(model.shape_spec.horizons_days),
            "decay_params_layout": decay.PARAMS_LAYOUT,
            "normalisation": norm.to_dict(),
            "training": dict(training or {}),
            "btyd_blend": blend.to_dict() if blend is not None else None,
        },
    )
    return path
