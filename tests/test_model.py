from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from interest_decay.model import decay
from interest_decay.model.distributed import RunPlan, build_model, member_checkpoints, train_in_process, visits_calibration
from interest_decay.model.export import DECAY_CURVE_DAYS
from interest_decay.model.network import InterestDecayModel, LossWeights, ModelShape, fit_normalisation
from interest_decay.model.scorer import Scorer
from interest_decay.model.training import MAX_VISITS_SLOPE, as_dataset, fit, fit_visits_calibration, steps_for, validation_visits

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


def _params(raw: np.ndarray) -> tf.Tensor:
    """decay_params from raw head outputs, as the model makes them."""
    return decay.head_params(tf.constant(raw, tf.float32), (raw.shape[1] - 1) // 2)


def _hand_set(levels: list[float], taus: list[float], floor: float) -> tf.Tensor:
    """decay_params for one user with these levels today, time constants and floor."""
    return tf.constant([[*np.log(levels), *taus, np.log(floor)]], tf.float32)


def test_survival_curves_never_rise_and_start_at_one() -> None:
    params = _params(np.random.default_rng(1).normal(0, 3, (500, 7)))
    days = tf.constant([np.linspace(0, 400, 200)], tf.float32)
    curves = decay.survival(params, days, 3).numpy()
    assert np.allclose(curves[:, 0], 1.0)
    assert (np.diff(curves, axis=1) <= 1e-7).all()


def test_head_keeps_time_constants_bounded() -> None:
    raw = np.array([[2.0, -50.0, 0.0], [2.0, 50.0, 0.0], [50.0, 0.0, 50.0]], np.float32)
    params = decay.head_params(tf.constant(raw), 1).numpy()
    np.testing.assert_allclose(params[:2, 1], [decay.MIN_TAU_DAYS, decay.MAX_TAU_DAYS], rtol=1e-4)
    assert (params[:, [0, 2]] <= decay.MAX_LOG_RATE).all()  # no more than e^7 visits a day
    assert decay.tau_from_raw(tf.constant(decay.raw_for_tau(15.0))).numpy() == pytest.approx(15.0, rel=1e-4)


def test_return_median_solves_the_curve() -> None:
    params = _params(np.random.default_rng(3).normal(-1, 1, (50, 7)))
    median = decay.return_median_days(params, 3)
    at_median = decay.survival(params, median[:, None], 3).numpy()[:, 0]
    reached = median.numpy() < decay.RETURN_MEDIAN_CAP_DAYS
    assert reached.any()
    assert np.allclose(at_median[reached], 0.5, atol=1e-3)


def test_interest_half_life_equals_the_closed_form() -> None:
    # One component: tau ln 2, whatever the level and the floor.
    for level, tau, floor in ((2.0, 10.0, 0.05), (1e-12, 3.0, 1.0)):
        half = decay.interest_half_life_days(_hand_set([level, level], [tau, tau], floor), 2).numpy()[0]
        assert half == pytest.approx(tau * np.log(2), rel=1e-4)
    # Two components: the d where 0.6 exp(-d/2) + 0.2 exp(-d/40) = 0.4, solved by hand with brentq.
    from scipy.optimize import brentq

    expected = brentq(lambda d: 0.6 * np.exp(-d / 2) + 0.2 * np.exp(-d / 40) - 0.4, 0, 100)
    half = decay.interest_half_life_days(_hand_set([0.6, 0.2], [2.0, 40.0], 0.3), 2).numpy()[0]
    assert half == pytest.approx(expected, rel=1e-4)
    # The excess rate, floor left out, is half of today's there.
    params = _hand_set([0.6, 0.2], [2.0, 40.0], 0.3)
    excess = decay.rate(params, tf.constant([[0.0, half]]), 2).numpy()[0] - 0.3
    assert excess[1] == pytest.approx(excess[0] / 2, rel=1e-4)
    assert decay.baseline_visits(params, 2).numpy()[0] == pytest.approx(9.0, rel=1e-5)
    assert decay.interest_now(params, 2).numpy()[0] == pytest.approx(0.8 / 0.3, rel=1e-5)


def test_window_counts_likelihood_matches_a_hand_count() -> None:
    params = _hand_set([1.0], [7.0], 0.1)
    counts = tf.constant([[3.0, 0.0, -1.0]])  # the third window is past the end of the data
    lam = lambda d: 7.0 * (1 - np.exp(-d / 7.0)) + 0.1 * d  # noqa: E731
    mu = [lam(7) - lam(0), lam(14) - lam(7)]
    expected = (mu[0] - 3 * np.log(mu[0])) + mu[1]
    assert decay.window_count_nll(params, counts, 7.0, 1).numpy()[0] == pytest.approx(expected, rel=1e-5)


def _three_weeks_of_one_user() -> tuple[tf.Tensor, tf.Tensor, Callable[[float], float], np.ndarray, np.ndarray]:
    """One user fading as exp(-d / 7) over a floor of 0.1 a day, with 3, 0 and 12 visits in the
    next three weeks and a fourth past the end of the data: (decay_params, the counts as the view
    has them, Lambda(d), each week's expected visits, the three counts)."""
    params = _hand_set([1.0], [7.0], 0.1)
    counts = tf.constant([[3.0, 0.0, 12.0, -1.0]])
    lam = lambda d: 7.0 * (1 - np.exp(-d / 7.0)) + 0.1 * d  # noqa: E731
    mu = np.array([lam(7 * (i + 1)) - lam(7 * i) for i in range(3)])
    return params, counts, lam, mu, np.array([3.0, 0.0, 12.0])


def test_negative_binomial_counts_match_scipy_and_tend_to_the_poisson_likelihood() -> None:
    from scipy.special import gammaln
    from scipy.stats import nbinom

    params, counts, lam, mu, n = _three_weeks_of_one_user()
    for dispersion in (0.05, 1.0, 4.0):
        r = 1 / dispersion
        by_scipy = -(nbinom.logpmf(n, r, r / (r + mu)) + gammaln(n + 1)).sum()  # log n! left out, as in the Poisson one
        nll = decay.window_count_nll(params, counts, 7.0, 1, tf.constant(dispersion)).numpy()[0]
        assert nll == pytest.approx(by_scipy, rel=1e-5)
    poisson = decay.window_count_nll(params, counts, 7.0, 1).numpy()[0]
    # The two differ by about dispersion x n(n - 1) / 2 per window.
    assert decay.window_count_nll(params, counts, 7.0, 1, tf.constant(1e-8)).numpy()[0] == pytest.approx(poisson, abs=1e-5)


def test_the_negative_binomial_dispersion_is_learned_from_the_counts(tmp_path: Path) -> None:
    """Visits in bursts (gamma-Poisson, dispersion 1) raise it well above its start of 0.1;
    Poisson visits keep it near there (a short fit leaves some spread in the rates it learned)."""
    learned = {}
    for name, dispersion in (("bursts", 1.0), ("poisson", 0.0)):
        inputs, targets = _toy(256, seed=4)
        rng = np.random.default_rng(5)
        rates = 1.5 * (rng.gamma(1 / dispersion, dispersion, size=(256, 3)) if dispersion else np.ones((256, 3)))
        targets["future_sessions"] = rng.poisson(rates).astype(np.float32)
        norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
        model = InterestDecayModel(SHAPE, norm, LossWeights(count_likelihood="negative_binomial"))
        model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-2))
        result = fit(
            model, as_dataset(inputs, targets, 64), epochs=4, steps_per_epoch=8, checkpoint_dir=str(tmp_path / name)
        )  # fmt: skip
        learned[name] = result.final_metrics["count_dispersion"]
    assert learned["bursts"] > 0.6 and learned["poisson"] < 0.2, learned


