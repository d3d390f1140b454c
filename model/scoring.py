"""Scoring with a saved model: what the pandas UDF of jobs/score.py calls on every Arrow batch.

The model is loaded once per Python worker (cached by path), so a worker that scores many
batches, or many tasks with worker reuse, pays the load once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from interest_decay.model.scorer import Scorer


@lru_cache(maxsize=4)
def load_scorer(path: str) -> Scorer:
    """The model at ``path``, loaded once per process (TensorFlow is imported here, on first use)."""
    from interest_decay.model.scorer import Scorer

    return Scorer(path)


def limit_threads(threads: int) -> None:
    """Size TensorFlow's thread pools in this process to ``threads`` cores. Spark runs one Python
    worker per task slot, and TensorFlow would otherwise give each of them every core of the host,
    so the workers take turns on the cores. Only before TensorFlow has run in the process (a reused
    worker keeps the pools it was given)."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialised its runtime here: its pools are fixed
        pass


def feature_mismatch(model_spec: dict, view_spec: dict) -> list[str]:
    """How the model's feature spec differs from the view's (empty when they match)."""
    problems = []
    for key in ("window_features", "static_features", "n_windows", "window_days"):
        if model_spec.get(key) != view_spec.get(key):
            problems.append(f"{key}: model has {model_spec.get(key)!r}, the view has {view_spec.get(key)!r}")
    missing = sorted(set(view_spec.get("horizons_days", [])) - set(model_spec.get("horizons_days", [])))
    if missing:
        problems.append(f"horizons_days: the model has no horizon {missing}")
    return problems


# Per-user scores beside the per-horizon ones, in the table's order (model/network.py: _Scores).
USER_SCORES = (
    "p_alive",
    "interest_half_life_days",
    "interest_half_life_days_low",
    "interest_half_life_days_high",
    "silence_half_life_days",
    "dropout_share",
    "baseline_visits_per_30d",
    "interest_now",
    "return_median_days",
)


def score_columns(horizons: list[int], with_params: bool = False) -> list[tuple[str, str]]:
    """(name, Spark SQL type) of every column :func:`score_frame` returns, in order: the pandas
    UDF's schema and the model part of the ``scores`` table; ``with_params`` adds the raw
    ``decay_params`` (what the evaluation computes every horizon and curve from)."""
    per_horizon = [
        (f"{name}_{h}d{bound}", "DOUBLE") for name in ("p_active", "expected_visits") for h in horizons for bound in ("", "_low", "_high")
    ]
    return [
        *per_horizon,
        ("decay_curve", "ARRAY<DOUBLE>"),
        *[(name, "DOUBLE") for name in USER_SCORES],
        ("drivers", "ARRAY<STRING>"),
        ("driver_effects", "ARRAY<DOUBLE>"),
        ("z", "ARRAY<DOUBLE>"),
        ("reconstruction_error", "DOUBLE"),
        *([("decay_params", "ARRAY<DOUBLE>")] if with_params else []),
    ]


def typical_user(metadata: dict) -> tuple[np.ndarray, np.ndarray]:
    """(window features, static features) of the typical user: the training rows' mean of
    log1p(feature), mapped back. What :func:`drivers` puts in place of a user's own value."""
    norm = metadata["normalisation"]
    return np.expm1(np.asarray(norm["x_mean"], np.float32)), np.expm1(np.asarray(norm["static_mean"], np.float32))


def feature_groups(window_features: Sequence[str], static_features: Sequence[str]) -> dict[str, Callable[[dict, dict], dict]]:
    """For every window and static feature, a function (inputs, replacement) -> inputs with that
    feature taken from ``replacement`` (same shapes), so one feature can be shuffled or reset."""

    def window(i: int) -> Callable[[dict, dict], dict]:
        def swap(inputs: dict, other: dict) -> dict:
            x = inputs["x"].copy()
            x[:, :, i] = other["x"][:, :, i]
            return {**inputs, "x": x}

        return swap

    def static(i: int) -> Callable[[dict, dict], dict]:
        def swap(inputs: dict, other: dict) -> dict:
            values = inputs["static"].copy()
            values[:, i] = other["static"][:, i]
            return {**inputs, "static": values}

        return swap

    # A static feature named as a window feature (tenure_days: at the as-of date, and at each
    # window's end) is its own group, "<name>_now": one name must never hide another.
    statics = {(f if f not in window_features else f"{f}_now"): static(i) for i, f in enumerate(static_features)}
    return {**{f: window(i) for i, f in enumerate(window_features)}, **statics}


def drivers(
    p_active: Callable[[dict], np.ndarray], inputs: dict, typical: tuple[np.ndarray, np.ndarray], feature_spec: dict, top: int = 3
) -> tuple[list[list[str]], list[list[float]]]:
    """Per user, the ``top`` features that lower P(active) most: how much P(active) would rise
    if that one feature (in every window the user has) were the typical user's. Features that
    would not raise it are left out, so a user with nothing holding them back gets none.

    ``p_active(inputs)`` gives one probability per user; ``feature_spec`` names the window and
    static features (a model's ``feature_spec``), in the order of :func:`typical_user`.
    """
    base = p_active(inputs)
    typical_x, typical_static = typical
    real = inputs["mask"][..., None] > 0
    replacement = {"x": np.where(real, typical_x, 0.0), "static": np.broadcast_to(typical_static, inputs["static"].shape)}
    groups = feature_groups(feature_spec["window_features"], feature_spec["static_features"])
    names = list(groups)
    effects = np.stack([p_active(swap(inputs, replacement)) - base for swap in groups.values()], axis=1)  # users x features
    order = np.argsort(-effects, axis=1, kind="stable")[:, :top]
    # Rounded first, so an effect too small to show (0.0000) is left out with the ones that are not positive.
    chosen = np.round(np.take_along_axis(effects, order, axis=1), 4)
    names_out = [[names[f] for f, e in zip(row, eff, strict=False) if e > 0] for row, eff in zip(order, chosen, strict=False)]
    effects_out = [[float(e) for e in eff if e > 0] for eff in chosen]
    return names_out, effects_out


