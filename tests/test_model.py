from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from model import decay
from model.export import DECAY_CURVE_DAYS, Scorer, save_model
from model.network import InterestDecayModel, ModelShape, fit_normalisation
from model.training import as_dataset, fit, steps_for

SHAPE = ModelShape(n_windows=6, n_window_features=12, n_static=5, window_days=7, horizons_days=(7, 14, 30), hidden_units=16)


def _toy(n: int, seed: int = 0) -> tuple[dict, dict]:
    """Users whose recent activity decides whether they come back soon."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, size=(n, 6, 12)).astype(np.float32)
    engaged = rng.random(n) < 0.5
    x[~engaged, -2:, :] = 0.0  # disengaged users have gone quiet lately
    mask = np.ones((n, 6), np.float32)
    mask[: n // 4, :3] = 0.0  # a quarter with a short history
    x[mask == 0] = 0.0
    static = rng.random((n, 5)).astype(np.float32) * 10
    days = np.where(engaged, rng.exponential(3.0, n), rng.exponential(40.0, n)).astype(np.float32)
    censored = (days > 35).astype(np.float32)
    days = np.minimum(days, 35).astype(np.float32)
    targets = {"days_to_next": days, "censored": censored}
    for h in (7, 14, 30):
        targets[f"active_{h}d"] = ((days < h) & (censored == 0)).astype(np.float32)
    return {"x": x, "mask": mask, "static": static}, targets


def _model(inputs: dict, use_vae: bool = True) -> InterestDecayModel:
    shape = ModelShape(**{**SHAPE.to_dict(), "use_vae": use_vae})
    model = InterestDecayModel(shape, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-3))
    return model


@pytest.mark.parametrize("use_vae", [True, False])
def test_output_shapes(use_vae: bool) -> None:
    inputs, _ = _toy(32)
    out = _model(inputs, use_vae)(inputs)
    assert out["step_logits"].shape == (32, 6)
    assert out["params"].shape == (32, 2 * SHAPE.n_components + 1)
    assert ("x_hat" in out) is use_vae
    if use_vae:
        assert out["x_hat"].shape == (32, 6, 12)
        assert out["z"].shape == (32, SHAPE.latent_dim)


def test_survival_curves_never_rise_and_start_at_one() -> None:
    params = tf.random.normal((500, 7), stddev=3.0, seed=1)
    days = tf.constant([np.linspace(0, 400, 200)], tf.float32)
    curves = decay.survival(params, days, 3).numpy()
    assert np.allclose(curves[:, 0], 1.0)
    assert (np.diff(curves, axis=1) <= 1e-7).all()


def test_half_life_solves_the_curve() -> None:
    params = tf.random.normal((50, 7), seed=2)
    half = decay.half_life_days(params, 3)
    at_half = decay.survival(params, half[:, None], 3).numpy()[:, 0]
    reached = half.numpy() < decay.HALF_LIFE_CAP_DAYS
    assert reached.any()
    assert np.allclose(at_half[reached], 0.5, atol=1e-3)


def test_interest_half_life_is_where_the_rate_halves() -> None:
    params = tf.random.normal((50, 7), seed=3)
    half = decay.interest_half_life_days(params, 3)
    ratio = (decay.rate(params, half[:, None], 3) / decay.rate(params, tf.zeros((50, 1)), 3)).numpy()[:, 0]
    reached = half.numpy() < decay.HALF_LIFE_CAP_DAYS
    assert reached.any()
    assert np.allclose(ratio[reached], 0.5, atol=1e-3)
    # One fading component and no floor: tau * ln 2.
    one = tf.constant([[5.0, -30.0, -30.0, float(np.log(np.expm1(10.0 - decay.MIN_TAU_DAYS))), 0.0, 0.0, -30.0]])
    assert decay.interest_half_life_days(one, 3).numpy()[0] == pytest.approx(10.0 * np.log(2), rel=1e-3)


def test_loss_falls_and_the_model_learns(tmp_path: Path) -> None:
    inputs, targets = _toy(3000)
    val_inputs, val_targets = _toy(1000, seed=1)
    model = _model(inputs)
    before = model.evaluate(as_dataset(inputs, targets, 256, None), steps=12, return_dict=True, verbose=0)["loss"]
    result = fit(
        model, as_dataset(inputs, targets, 128), epochs=4, steps_per_epoch=steps_for(3000, 128),
        checkpoint_dir=str(tmp_path), val_sample=(val_inputs, val_targets),
    )  # fmt: skip
    after = model.evaluate(as_dataset(inputs, targets, 256, None), steps=12, return_dict=True, verbose=0)["loss"]
    assert after < before
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.history["val_auc_7d"][-1] > 0.8


def test_resume_after_a_crash_starts_where_it_stopped(tmp_path: Path) -> None:
    inputs, targets = _toy(600)

    def crash_after_epoch_2(epoch: int, logs: dict) -> None:  # runs after the chief's checkpoint
        if epoch == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        fit(_model(inputs), as_dataset(inputs, targets, 64), epochs=4, steps_per_epoch=5, checkpoint_dir=str(tmp_path),
            epoch_listeners=[crash_after_epoch_2])  # fmt: skip
    resumed = fit(_model(inputs), as_dataset(inputs, targets, 64), epochs=4, steps_per_epoch=5, checkpoint_dir=str(tmp_path))
    assert (resumed.first_epoch, resumed.last_epoch) == (2, 4)
    assert len(resumed.history["loss"]) == 2


class _WeightsAtEpochEnd(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seen.append([w.numpy().copy() for w in self.model.trainable_weights])


def test_weight_averaging_ends_with_the_mean_and_survives_a_crash(tmp_path: Path) -> None:
    inputs, targets = _toy(600)
    before_crash, after_crash = _WeightsAtEpochEnd(), _WeightsAtEpochEnd()

    def crash_after_epoch_3(epoch: int, logs: dict) -> None:
        if epoch == 3:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        fit(_model(inputs), as_dataset(inputs, targets, 64), epochs=4, steps_per_epoch=5, checkpoint_dir=str(tmp_path),
            first_callbacks=[before_crash], epoch_listeners=[crash_after_epoch_3], average_from_epoch=2)  # fmt: skip
    model = _model(inputs)
    resumed = fit(model, as_dataset(inputs, targets, 64), epochs=4, steps_per_epoch=5, checkpoint_dir=str(tmp_path),
                  first_callbacks=[after_crash], val_sample=(inputs, targets), average_from_epoch=2)  # fmt: skip
    assert (resumed.first_epoch, resumed.last_epoch, resumed.averaged_epochs) == (3, 4, 3)
    epochs_2_to_4 = [*before_crash.seen[1:], *after_crash.seen]
    assert len(epochs_2_to_4) == 3
    for final, *at_epoch_end in zip(model.trainable_weights, *epochs_2_to_4):
        np.testing.assert_allclose(final.numpy(), np.mean(at_epoch_end, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.trainable_weights[0].numpy(), after_crash.seen[-1][0])  # not simply the last epoch
    assert set(resumed.final_metrics) == {"val_auc_7d", "val_auc_14d", "val_auc_30d"}


def test_one_averaged_epoch_is_exactly_that_epoch(tmp_path: Path) -> None:
    """Bit for bit, whatever the weights were before: Horovod ranks start from different ones."""
    inputs, targets = _toy(300)
    seen = _WeightsAtEpochEnd()
    model = _model(inputs)
    fit(model, as_dataset(inputs, targets, 64), epochs=1, steps_per_epoch=3, checkpoint_dir=str(tmp_path),
        first_callbacks=[seen], average_from_epoch=1)  # fmt: skip
    for final, at_epoch_end in zip(model.trainable_weights, seen.seen[0]):
        np.testing.assert_array_equal(final.numpy(), at_epoch_end)


def test_saved_model_gives_the_same_scores_without_custom_code(tmp_path: Path) -> None:
    inputs, _ = _toy(64)
    model = _model(inputs)
    norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
    path = save_model(model, tmp_path / "model", norm, {"window_features": ["sessions"]})
    scorer = Scorer(path)
    scores = scorer(inputs)
    direct = model.predict_curves(inputs, tf.constant(DECAY_CURVE_DAYS, tf.float32))
    np.testing.assert_allclose(scores["p_active"], direct["p_active"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["decay_curve"], direct["decay_curve"].numpy(), rtol=1e-5)
    assert scores["half_life_days"].shape == (64,)
    assert scorer.feature_spec == {"window_features": ["sessions"]}