def test_a_gamma_frailty_gives_the_mixed_poisson_closed_forms() -> None:
    """Rates spread around the curve by a gamma factor of mean 1 and variance a: the counts of
    all windows together are the gamma-Poisson mixture's (one factor for every window), S is
    (1 + a Lambda)^(-1/a), the survival terms are -log S and -log of S's slope, the median wait
    is where S = 1/2; a tiny a is the Poisson process."""
    from scipy.special import gammaln

    params, counts, lam, mu, n = _three_weeks_of_one_user()
    for a in (0.05, 1.0, 4.0):
        r = 1 / a
        # P(n) = prod(mu^n / n!) G(r + N) / G(r) r^r / (r + M)^(r + N), log n! left out.
        log_p = (n * np.log(mu)).sum() + gammaln(r + n.sum()) - gammaln(r) + r * np.log(r) - (r + n.sum()) * np.log(r + mu.sum())
        nll = decay.window_count_nll(params, counts, 7.0, 1, frailty=tf.constant(a)).numpy()[0]
        assert nll == pytest.approx(-log_p, rel=1e-5)
        s = decay.survival(params, tf.constant([[10.0]]), 1, a).numpy()[0, 0]
        assert s == pytest.approx((1 + a * lam(10.0)) ** (-1 / a), rel=1e-5)
        censored = decay.survival_nll(params, tf.constant([10.0]), tf.constant([1.0]), 1, tf.constant(a)).numpy()[0]
        assert censored == pytest.approx(-np.log(s), rel=1e-5)
        rate_10 = np.exp(-10.0 / 7.0) + 0.1
        density = rate_10 * (1 + a * lam(10.0)) ** (-1 / a - 1)
        returned = decay.survival_nll(params, tf.constant([10.0]), tf.constant([0.0]), 1, tf.constant(a)).numpy()[0]
        assert returned == pytest.approx(-np.log(density), rel=1e-5)
        median = decay.return_median_days(params, 1, frailty=a).numpy()
        assert decay.survival(params, median[:, None], 1, a).numpy()[0, 0] == pytest.approx(0.5, abs=1e-4)
    poisson = decay.window_count_nll(params, counts, 7.0, 1).numpy()[0]
    assert decay.window_count_nll(params, counts, 7.0, 1, frailty=tf.constant(1e-7)).numpy()[0] == pytest.approx(poisson, abs=1e-3)
    assert decay.survival(params, tf.constant([[10.0]]), 1, 1e-7).numpy()[0, 0] == pytest.approx(np.exp(-lam(10.0)), rel=1e-4)
    with pytest.raises(ValueError, match="not both"):
        decay.window_count_nll(params, counts, 7.0, 1, tf.constant(1.0), tf.constant(1.0))


