from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import gamma, multinomial, nbinom, poisson

from interest_decay.model import decay
from interest_decay.model.distributed import RunPlan, build_model, member_checkpoints, train_in_process
from interest_decay.model.export import decay_curve_days, save_model
from interest_decay.model.network import InterestDecayModel, LossWeights, ModelShape, fit_normalisation
from interest_decay.model.scorer import Scorer
from interest_decay.model.training import as_dataset, fit, steps_for, validation_visits

SHAPE = ModelShape(
    n_windows=6, n_window_features=12, n_static=5, window_days=7, horizons_days=(7, 14, 30), hidden_units=16, draws=16, future_windows=3
)


def _params(
    p_alive: float, baseline: float, excitation: float, tau: float, branching: float, dropout: float, frailty_shape: float | None = None
) -> tf.Tensor:
    """One user's (one draw's) parameter vector, [1, 7], from the quantities it stands for
    (``frailty_shape`` None: no frailty)."""
    log_shape = decay.NO_FRAILTY_LOG_SHAPE if frailty_shape is None else np.log(frailty_shape)
    return tf.constant(
        [[np.log(p_alive / (1 - p_alive)), np.log(baseline), np.log(excitation), tau, branching, np.log(dropout), log_shape]], tf.float32
    )


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


def _model(inputs: dict, use_vae: bool = True, frailty: bool = False) -> InterestDecayModel:
    shape = ModelShape(**{**SHAPE.to_dict(), "use_vae": use_vae, "frailty": frailty, "horizons_days": SHAPE.horizons_days})
    model = InterestDecayModel(shape, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-3))
    return model


@pytest.mark.parametrize(("use_vae", "frailty"), [(True, False), (False, False), (False, True)])
def test_every_score_has_its_shape_and_its_interval_holds_it(use_vae: bool, frailty: bool) -> None:
    inputs, _ = _toy(40)
    model = _model(inputs, use_vae, frailty)
    model.build_with_zeros()
    out = model.predict_curves(inputs, [1.0, 7.0, 90.0])
    draws = SHAPE.draws if use_vae else 1
    assert out["decay_params"].shape == (40, draws * decay.N_PARAMS) and out["decay_curve"].shape == (40, 3)
    for name in ("p_active", "expected_visits"):
        assert out[name].shape == (40, 3)
        assert (out[f"{name}_low"] <= out[name]).numpy().all() and (out[name] <= out[f"{name}_high"]).numpy().all()
    low, point, high = (out[f"interest_half_life_days{b}"].numpy() for b in ("_low", "", "_high"))
    assert (low <= point).all() and (point <= high).all()
    if not use_vae and not frailty:  # one draw: nothing to be unsure about
        np.testing.assert_array_equal(out["p_active_low"], out["p_active_high"])
    if frailty:  # one draw, but an uncertain rate: the interval is the frailty's
        assert (out["expected_visits_high"] > out["expected_visits_low"]).numpy().all()
        np.testing.assert_allclose(low, high, rtol=1e-3)  # G scales the whole rate: the half-life does not depend on it
    assert ("z" in out) == use_vae
    for name in ("p_alive", "interest_now", "dropout_share"):
        assert ((0 <= out[name]) & (out[name] <= 1)).numpy().all()