def view_inputs(x_flat: pd.Series, mask: pd.Series, static: pd.Series, feature_spec: dict) -> dict[str, np.ndarray]:
    """The model's inputs from one batch of view rows as Arrow hands them over (flat arrays)."""
    return {
        "x": np.stack(x_flat.to_numpy()).astype(np.float32).reshape(-1, feature_spec["n_windows"], len(feature_spec["window_features"])),
        "mask": np.stack(mask.to_numpy()).astype(np.float32),
        "static": np.stack(static.to_numpy()).astype(np.float32),
    }


def score_arrays(scorer: Scorer, inputs: dict, horizons: list[int], explain: bool = True, with_params: bool = False) -> pd.DataFrame:
    """Every score of a batch of users (the model's inputs as arrays), one row per user:
    :func:`score_columns`. ``explain`` adds each user's drivers (empty lists without),
    ``with_params`` the decay parameters."""
    spec = scorer.feature_spec
    out = scorer(inputs)
    model_horizons = list(spec["horizons_days"])
    columns = {}
    for name in ("p_active", "expected_visits"):
        for h in horizons:
            i = model_horizons.index(h)
            for bound in ("", "_low", "_high"):
                columns[f"{name}_{h}d{bound}"] = out[f"{name}{bound}"][:, i].astype(np.float64)
    frame = pd.DataFrame(columns)
    frame["decay_curve"] = list(out["decay_curve"].astype(np.float64))
    for name in USER_SCORES:
        frame[name] = out[name].astype(np.float64)
    longest = model_horizons.index(max(horizons))
    names, effects = [[]] * len(frame), [[]] * len(frame)
    if explain:
        names, effects = drivers(lambda changed: scorer.p_active(changed)[:, longest], inputs, typical_user(scorer.metadata), spec)
    frame["drivers"], frame["driver_effects"] = names, effects
    if "z" in out:
        frame["z"] = list(out["z"].astype(np.float64))
        frame["reconstruction_error"] = out["reconstruction_error"].astype(np.float64)
    else:
        frame["z"] = [np.zeros(0)] * len(frame)
        frame["reconstruction_error"] = np.nan
    if with_params:
        frame["decay_params"] = list(out["decay_params"].astype(np.float64))
    return frame[[name for name, _ in score_columns(horizons, with_params)]]


def score_frame(
    scorer: Scorer,
    x_flat: pd.Series,
    mask: pd.Series,
    static: pd.Series,
    horizons: list[int],
    explain: bool = True,
    with_params: bool = False,
) -> pd.DataFrame:
    """Scores for one batch of view rows (flat arrays, as Arrow hands them over): :func:`score_arrays`."""
    return score_arrays(scorer, view_inputs(x_flat, mask, static, scorer.feature_spec), horizons, explain, with_params)


def score_batches(
    model_path: str,
    horizons: list[int],
    batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]],
    explain: bool = True,
    with_params: bool = False,
    threads: int | None = None,
) -> Iterator[pd.DataFrame]:
    """The body of the iterator pandas UDF: load once, then score batch after batch. ``threads``:
    the cores this worker may use (:func:`limit_threads`); None, TensorFlow's default (all)."""
    if threads is not None:
        limit_threads(threads)
    scorer = load_scorer(model_path)
    for x_flat, mask, static in batches:
        yield score_frame(scorer, x_flat, mask, static, horizons, explain, with_params)


def tier_thresholds(
    mode: str, shares: tuple[float, float], fixed: tuple[float, float], quantiles: Callable[[list[float]], list[float]]
) -> tuple[float, float]:
    """(high risk below, medium risk below) on P(active within the longest horizon).

    ``quantile``: this shop's own distribution, so the ``shares[0]`` of users least likely to
    come back are high risk and the next ``shares[1]`` medium (``quantiles(probabilities)``
    gives the scores' quantiles: numpy on the driver, approxQuantile in Spark). ``fixed``: the
    probabilities ``fixed`` as they are.
    """
    if mode == "fixed":
        return fixed
    if mode != "quantile":
        raise ValueError(f"mode must be 'quantile' or 'fixed', got {mode!r}")
    high, medium = quantiles([shares[0], shares[0] + shares[1]])
    return float(high), float(medium)


def risk_tier(p_active: np.ndarray, high_risk_below: float, medium_risk_below: float) -> np.ndarray:
    """'high' / 'medium' / 'low' from P(active within the longest horizon), as the score stage does."""
    return np.where(p_active < high_risk_below, "high", np.where(p_active < medium_risk_below, "medium", "low"))