def test_the_frailty_is_learned_from_users_who_differ_around_the_curve(tmp_path: Path) -> None:
    """Users who look alike but whose rates differ by a gamma factor (variance 1, the same in
    every window) raise the frailty from its start of 0.1 to about 1; a Poisson rate shared by
    all keeps it low (measured 0.97 and 0.26: a short fit leaves some spread in the rates it
    learned, and the toy's times to the next visit are not drawn from the counts' rate)."""
    learned = {}
    for name, spread in (("spread", 1.0), ("poisson", 0.0)):
        inputs, targets = _toy(256, seed=4)
        rng = np.random.default_rng(5)
        factor = rng.gamma(1 / spread, spread, size=(256, 1)) if spread else np.ones((256, 1))
        targets["future_sessions"] = rng.poisson(1.5 * factor * np.ones((1, 3))).astype(np.float32)
        norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
        model = InterestDecayModel(SHAPE, norm, LossWeights(frailty="gamma"))
        model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-2))
        result = fit(model, as_dataset(inputs, targets, 64), epochs=4, steps_per_epoch=8, checkpoint_dir=str(tmp_path / name))
        learned[name] = result.final_metrics["frailty"]
    assert 0.6 < learned["spread"] < 1.6 and learned["poisson"] < 0.4, learned