def test_the_mixture_gives_p_active_and_the_visits_from_one_distribution() -> None:
    """On hand-set parameters whose answers are known in closed form."""
    days = tf.constant([1.0, 7.0, 30.0, 273.0])
    # No excitation, no leaving: a Poisson user there with probability 0.6.
    plain = _params(0.6, 0.05, 1e-9, 10.0, 1e-6, 1e-5)
    visits = decay.expected_visits(plain, days).numpy()[0]
    np.testing.assert_allclose(visits, 0.6 * 0.05 * days.numpy(), rtol=2e-3)
    np.testing.assert_allclose(decay.p_active(plain, days).numpy()[0], 0.6 * (1 - np.exp(-visits / 0.6)), rtol=2e-3)
    # Leaving at rate 0.02 a day: no visit until d means leaving first or no visit at all.
    leaving = _params(0.999999, 0.05, 1e-9, 10.0, 1e-6, 0.02)
    rate = 0.05 + 0.02
    away = np.exp(-rate * days.numpy()) + 0.02 / rate * (1 - np.exp(-rate * days.numpy()))
    np.testing.assert_allclose(decay.survival_there(leaving, days).numpy()[0], away, rtol=2e-3)
    np.testing.assert_allclose(decay.expected_visits(leaving, days).numpy()[0], 0.05 * (1 - np.exp(-0.02 * days.numpy())) / 0.02, rtol=1e-3)
    # Self-exciting: the expected rate solves m' = -(m - mu) / tau + alpha m from m(0) = mu + y0.
    mu, y0, tau, n = 0.1, 0.5, 5.0, 0.6
    grid = np.linspace(0, 273, 273_001)
    step = grid[1] - grid[0]
    excess, rates = y0, []
    for _ in grid:  # Euler on the excitation: dY = (-Y / tau + alpha (mu + Y)) dt
        rates.append(mu + excess)
        excess += (-excess / tau + n / tau * (mu + excess)) * step
    cumulative = np.concatenate([[0], np.cumsum((np.array(rates[1:]) + np.array(rates[:-1])) / 2 * step)])
    exciting = _params(0.999999, mu, y0, tau, n, 1e-5)
    np.testing.assert_allclose(decay.expected_visits(exciting, days).numpy()[0], np.interp(days.numpy(), grid, cumulative), rtol=2e-3)
    # The first return does not see the excitation future visits would bring.
    first = np.exp(-(mu * days.numpy() + y0 * tau * (1 - np.exp(-days.numpy() / tau))))
    np.testing.assert_allclose(decay.survival_there(exciting, days).numpy()[0], first, rtol=2e-3, atol=1e-4)  # (leaving at 1e-5 a day)


def test_the_decay_curve_never_rises_and_starts_at_one() -> None:
    params = tf.concat([_params(0.7, 0.02, 0.5, 4.0, 0.5, 0.01), _params(0.2, 1.0, 3.0, 60.0, 0.1, 0.001)], axis=0)
    days = tf.constant(np.concatenate([[0.0], np.geomspace(0.1, 3650, 60)]), tf.float32)
    away = 1.0 - decay.p_active(params, days).numpy()
    np.testing.assert_allclose(away[:, 0], 1.0, atol=1e-6)
    assert (np.diff(away, axis=1) <= 1e-5).all()  # (each day has its own quadrature grid: float noise)
    # In the end, still away: the users who had left, and those there who leave before visiting.
    from scipy.integrate import quad

    for user, (p_there, baseline, excitation, tau, dropout) in enumerate([(0.7, 0.02, 0.5, 4.0, 0.01), (0.2, 1.0, 3.0, 60.0, 0.001)]):
        before = lambda t, b=baseline, y=excitation, k=tau: b * t + y * k * (1 - np.exp(-t / k))  # noqa: E731
        leave_first = quad(lambda t, d=dropout, r=before: d * np.exp(-d * t - r(t)), 0, np.inf, limit=200)[0]
        assert away[user, -1] == pytest.approx(1 - p_there + p_there * leave_first, abs=2e-3)


def test_the_head_keeps_its_parameters_in_bounds() -> None:
    raw = tf.constant([[[50.0, 50.0, 50.0, 50.0, 50.0, 50.0]], [[-50.0, -50.0, -50.0, -50.0, -50.0, -50.0]]])
    params = decay.params_from_raw(raw, tf.zeros([2, 3]), tf.constant([17.5, 10.5, 3.5]))
    p_alive, baseline, excitation, tau, branching, dropout = (v.numpy() for v in decay.split(params))
    assert (decay.MIN_TAU_DAYS * 0.999 <= tau).all() and (tau <= decay.MAX_TAU_DAYS * 1.001).all()
    assert (branching < decay.MAX_BRANCHING + 1e-6).all() and (branching >= 0).all()
    assert (dropout <= decay.MAX_DROPOUT * 1.001).all() and (dropout >= decay.MIN_DROPOUT * 0.999).all()
    assert (baseline <= np.exp(decay.MAX_LOG_RATE) * 1.001).all() and np.isfinite(excitation).all()


