"""The Pareto/NBD part of every user's mixture (model/btyd.py): its posterior against lifetimes'
closed forms, the weight chosen on validation rows, and a saved model that serves the blend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from lifetimes import ParetoNBDFitter

from interest_decay.contract import STATIC_FEATURES
from interest_decay.model import btyd, decay
from interest_decay.model.export import decay_curve_days, save_model
from interest_decay.model.network import InterestDecayModel, ModelShape, fit_normalisation
from interest_decay.model.scorer import Scorer

# lifetimes' own fit of Pareto/NBD to its CDNOW sample, in days.
PRIOR = btyd.ParetoNBDPrior(r=0.5533, alpha=74.04, s=0.6062, beta=81.68)
HORIZONS = [7, 14, 28]


def _static(frequency: np.ndarray, recency: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Raw static features of users with lifetimes' (frequency, recency, T), the rest zero."""
    static = np.zeros((len(age), len(STATIC_FEATURES)), np.float32)
    static[:, STATIC_FEATURES.index("tenure_days")] = age
    static[:, STATIC_FEATURES.index("recency_days")] = age - recency
    static[:, STATIC_FEATURES.index("total_sessions")] = frequency + 1
    return static


def _lifetimes(prior: btyd.ParetoNBDPrior) -> ParetoNBDFitter:
    fitter = ParetoNBDFitter()
    fitter.params_ = pd.Series(prior.to_dict())
    return fitter