def test_validation_visits_are_the_expected_over_the_observed_in_the_observed_windows() -> None:
    inputs, _ = _toy(2)
    model = _model(inputs)
    k = SHAPE.n_components
    # The head's kernel starts at zero, so every user gets the parameters its bias gives.
    bias = np.array([*np.log(np.linspace(0.2, 0.6, k)), *[decay.raw_for_tau(t) for t in np.geomspace(2.0, 30.0, k)], np.log(0.05)])
    model(inputs)
    model.head_out.bias.assign(bias.astype(np.float32))
    log_level, tau, log_floor = np.split(decay.head_params(tf.constant([bias], tf.float32), k).numpy()[0], [k, 2 * k])
    lam = lambda d: float((np.exp(log_level) * tau * (1 - np.exp(-d / tau))).sum() + np.exp(log_floor[0]) * d)  # noqa: E731
    window = [lam(7) - lam(0), lam(14) - lam(7), lam(21) - lam(14)]
    # User 1 observed for three windows (3, 0, 2 visits), user 2 for one (1 visit).
    future = np.array([[3.0, 0.0, 2.0], [1.0, -1.0, -1.0]], np.float32)
    expected = (sum(window) + window[0]) / 6.0
    assert validation_visits(model, inputs, {"future_sessions": future})["val_visits_predicted_over_observed"] == pytest.approx(
        expected, rel=1e-4
    )
    assert validation_visits(model, inputs, {"future_sessions": np.full((2, 3), -1.0, np.float32)}) == {}

    # The latest rows are those whose last window lies past the end of the data: user 2's 150
    # visits (enough to scale by) in its first window; user 1 is left out of that ratio.
    targets = {"future_sessions": np.array([[3.0, 0.0, 2.0], [150.0, -1.0, -1.0]], np.float32)}
    ratios = validation_visits(model, inputs, targets)
    assert ratios["val_visits_predicted_over_observed"] == pytest.approx((sum(window) + window[0]) / 155.0, rel=1e-4)
    assert ratios["val_visits_predicted_over_observed_latest"] == pytest.approx(window[0] / 150.0, rel=1e-4)
    # The calibration fitted on the same rows: one user, one level, so no slope and the scale that matches.
    assert ratios["val_visits_calibration_slope"] == 1.0
    assert ratios["val_visits_calibration_scale"] == pytest.approx(150.0 / window[0], rel=1e-4)
    # Below MIN_LATEST_VISITS visits there, no latest ratio, and too few anywhere for a calibration.
    few = validation_visits(model, inputs, {"future_sessions": future})
    assert "val_visits_predicted_over_observed_latest" not in few and "val_visits_calibration_scale" not in few


def test_the_visits_calibration_comes_from_the_latest_validation_rows_when_they_have_a_ratio() -> None:
    both = {"val_visits_predicted_over_observed": 1.25, "val_visits_predicted_over_observed_latest": 0.8}
    assert visits_calibration(both, calibrate=True) == pytest.approx((1.25, 1.0))
    assert visits_calibration({"val_visits_predicted_over_observed": 1.25}, calibrate=True) == pytest.approx((0.8, 1.0))
    assert visits_calibration(both, calibrate=False) == (1.0, 1.0)
    assert visits_calibration({}, calibrate=True) == (1.0, 1.0)
    fitted = {**both, "val_visits_calibration_scale": 0.9, "val_visits_calibration_slope": 0.95}
    assert visits_calibration(fitted, calibrate=True) == (0.9, 0.95)
    assert visits_calibration(fitted, calibrate=True, slope=False) == pytest.approx((1.25, 1.0))
    assert visits_calibration(fitted, calibrate=False) == (1.0, 1.0)


def test_the_visits_calibration_fit_finds_the_scale_and_slope_that_drew_the_visits() -> None:
    rng = np.random.default_rng(3)
    level = np.exp(rng.normal(-1.0, 1.5, 20_000))  # each user's expected visits in one window
    windows = rng.integers(1, 4, level.size)  # one to three windows observed
    expected = level * windows
    observed = rng.poisson(expected * 0.9 * level ** (0.85 - 1.0))
    scale, slope = fit_visits_calibration(expected, observed, level)
    assert scale == pytest.approx(0.9, rel=0.03) and slope == pytest.approx(0.85, abs=0.01)
    # At the optimum the calibrated total is the observed total.
    assert (expected * scale * level ** (slope - 1.0)).sum() == pytest.approx(observed.sum(), rel=1e-6)
    # One level for every row: nothing to tilt, the scale alone.
    assert fit_visits_calibration(expected, rng.poisson(2.0 * expected), np.ones_like(level)) == pytest.approx((2.0, 1.0), rel=0.01)
    # A slope beyond its bounds is kept at the bound, with the scale refitted there.
    steep = rng.poisson(expected * level**2.0)
    scale, slope = fit_visits_calibration(expected, steep, level)
    assert slope == MAX_VISITS_SLOPE
    assert (expected * scale * level ** (slope - 1.0)).sum() == pytest.approx(steep.sum(), rel=1e-6)
    with pytest.raises(ValueError, match="differ in length"):
        fit_visits_calibration(expected, observed[:-1], level)