def test_past_visits_excite_by_their_age() -> None:
    """Each window's visits leave alpha exp(-age / tau) of excitation each, alpha = branching / tau."""
    sessions = tf.constant([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    ages = tf.constant([17.5, 10.5, 3.5])
    tau = tf.constant([[5.0], [5.0]])
    np.testing.assert_allclose(decay.past_excitation(sessions, ages, tau).numpy()[:, 0], [2 * np.exp(-3.5) + np.exp(-0.7), 0.0], rtol=1e-6)
    raw = tf.constant([[[0.0, 0.0, -30.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, -30.0, 0.0, 0.0, 0.0]]])
    excitation = decay.split(decay.params_from_raw(raw, sessions, ages))[2].numpy()[:, 0]
    assert excitation[0] > 1e3 * excitation[1]  # only the user with past visits is excited


def test_the_half_lives_and_the_return_median_solve_their_curves() -> None:
    # The interest a visit brings halves in tau ln 2, whatever else the user does.
    params = _params(0.5, 0.01, 0.5, 12.0, 0.3, 0.05)[:, None, :]
    assert float(decay.interest_half_life_days(params)[0]) == pytest.approx(12.0 * np.log(2), rel=0.01)
    # There for sure and never leaving, no baseline: the visit rate in silence is the excitation's.
    certain = decay.silence_curves(_params(0.999999, 1e-6, 0.5, 12.0, 0.3, 1e-5)[:, None, :])
    silence = decay.silence_half_life_days(certain)
    assert float(silence[0]) == pytest.approx(12.0 * np.log(2), rel=0.01)
    assert float(decay.dropout_share(certain, silence)[0]) == pytest.approx(0.0, abs=0.01)
    # Maybe gone: silence makes leaving likelier too, so the rate halves sooner, and the dropout
    # explains part of it. Checked against the rate computed on a fine grid.
    curves = decay.silence_curves(params)
    silence = float(decay.silence_half_life_days(curves)[0])
    flat = params[:, 0, :]
    p_there, baseline, excitation, tau, _, dropout = (float(v[0]) for v in decay.split(flat))
    days = np.geomspace(0.01, 3650, 4000)
    undropped = np.exp(-dropout * days - decay.before_next_visit(flat, tf.constant(days, tf.float32)).numpy()[0])
    silent = 1 - p_there + p_there * decay.survival_there(flat, tf.constant(days, tf.float32)).numpy()[0]
    rate = p_there * undropped * (baseline + excitation * np.exp(-days / tau)) / silent
    assert silence == pytest.approx(np.interp(-rate[0] / 2, -rate, days), rel=0.02)
    assert silence < 12.0 * np.log(2) and 0.05 < float(decay.dropout_share(curves, decay.silence_half_life_days(curves))[0]) < 1.0
    assert float(decay.return_median_days(curves)[0]) == decay.CAP_DAYS  # half of them never come back
    likely = _params(0.9, 0.01, 0.5, 12.0, 0.3, 0.005)
    median = float(decay.return_median_days(decay.silence_curves(likely[:, None, :]))[0])
    assert median < decay.CAP_DAYS and float(1.0 - decay.p_active(likely, tf.constant([median]))[0, 0]) == pytest.approx(0.5, abs=0.005)


def test_the_likelihoods_by_hand() -> None:
    params = tf.concat([_params(0.7, 0.1, 0.4, 6.0, 0.3, 0.01), _params(0.4, 0.05, 0.1, 20.0, 0.2, 0.002)], axis=0)
    days, censored = tf.constant([3.0, 14.0]), tf.constant([0.0, 1.0])
    nll = decay.survival_nll(params, days, censored).numpy()
    flat = [float(v[0]) for v in decay.split(params[:1])]
    p_there, baseline, excitation, tau, _, dropout = flat
    rate = baseline + excitation * np.exp(-3.0 / tau)
    before = baseline * 3.0 + excitation * tau * (1 - np.exp(-3.0 / tau))
    assert nll[0] == pytest.approx(-np.log(p_there * np.exp(-dropout * 3.0 - before) * rate), rel=1e-4)
    stay = float(decay.survival_there(params[1:], tf.constant([14.0]))[0, 0])
    assert nll[1] == pytest.approx(-np.log(1 - 0.4 + 0.4 * stay), rel=1e-4)
    # Window counts: a silent user may have left; one with visits was there.
    counts = tf.constant([[0.0, 0.0, -1.0], [2.0, 0.0, 1.0]])
    expected = decay.window_visits_there(params, 3, 7.0).numpy()
    got = decay.window_count_nll(params, counts, 7.0).numpy()
    assert got[0] == pytest.approx(-np.log(0.3 + 0.7 * np.exp(-expected[0, 0] - expected[0, 1])), rel=1e-4)
    log_there = sum(
        np.log(poisson.pmf(n, m)) + np.log(float(np.prod(range(1, int(n) + 1)))) for n, m in zip([2, 0, 1], expected[1], strict=True)
    )
    assert got[1] == pytest.approx(-(np.log(0.4) + log_there), rel=1e-4)
    # Negative binomial counts for a user still there: scipy's, without log n!.
    dispersion = tf.constant(0.5)
    nb = decay.window_count_nll(params[1:], counts[1:], 7.0, dispersion).numpy()[0]
    r = 1 / 0.5
    log_nb = sum(
        nbinom.logpmf(n, r, r / (r + m)) + np.log(float(np.prod(range(1, int(n) + 1)))) for n, m in zip([2, 0, 1], expected[1], strict=True)
    )
    assert nb == pytest.approx(-(np.log(0.4) + log_nb), rel=1e-4)


def test_count_rows_are_weighted_by_their_recent_sessions_only() -> None:
    # Sessions per window over 6 windows; only the last 4 count: means 0, 2 and 10.
    sessions = tf.constant([[9.0, 9.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0, 2.0, 2.0], [0.0, 0.0, 10.0, 10.0, 10.0, 10.0]])
    np.testing.assert_allclose(decay.count_row_weights(sessions).numpy(), [1.0, 1 / 3, 1 / 11], rtol=1e-6)


def test_scoring_draws_the_same_every_time_and_training_draws_anew() -> None:
    """Scoring averages over fixed draws of each user's posterior (the same inputs, the same
    scores, in batch and in the stream alike); training draws anew at every step."""
    inputs, _ = _toy(64, seed=7)
    model = _model(inputs)
    model.build_with_zeros()
    for layer in (model.head_hidden, model.head_out, model.posterior):  # a model whose draws differ
        for weight in layer.trainable_weights:
            weight.assign(tf.random.stateless_normal(weight.shape, seed=(3, 1), stddev=0.3))
    days = [7.0, 30.0]
    first, again = model.predict_curves(inputs, days), model.predict_curves(inputs, days)
    assert float(tf.reduce_max(first["p_active_high"] - first["p_active_low"])) > 1e-3
    for name in ("p_active", "expected_visits", "p_active_low", "interest_half_life_days"):
        np.testing.assert_array_equal(first[name].numpy(), again[name].numpy())
    one, two = model(inputs, training=True)["params"], model(inputs, training=True)["params"]
    assert one.shape == (64, 8, decay.N_PARAMS) and not np.allclose(one.numpy(), two.numpy())


def test_the_frailty_keeps_expected_visits_and_gives_gamma_poisson_in_closed_form() -> None:
    """A hand-set user (there with p, a Poisson rate lambda, no excitation): with the rate times
    G ~ Gamma(k, k), k = shape + repeat sessions, P(no visit within d | there) is
    (1 + lambda d / k)^-k, the expected visits stay p lambda d, the interval is the value at G's
    10th and 90th percentiles (fewer past visits, a wider one), and the visits in the next
    windows are negative binomial jointly."""
    p, rate, shape = 0.8, 0.1, 1.5
    sessions = np.array([1.0, 3.0, 51.0], np.float32)  # repeat sessions 0, 2, 50: k = 1.5, 3.5, 51.5
    k = shape + sessions - 1
    plain = tf.concat([_params(p, rate, 1e-12, 1.0, 1e-6, 1e-5)] * 3, axis=0)[:, None, :]
    with_frailty = decay.with_frailty(plain, tf.constant(shape), tf.constant(sessions))
    np.testing.assert_allclose(decay.frailty_shape(with_frailty).numpy()[:, 0], k, rtol=1e-5)
    days = np.array([7.0, 30.0, 91.0], np.float32)
    visits = decay.expected_visits(with_frailty, tf.constant(days)).numpy()[:, 0]
    np.testing.assert_allclose(visits, decay.expected_visits(plain, tf.constant(days)).numpy()[:, 0], rtol=1e-6)
    closed_form = p * (1.0 - (1.0 + rate * days[None, :] / k[:, None]) ** -k[:, None])
    # Within what the dropout of 1e-5 a day (the least there is) takes from 91 days.
    np.testing.assert_allclose(decay.p_active_on(with_frailty, list(days)).numpy()[:, 0], closed_form, atol=5e-4)
    bounds = [decay.expected_visits(decay.at_frailty_quantile(with_frailty, q), tf.constant(days)).numpy()[:, 0] for q in decay.INTERVAL]
    for bound, q in zip(bounds, decay.INTERVAL, strict=True):
        np.testing.assert_allclose(bound, visits * (gamma.ppf(q, k) / k)[:, None], rtol=2e-3)
    width = (bounds[1] - bounds[0])[:, 1] / visits[:, 1]
    assert width[0] > width[1] > width[2] > 0  # the less history, the wider
    np.testing.assert_allclose(decay.at_frailty_quantile(plain, 0.1), plain)  # no frailty, no spread
    # Two weekly windows sharing one G: the total is negative binomial, split as a multinomial.
    counts = np.array([[0.0, 0.0], [3.0, 1.0], [2.0, -1.0]], np.float32)
    log_p = -decay.window_count_nll(with_frailty[:, 0], tf.constant(counts), 7.0).numpy()
    for i, row in enumerate(counts):
        n = row[row >= 0]
        mean = np.full(len(n), rate * 7.0)
        there = nbinom.pmf(n.sum(), k[i], k[i] / (k[i] + mean.sum())) * multinomial.pmf(n, n.sum(), mean / mean.sum())
        likelihood = p * there + (1 - p) * (n.sum() == 0)
        # The likelihood leaves log n! out.
        assert log_p[i] - sum(math.lgamma(c + 1) for c in n) == pytest.approx(np.log(likelihood), abs=1e-3)


def test_a_saved_model_with_a_frailty_serves_its_intervals_to_every_reader(tmp_path: Path) -> None:
    """Through the SavedModel: the light P(active) signature and the decay parameters give back
    the scores, and the scorer's interval of expected visits is the scores' own."""
    inputs, _ = _toy(64)
    norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
    model = InterestDecayModel(ModelShape(**{**SHAPE.to_dict(), "use_vae": False, "frailty": True}), norm)
    model.build_with_zeros()
    save_model(model, tmp_path / "model", norm, {"horizons_days": list(SHAPE.horizons_days)})
    scorer = Scorer(tmp_path / "model")
    assert scorer.metadata["model_shape"]["frailty"] is True
    scores = scorer(inputs)
    horizons = list(SHAPE.horizons_days)
    np.testing.assert_allclose(scorer.p_active(inputs), scores["p_active"], rtol=1e-5)
    np.testing.assert_allclose(scorer.p_active_from(scores["decay_params"], horizons), scores["p_active"], rtol=1e-4)
    low, high = scorer.expected_visits_interval_from(scores["decay_params"], horizons)
    np.testing.assert_allclose(low, scores["expected_visits_low"], rtol=1e-4)
    np.testing.assert_allclose(high, scores["expected_visits_high"], rtol=1e-4)
    assert (high > low).all() and (scores["p_active_high"] > scores["p_active_low"]).all()


@pytest.mark.parametrize("true_shape", [0.5, 2.0, 8.0])
def test_the_count_likelihood_is_highest_at_the_users_true_spread(true_shape: float) -> None:
    """Users whose rates are Gamma(true_shape) around one mean, and a draw that knows only the
    mean: of the shapes tried, the true one makes their weekly visits the most likely; a draw
    that knows each user's own rate needs no frailty."""
    rng = np.random.default_rng(3)
    n, mean = 4000, 0.2
    rates = rng.gamma(true_shape, mean / true_shape, n)
    counts = tf.constant(rng.poisson(rates[:, None] * 7.0, (n, 4)), tf.float32)
    one_visit = tf.ones(n)  # no repeat sessions: k is the shape itself
    only_the_mean = tf.concat([_params(0.999999, mean, 1e-12, 1.0, 1e-6, 1e-5)] * n, axis=0)[:, None, :]

    def log_likelihood(params: tf.Tensor, shape: float | None) -> float:
        with_shape = params if shape is None else decay.with_frailty(params, tf.constant(shape), one_visit)
        return -float(tf.reduce_mean(decay.window_count_nll(with_shape[:, 0], counts, 7.0)))

    shapes = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    scores = {shape: log_likelihood(only_the_mean, shape) for shape in shapes}
    assert max(scores, key=scores.get) == true_shape, scores
    assert scores[true_shape] > log_likelihood(only_the_mean, None)
    own_rate = tf.concat(
        [only_the_mean[..., :1], tf.math.log(tf.constant(rates, tf.float32))[:, None, None], only_the_mean[..., 2:]], axis=-1
    )
    assert log_likelihood(own_rate, None) > log_likelihood(own_rate, 4.0) > log_likelihood(own_rate, 0.5)


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
    curves = model.predict_curves(inputs, [7.0, 30.0])
    for name in ("p_active", "expected_visits", "decay_params", "interest_half_life_days"):
        assert curves[name].dtype == tf.float32 and np.isfinite(curves[name].numpy()).all()


def test_baseline_pooling_adds_the_spread_of_the_users_log_baselines_to_the_loss() -> None:
    inputs, targets = _toy_with_counts(64, seed=4)
    norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
    free = InterestDecayModel(SHAPE, norm)
    free.build_with_zeros()
    kernel = free.head_out.kernel
    kernel.assign(tf.random.stateless_normal(kernel.shape, seed=(4, 0), stddev=0.3))  # baselines that differ by user
    out = free(inputs, training=True)
    spread = float(np.var(out["params"][..., 1].numpy()))
    assert spread > 0.01
    pooled = InterestDecayModel(SHAPE, norm, LossWeights(baseline_pooling=3.0))
    loss_free, loss_pooled = free.loss_parts(out, inputs, targets)["loss"], pooled.loss_parts(out, inputs, targets)["loss"]
    assert float(loss_pooled) == pytest.approx(float(loss_free) + 3.0 * spread, rel=1e-5)


def test_early_stopping_watches_the_decay_likelihood_counts_included(tmp_path: Path) -> None:
    inputs, targets = _toy_with_counts(512, seed=2)
    model = InterestDecayModel(SHAPE, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]), LossWeights(count=2.0))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-2))
    model.kl_weight.assign(0.01)
    parts = model.loss_parts(model(inputs, training=True), inputs, targets)
    rest = 0.2 * parts["step_bce"] + 0.05 * parts["recon"] + 0.01 * parts["kl"]
    assert float(parts["loss"]) == pytest.approx(float(parts["decay_nll"] + rest), rel=1e-6)

    # The decay likelihood is the mixture's: -log of the mean over the draws of each draw's likelihood.
    val_inputs, val_targets = _toy_with_counts(256, seed=3)
    params = model(val_inputs)["params"]
    mixture = model.mixture_nll(params, val_inputs, val_targets)["decay_nll"].numpy()
    per_draw = np.stack(
        [sum(model.decay_nll(params[:, d, :], val_inputs, val_targets)[i] * (1.0, 2.0)[i] for i in (0, 1)) for d in range(params.shape[1])],
        axis=1,
    )
    np.testing.assert_allclose(mixture, -np.log(np.exp(-per_draw).mean(axis=1)), rtol=1e-4)
    val = as_dataset(val_inputs, val_targets, 128, None)
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
    assert set(resumed.final_metrics) == {f"val_{m}_{h}d" for m in ("auc", "returners_ratio") for h in (7, 14, 30)}


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