def _cdnow_users() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, age) in days of the CDNOW customers lifetimes ships (read locally)."""
    from lifetimes.datasets import load_cdnow_summary

    summary = load_cdnow_summary()
    return summary["frequency"].to_numpy(float), summary["recency"].to_numpy(float) * 7, summary["T"].to_numpy(float) * 7


def test_the_posterior_gives_what_lifetimes_computes_in_closed_form() -> None:
    frequency, recency, age = _cdnow_users()
    static = tf.constant(_static(frequency, recency, age))
    fitter = _lifetimes(PRIOR)
    posterior = btyd.ParetoNBDPosterior(PRIOR)
    p_alive = tf.sigmoid(posterior.logit_alive(static)).numpy()
    np.testing.assert_allclose(p_alive, fitter.conditional_probability_alive(frequency, recency, age), atol=1e-5)
    params = posterior(static)
    assert params.shape == (len(age), btyd.DRAWS, decay.N_PARAMS)
    horizons = [7.0, 30.0, 91.0, 273.0]
    p_active = tf.reduce_mean(decay.p_active_on(params, horizons), axis=1).numpy()
    visits = tf.reduce_mean(decay.expected_visits(params, tf.constant(horizons)), axis=1).numpy()
    for i, h in enumerate(horizons):
        none = fitter.conditional_probability_of_n_purchases_up_to_time(0, h, frequency, recency, age)
        np.testing.assert_allclose(p_active[:, i], 1.0 - none, atol=0.005)
        expected = fitter.conditional_expected_number_of_purchases_up_to_time(h, frequency, recency, age)
        assert visits[:, i].sum() == pytest.approx(expected.sum(), rel=0.02)
        np.testing.assert_allclose(visits[:, i], expected, rtol=0.05, atol=0.02 * h / 30)


def test_a_user_seen_at_the_as_of_date_is_there_and_one_long_silent_likely_gone() -> None:
    static = tf.constant(_static(np.array([5.0, 5.0]), np.array([100.0, 10.0]), np.array([100.0, 300.0])))
    p_alive = tf.sigmoid(btyd.ParetoNBDPosterior(PRIOR).logit_alive(static)).numpy()
    assert p_alive[0] == pytest.approx(1.0) and p_alive[1] < 0.1


def test_the_weight_is_the_most_likely_mixture_and_the_network_wins_ties() -> None:
    a, b = np.log(np.array([0.8, 0.1, 0.8, 0.1])), np.log(np.array([0.1, 0.8, 0.1, 0.8]))
    weight, scores = btyd.choose_weight(a, b)
    assert weight == 0.5  # each part explains half the rows
    assert scores[0.5] == pytest.approx(np.mean(np.log(0.5 * np.exp(a) + 0.5 * np.exp(b))))
    assert scores[1.0] == pytest.approx(a.mean()) and scores[0.0] == pytest.approx(b.mean())
    assert btyd.choose_weight(np.log(np.full(4, 0.8)), np.log(np.full(4, 0.1)))[0] == 1.0  # the network is better everywhere
    assert btyd.choose_weight(a, a)[0] == 1.0  # a tie
    assert btyd.choose_weight(a - 5.0, a)[0] == 0.0  # Pareto/NBD is better everywhere
    with pytest.raises(ValueError, match="log_model and log_btyd"):
        btyd.choose_weight(a, b[:2])


@pytest.mark.parametrize("draws", [1, 3, 16])
@pytest.mark.parametrize("weight", sorted(btyd.WEIGHTS))
def test_the_mixer_weighs_the_two_parts_by_copies_of_their_draws(weight: float, draws: int) -> None:
    frequency, recency, age = (v[:50] for v in _cdnow_users())
    static = tf.constant(_static(frequency, recency, age))
    rng = np.random.default_rng(draws)
    state = np.stack([[0.5, -3.0, -2.0, 5.0, 0.3, -4.0]] * draws, axis=0)[None] + rng.normal(0, 0.3, (50, draws, 6))
    network = tf.constant(np.concatenate([state, np.full((50, draws, 1), decay.NO_FRAILTY_LOG_SHAPE)], axis=-1), tf.float32)
    mixed = btyd.Mixer(btyd.Blend(PRIOR, weight))(network, static)

    def p_active(params: tf.Tensor) -> np.ndarray:
        return tf.reduce_mean(decay.p_active_on(params, [30.0]), axis=1).numpy()

    expected = weight * p_active(network) + (1 - weight) * p_active(btyd.ParetoNBDPosterior(PRIOR)(static))
    np.testing.assert_allclose(p_active(mixed), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="model_weight must be one of"):
        btyd.Blend(PRIOR, 0.4)


def _pareto_nbd_shop(n: int, prior: btyd.ParetoNBDPrior, window_days: int, windows: int, seed: int) -> tuple[dict, dict]:
    """Users of a Pareto/NBD process seen at a random age: their static features and their
    futures over ``windows`` windows (the time to the next visit censored at the last, and
    whether they are back within each of HORIZONS)."""
    rng = np.random.default_rng(seed)
    rate, dropout = rng.gamma(prior.r, 1 / prior.alpha, n), rng.gamma(prior.s, 1 / prior.beta, n)
    lifetime, age = rng.exponential(1 / dropout), rng.uniform(30, 300, n)
    end = age + window_days * windows
    frequency, last, following, counts = np.zeros(n), np.zeros(n), np.full(n, np.inf), np.zeros((n, windows))
    for i in range(n):
        times = np.cumsum(rng.exponential(1 / rate[i], 200))
        times = times[times < min(lifetime[i], end[i])]
        past, future = times[times <= age[i]], times[times > age[i]]
        frequency[i], last[i] = len(past), past[-1] if len(past) else 0.0
        if len(future):
            following[i] = future[0] - age[i]
            counts[i] = np.histogram(future - age[i], bins=np.arange(windows + 1) * window_days)[0]
    censored = ~np.isfinite(following)
    inputs = {"static": _static(frequency, last, age), "x": np.zeros((n, 1, 1), np.float32), "mask": np.ones((n, 1), np.float32)}
    targets = {
        "days_to_next": np.where(censored, window_days * windows, following).astype(np.float32),
        "censored": censored.astype(np.float32),
        "future_sessions": counts.astype(np.float32),
        **{f"active_{h}d": (following <= h).astype(np.float32) for h in HORIZONS},
    }
    return inputs, targets


def test_validation_picks_pareto_nbd_on_its_own_shop_and_the_network_when_it_is_as_good() -> None:
    val_sample = _pareto_nbd_shop(600, PRIOR, window_days=7, windows=4, seed=0)
    posterior = btyd.ParetoNBDPosterior(PRIOR)
    # A network that says the same of everyone: there, one visit a fortnight, no dropout.
    same_for_all = tf.constant([[[3.0, np.log(1 / 14), -20.0, 1.0, 0.0, np.log(1e-5), decay.NO_FRAILTY_LOG_SHAPE]]], tf.float32)

    def constant(inputs: dict) -> tf.Tensor:
        return tf.tile(same_for_all, [tf.shape(inputs["static"])[0], 1, 1])

    blend, facts = btyd.blend_on_validation(constant, val_sample, PRIOR.to_dict(), HORIZONS)
    assert blend is not None and blend.model_weight <= 1 / 3, facts
    assert facts["validation_rows"] == 600 and facts["prior"] == PRIOR.to_dict()
    assert set(facts["validation_log_likelihood"]) == {f"{w:.3f}" for w in btyd.WEIGHTS}
    blend, facts = btyd.blend_on_validation(lambda inputs: posterior(inputs["static"]), val_sample, PRIOR.to_dict(), HORIZONS)
    assert blend is None and facts["model_weight"] == 1.0  # the same model twice: a tie goes to the network


def test_without_a_prior_or_enough_rows_the_network_serves_alone() -> None:
    val_sample = _pareto_nbd_shop(50, PRIOR, window_days=7, windows=4, seed=1)
    blend, facts = btyd.blend_on_validation(lambda inputs: None, val_sample, PRIOR.to_dict(), HORIZONS)
    assert blend is None and facts == {"model_weight": 1.0, "reason": "50 validation rows, fewer than 100"}
    blend, facts = btyd.blend_on_validation(lambda inputs: None, val_sample, None, HORIZONS)
    assert blend is None and facts["model_weight"] == 1.0 and "no Pareto/NBD prior" in facts["reason"]


def test_a_saved_blend_serves_one_mixture_to_every_reader(tmp_path: Path) -> None:
    """Through the SavedModel, without custom code: every score is the mixture's, the drivers'
    light signature agrees with it, the decay parameters give it back, and the interest
    half-life stays the network's."""
    shape = ModelShape(n_windows=4, n_window_features=3, n_static=len(STATIC_FEATURES), window_days=7, horizons_days=(7, 30), draws=1)
    frequency, recency, age = (v[:64] for v in _cdnow_users())
    static = _static(frequency, recency, age)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.poisson(1.0, (64, 4, 3)).astype(np.float32), "mask": np.ones((64, 4), np.float32), "static": static}
    norm = fit_normalisation(inputs["x"], inputs["mask"], inputs["static"])
    model = InterestDecayModel(ModelShape(**{**shape.to_dict(), "use_vae": False}), norm)
    model.build_with_zeros()
    blend = btyd.Blend(PRIOR, 0.5)
    save_model(model, tmp_path / "model", norm, {"horizons_days": [7, 30]}, blend=blend)
    scorer = Scorer(tmp_path / "model")
    assert scorer.metadata["btyd_blend"] == blend.to_dict()
    scores = scorer(inputs)
    network = model.predict_curves(inputs, decay_curve_days([7, 30]))
    btyd_params = btyd.ParetoNBDPosterior(PRIOR)(tf.constant(static))
    btyd_p_active = tf.reduce_mean(decay.p_active_on(btyd_params, [7.0, 30.0]), axis=1).numpy()
    np.testing.assert_allclose(scores["p_active"], 0.5 * network["p_active"].numpy() + 0.5 * btyd_p_active, rtol=1e-5)
    btyd_visits = tf.reduce_mean(decay.expected_visits(btyd_params, tf.constant([7.0, 30.0])), axis=1).numpy()
    np.testing.assert_allclose(scores["expected_visits"], 0.5 * network["expected_visits"].numpy() + 0.5 * btyd_visits, rtol=1e-5)
    np.testing.assert_allclose(scorer.p_active(inputs), scores["p_active"], rtol=1e-5)
    np.testing.assert_allclose(scorer.p_active_from(scores["decay_params"], [7, 30]), scores["p_active"], rtol=1e-4)
    np.testing.assert_allclose(scores["interest_half_life_days"], network["interest_half_life_days"].numpy(), rtol=1e-5)
    for name in ("p_active", "expected_visits"):
        assert (scores[f"{name}_low"] <= scores[name] + 1e-6).all() and (scores[name] <= scores[f"{name}_high"] + 1e-6).all()
    assert (scores["expected_visits_high"] > scores["expected_visits_low"]).any()  # the posterior's spread: intervals without the VAE