def test_the_visits_calibration_factor_is_the_scale_times_a_power_of_one_windows_visits() -> None:
    k = SHAPE.n_components
    raw = np.array([[*np.log([0.3, 0.1, 0.05]), *[decay.raw_for_tau(t) for t in (2.0, 9.0, 40.0)], np.log(0.02)]] * 2, np.float32)
    raw[1, :k] -= 2.0  # a quieter user
    params = decay.head_params(tf.constant(raw), k)
    week = decay.cumulative_rate(params, tf.constant([[7.0]]), k).numpy()[:, 0]
    factor = decay.visits_calibration_factor(params, k, 0.9, 0.8, 7.0).numpy()
    np.testing.assert_allclose(factor, 0.9 * week ** (0.8 - 1.0), rtol=1e-6)
    assert factor[1] > factor[0]  # a slope below 1 brings the busier user down more
    np.testing.assert_allclose(decay.visits_calibration_factor(params, k, 0.9, 1.0, 7.0).numpy(), [0.9, 0.9])


def test_count_rows_are_weighted_by_their_recent_sessions_only() -> None:
    # Sessions per window over 6 windows; only the last 4 count: means 0, 2 and 10.
    sessions = tf.constant([[9.0, 9.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0, 2.0, 2.0], [0.0, 0.0, 10.0, 10.0, 10.0, 10.0]])
    np.testing.assert_allclose(decay.count_row_weights(sessions).numpy(), [1.0, 1 / 3, 1 / 11], rtol=1e-6)


def test_loss_falls_and_the_model_learns(tmp_path: Path) -> None:
    inputs, targets = _toy(3000)
    val_inputs, val_targets = _toy(1000, seed=1)
    model = _model(inputs)
    before = model.evaluate(as_dataset(inputs, targets, 256, None), steps=12, return_dict=True, verbose=0)["loss"]
    result = fit(
        model,
        as_dataset(inputs, targets, 128),
        epochs=4,
        steps_per_epoch=steps_for(3000, 128),
        checkpoint_dir=str(tmp_path),
        val_sample=(val_inputs, val_targets),
    )
    after = model.evaluate(as_dataset(inputs, targets, 256, None), steps=12, return_dict=True, verbose=0)["loss"]
    assert after < before
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.history["val_auc_7d"][-1] > 0.8


def test_mixed_precision_computes_the_layers_in_bfloat16_and_the_decay_in_float32(tmp_path: Path) -> None:
    """train.mixed_precision (conf/cluster-gpu.yaml, bench/gpu_check.py) trains, and what it
    serves is float32 and finite."""
    inputs, targets = _toy_with_counts(256, seed=5)
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _model(inputs)
        result = fit(model, as_dataset(inputs, targets, 64), epochs=1, steps_per_epoch=4, checkpoint_dir=str(tmp_path))
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert model.encoder.compute_dtype == "bfloat16" and np.isfinite(result.history["loss"]).all()
    curves = model.predict_curves(inputs, tf.constant([7.0, 30.0]))
    for name in ("p_active", "expected_visits", "decay_params"):
        assert curves[name].dtype == tf.float32 and np.isfinite(curves[name].numpy()).all()


def test_floor_pooling_adds_the_spread_of_the_users_log_floors_to_the_loss() -> None:
    inputs, targets = _toy_with_counts(64, seed=4)
    norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
    free = InterestDecayModel(SHAPE, norm)
    free.build_with_zeros()
    kernel = free.head_out.kernel
    kernel.assign(tf.random.stateless_normal(kernel.shape, seed=(4, 0), stddev=0.3))  # floors that differ by user
    out = free(inputs)
    spread = float(np.var(out["params"][:, 2 * SHAPE.n_components].numpy()))
    assert spread > 0.01
    pooled = InterestDecayModel(SHAPE, norm, LossWeights(floor_pooling=3.0))
    loss_free, loss_pooled = free.loss_parts(out, inputs, targets)["loss"], pooled.loss_parts(out, inputs, targets)["loss"]
    assert float(loss_pooled) == pytest.approx(float(loss_free) + 3.0 * spread, rel=1e-5)