def test_the_model_learns_each_users_own_time_constant(tmp_path: Path) -> None:
    """Users who share one process but for their time constant: the model must rank them by it,
    from their windows alone, in its interest half-life."""
    from scipy.stats import spearmanr

    inputs, targets, tau = _fading_users(2500)
    shape = ModelShape(
        n_windows=12, n_window_features=12, n_static=5, window_days=7, horizons_days=(7, 14, 30), hidden_units=16, use_vae=False
    )
    model = InterestDecayModel(shape, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(5e-3))
    fit(model, as_dataset(inputs, targets, 128), epochs=6, steps_per_epoch=steps_for(2500, 128), checkpoint_dir=str(tmp_path))
    test_inputs, _, test_tau = _fading_users(800, seed=1)
    predicted = model.predict_curves(test_inputs, [7.0])["interest_half_life_days"].numpy()
    assert spearmanr(predicted, test_tau).statistic > 0.75


def test_validation_visits_are_the_expected_over_the_observed_in_the_observed_windows() -> None:
    inputs, targets = _toy_with_counts(200, seed=6)
    targets["future_sessions"][:50, 1:] = -1.0  # the latest rows: their later windows not over
    model = _model(inputs)
    model.build_with_zeros()
    ratios = validation_visits(model, inputs, targets)
    params = model(inputs)["params"]
    per_window = tf.reduce_mean(decay.p_alive(params)[..., None] * decay.window_visits_there(params, 3, 7.0), axis=1).numpy()
    known = targets["future_sessions"] >= 0
    expected = float((per_window * known).sum() / np.where(known, targets["future_sessions"], 0).sum())
    assert ratios["val_visits_predicted_over_observed"] == pytest.approx(expected, rel=1e-5)
    latest = known[:, 0] & ~known[:, -1]
    seen = targets["future_sessions"][latest, 0].sum()
    assert ratios["val_visits_predicted_over_observed_latest"] == pytest.approx(float(per_window[latest, 0].sum() / seen), rel=1e-5)


def test_members_are_served_as_one_mixture_of_their_draws(tmp_path: Path) -> None:
    """The SavedModel round trip, without custom code, of the model train.members saves: each
    member trains from its own seed into its own checkpoints, and the saved model's draws are
    the members' draws together, so every score is the mean over all of them."""
    train, val = _toy_with_counts(256, seed=0), _toy_with_counts(128, seed=1)
    norm = fit_normalisation(train[0]["x"], train[0]["mask"], train[0]["static"])
    plan = RunPlan(
        shape=SHAPE,
        feature_spec={"window_features": ["sessions"], "horizons_days": list(SHAPE.horizons_days)},
        loss_weights=LossWeights(),
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
    assert len(result["fit"]["member_metrics"]) == 2 and "val_auc_7d" in result["fit"]["final_metrics"]  # measured on the mixture
    members = []
    for member in (0, 1):  # each member as its last checkpoint left it
        model = build_model(plan, plan.learning_rate)
        model.build_with_zeros()
        tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(member_checkpoints(plan, member))).expect_partial()
        members.append(model)
    inputs = {k: v[:64] for k, v in train[0].items()}
    curve_days = decay_curve_days(SHAPE.horizons_days)
    each = [member.predict_curves(inputs, curve_days) for member in members]
    assert np.abs(each[0]["expected_visits"] - each[1]["expected_visits"]).max() > 1e-3  # two seeds, two models
    scorer = Scorer(tmp_path / "model")
    scores = scorer(inputs)
    assert scorer.metadata["decay_curve_days"] == curve_days and scorer.metadata["decay_params_layout"] == decay.PARAMS_LAYOUT
    np.testing.assert_allclose(scores["expected_visits"], np.mean([out["expected_visits"] for out in each], axis=0), rtol=1e-4)
    np.testing.assert_allclose(scores["p_active"], np.mean([out["p_active"] for out in each], axis=0), rtol=1e-4)
    np.testing.assert_allclose(scores["decay_curve"], np.mean([out["decay_curve"] for out in each], axis=0), rtol=1e-4)
    assert scores["decay_params"].shape == (64, 2 * SHAPE.draws * decay.N_PARAMS)
    horizons = list(SHAPE.horizons_days)
    np.testing.assert_allclose(scorer.expected_visits_from(scores["decay_params"], horizons), scores["expected_visits"], rtol=1e-4)
    np.testing.assert_allclose(scorer.p_active_from(scores["decay_params"], horizons), scores["p_active"], rtol=1e-4)
    np.testing.assert_allclose(scorer.p_active(inputs), scores["p_active"], rtol=1e-4)
    # Trained: the users' chances differ.
    assert np.std(scores["p_active"][:, 0]) > 0.01