def test_early_stopping_watches_the_decay_likelihood_counts_included(tmp_path: Path) -> None:
    inputs, targets = _toy_with_counts(512, seed=2)
    model = InterestDecayModel(SHAPE, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]), LossWeights(count=2.0))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-2))
    model.kl_weight.assign(0.01)
    parts = model.loss_parts(model(inputs), inputs, targets)
    assert float(parts["decay_nll"]) == pytest.approx(float(parts["survival_nll"] + 2.0 * parts["count_nll"]), rel=1e-6)
    rest = 0.2 * parts["step_bce"] + 0.05 * parts["recon"] + 0.01 * parts["kl"]
    assert float(parts["loss"]) == pytest.approx(float(parts["decay_nll"] + rest), rel=1e-6)

    val = as_dataset(*_toy_with_counts(256, seed=3), 128, None)
    result = fit(
        model, as_dataset(inputs, targets, 64), epochs=8, steps_per_epoch=8, checkpoint_dir=str(tmp_path),
        validation_data=val, validation_steps=2, patience=1,
    )  # fmt: skip
    watched = result.history["val_decay_nll"]
    # With patience 1 the run ends at the first epoch whose decay likelihood did not improve.
    improved = [later < min(watched[:i]) for i, later in enumerate(watched) if i > 0]
    assert result.stopped_early == (False in improved)
    if result.stopped_early:
        assert improved.index(False) == len(improved) - 1


def _toy_with_counts(n: int, seed: int) -> tuple[dict, dict]:
    inputs, targets = _toy(n, seed)
    targets["future_sessions"] = np.random.default_rng(seed).poisson(1.5, size=(n, 3)).astype(np.float32)
    return inputs, targets


def _crash_after(crash_epoch: int):  # noqa: ANN202
    """An epoch listener (it runs after the chief's checkpoint) that fails at ``crash_epoch``."""

    def listener(epoch: int, logs: dict) -> None:
        if epoch == crash_epoch:
            raise RuntimeError("worker lost")

    return listener


class _WeightsAtEpochEnd(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seen.append([w.numpy().copy() for w in self.model.trainable_weights])


def test_weight_averaging_ends_with_the_mean_and_survives_a_crash(tmp_path: Path) -> None:
    inputs, targets = _toy(600)
    before_crash, after_crash = _WeightsAtEpochEnd(), _WeightsAtEpochEnd()

    with pytest.raises(RuntimeError, match="worker lost"):
        fit(
            _model(inputs),
            as_dataset(inputs, targets, 64),
            epochs=4,
            steps_per_epoch=5,
            checkpoint_dir=str(tmp_path),
            first_callbacks=[before_crash],
            epoch_listeners=[_crash_after(3)],
            average_from_epoch=2,
        )
    model = _model(inputs)
    resumed = fit(
        model,
        as_dataset(inputs, targets, 64),
        epochs=4,
        steps_per_epoch=5,
        checkpoint_dir=str(tmp_path),
        first_callbacks=[after_crash],
        val_sample=(inputs, targets),
        average_from_epoch=2,
    )
    # Resumed after the crash at epoch 3: one more epoch, and the average carried over.
    assert (resumed.first_epoch, resumed.last_epoch, resumed.averaged_epochs) == (3, 4, 3)
    assert len(resumed.history["loss"]) == 1
    epochs_2_to_4 = [*before_crash.seen[1:], *after_crash.seen]
    assert len(epochs_2_to_4) == 3
    for final, *at_epoch_end in zip(model.trainable_weights, *epochs_2_to_4, strict=False):
        np.testing.assert_allclose(final.numpy(), np.mean(at_epoch_end, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.trainable_weights[0].numpy(), after_crash.seen[-1][0])  # not simply the last epoch
    assert set(resumed.final_metrics) == {"val_auc_7d", "val_auc_14d", "val_auc_30d"}


def test_one_averaged_epoch_is_exactly_that_epoch(tmp_path: Path) -> None:
    """Bit for bit, whatever the weights were before: Horovod ranks start from different ones."""
    inputs, targets = _toy(300)
    seen = _WeightsAtEpochEnd()
    model = _model(inputs)
    fit(
        model,
        as_dataset(inputs, targets, 64),
        epochs=1,
        steps_per_epoch=3,
        checkpoint_dir=str(tmp_path),
        first_callbacks=[seen],
        average_from_epoch=1,
    )
    for final, at_epoch_end in zip(model.trainable_weights, seen.seen[0], strict=False):
        np.testing.assert_array_equal(final.numpy(), at_epoch_end)


def _fading_users(n: int, seed: int = 0) -> tuple[dict, dict, np.ndarray]:
    """Users whose session rate fades as 3 exp(-t / tau) from their first session, tau known:
    (inputs, targets, tau) at an as-of date 84 days (12 weekly windows) after the start."""
    rng = np.random.default_rng(seed)
    tau = 10 * np.exp(0.8 * rng.standard_normal(n))
    first = rng.uniform(0, 20, n)
    x = np.zeros((n, 12, 12), np.float32)
    mask = np.zeros((n, 12), np.float32)
    static = np.zeros((n, 5), np.float32)
    future = np.zeros((n, 4), np.float32)
    days_to_next = np.zeros(n, np.float32)
    for u in range(n):
        count = rng.poisson(3 * tau[u] * (1 - np.exp(-(112 - first[u]) / tau[u])))
        later = first[u] - tau[u] * np.log(1 - rng.random(count) * (1 - np.exp(-(112 - first[u]) / tau[u])))
        times = np.sort(np.concatenate([[first[u]], later]))
        past, ahead = times[times < 84], times[times >= 84]
        window = (past // 7).astype(int)
        np.add.at(x[u, :, 0], window, 1.0)
        x[u, :, 1] = np.minimum(x[u, :, 0], 7)
        mask[u, int(first[u] // 7) :] = 1
        static[u, :3] = [84 - first[u], 84 - past[-1], len(past)]
        future[u] = np.histogram(ahead, bins=[84, 91, 98, 105, 112])[0]
        days_to_next[u] = ahead[0] - 84 if len(ahead) else 28.0
    censored = (future.sum(axis=1) == 0).astype(np.float32)
    targets = {"days_to_next": days_to_next, "censored": censored, "future_sessions": future}
    for h in (7, 14, 30):
        targets[f"active_{h}d"] = np.where(censored > 0, 0.0 if h <= 28 else -1.0, (days_to_next < h).astype(np.float32))
    return {"x": x, "mask": mask, "static": static}, targets, tau


def test_the_decay_head_learns_each_users_own_time_constant(tmp_path: Path) -> None:
    """Users who share one process but for their time constant: the decay head must rank them
    by it, from their windows alone."""
    from scipy.stats import spearmanr

    inputs, targets, tau = _fading_users(2500)
    shape = ModelShape(
        n_windows=12, n_window_features=12, n_static=5, window_days=7, horizons_days=(7, 14, 30), hidden_units=16, use_vae=False
    )
    model = InterestDecayModel(shape, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-3))
    fit(model, as_dataset(inputs, targets, 128), epochs=6, steps_per_epoch=steps_for(2500, 128), checkpoint_dir=str(tmp_path))
    test_inputs, _, test_tau = _fading_users(800, seed=1)
    params = model(test_inputs)["params"]
    predicted = decay.interest_half_life_days(params, shape.n_components).numpy()
    assert spearmanr(predicted, test_tau).statistic > 0.75


def test_members_are_served_as_the_mean_of_their_curves(tmp_path: Path) -> None:
    """The SavedModel round trip, without custom code, of the model train.members saves: each
    member trains from its own seed into its own checkpoints, and the saved model's decay curve is
    the mean of the members' curves, in closed form (N x K components), so P(active), expected
    visits and the half-life all read the mean; with a gamma frailty (train.frailty), P(active)
    and the curve read the members' mean frailty a as 1 - (1 + a Lambda)^(-1/a)."""
    train, val = _toy_with_counts(256, seed=0), _toy_with_counts(128, seed=1)
    norm = fit_normalisation(train[0]["x"], train[0]["mask"], train[0]["static"])
    plan = RunPlan(
        shape=SHAPE,
        feature_spec={"window_features": ["sessions"]},
        loss_weights=LossWeights(frailty="gamma"),
        normalisation=norm,
        epochs=2,
        batch_size=64,
        learning_rate=5e-3,
        patience=3,
        checkpoint_dir=str(tmp_path / "checkpoints"),
        model_dir=str(tmp_path / "model"),
        tensorboard_dir="",
        members=2,
    )
    result = train_in_process(plan, train, val, val)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["member-0", "member-1"]
    assert len(result["fit"]["member_metrics"]) == 2 and "val_auc_7d" in result["fit"]["final_metrics"]  # measured on the mean
    members = []
    for member in (0, 1):  # each member as its last checkpoint left it
        model = build_model(plan, plan.learning_rate)
        model.build_with_zeros()
        tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(member_checkpoints(plan, member))).expect_partial()
        members.append(model)
    inputs = {k: v[:64] for k, v in train[0].items()}
    each = [member.predict_curves(inputs, tf.constant(DECAY_CURVE_DAYS, tf.float32)) for member in members]
    assert np.abs(each[0]["expected_visits"] - each[1]["expected_visits"]).max() > 1e-3  # two seeds, two models
    # Saved with the visits scale from the validation rows: it multiplies the expected visits and
    # the baseline in visits, as served and as computed from the decay parameters, and leaves
    # P(active) alone.
    scorer = Scorer(tmp_path / "model")
    scale, slope = scorer.visits_scale, scorer.visits_slope
    assert (scale, slope) == pytest.approx((result["visits_scale"], result["visits_slope"])) and abs(scale - 1.0) > 1e-3
    scores = scorer(inputs)
    assert scorer.feature_spec == {"window_features": ["sessions"]}
    # Trained: the users' chances differ (at 7 days; the counts of this toy shop put every
    # user's 30-day chance near 0.93).
    assert np.std(scores["p_active"][:, 0]) > 0.01
    assert scores["return_median_days"].shape == scores["interest_half_life_days"].shape == (64,)
    at_median = decay.survival(scores["decay_params"], scores["return_median_days"][:, None], 2 * SHAPE.n_components, scorer.frailty)
    np.testing.assert_allclose(at_median.numpy()[:, 0], 0.5, atol=1e-3)
    k = 2 * SHAPE.n_components
    assert scorer.metadata["model_shape"]["n_components"] == k
    frailty = np.mean([member.frailty().numpy() for member in members])
    assert scorer.frailty == pytest.approx(frailty, rel=1e-6) and abs(frailty - 0.1) > 1e-4  # learned, from its start
    mean_visits = np.mean([out["expected_visits"].numpy() for out in each], axis=0)
    # The calibration's factor per user: scale x (the user's mean visits in one window) ^ (slope - 1).
    week = np.mean([decay.cumulative_rate(out["decay_params"], tf.constant([[7.0]]), SHAPE.n_components).numpy() for out in each], axis=0)
    factor = scale * week ** (slope - 1.0)
    np.testing.assert_allclose(scores["expected_visits"], factor * mean_visits, rtol=1e-4)
    np.testing.assert_allclose(
        scorer.expected_visits_from(scores["decay_params"], list(SHAPE.horizons_days)), scores["expected_visits"], rtol=1e-4
    )
    np.testing.assert_allclose(scores["p_active"], 1.0 - (1.0 + frailty * mean_visits) ** (-1.0 / frailty), rtol=1e-4)
    params = [out["decay_params"] for out in each]
    curve_days = tf.constant([DECAY_CURVE_DAYS], tf.float32)
    mean_lambda = np.mean([decay.cumulative_rate(p, curve_days, SHAPE.n_components).numpy() for p in params], axis=0)
    np.testing.assert_allclose(scores["decay_curve"], (1.0 + frailty * mean_lambda) ** (-1.0 / frailty), rtol=1e-4)
    mean_params = decay.average_curves(params, SHAPE.n_components)
    np.testing.assert_allclose(scores["decay_params"], mean_params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores["baseline_visits_per_30d"], factor[:, 0] * decay.baseline_visits(mean_params, k).numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["interest_half_life_days"], decay.interest_half_life_days(mean_params, k), rtol=1e-4)
    horizons = list(SHAPE.horizons_days)
    np.testing.assert_allclose(scorer.expected_visits_from(scores["decay_params"], horizons), scores["expected_visits"], rtol=1e-5)
    np.testing.assert_allclose(scorer.p_active_from(scores["decay_params"], horizons), scores["p_active"], rtol=1e-5)
    days = tf.constant([[0.0, 3.0, 30.0]])
    np.testing.assert_allclose(
        decay.rate(mean_params, days, k), np.mean([decay.rate(p, days, SHAPE.n_components) for p in params], axis=0), rtol=1e-5
    )
    # Two equal members average to the same curve: the same half-life and interest now.
    twice = decay.average_curves([params[0], params[0]], SHAPE.n_components)
    np.testing.assert_allclose(
        decay.interest_half_life_days(twice, k), decay.interest_half_life_days(params[0], SHAPE.n_components), rtol=1e-4
    )
    np.testing.assert_allclose(decay.interest_now(twice, k), decay.interest_now(params[0], SHAPE.n_components), rtol=1e-5)
