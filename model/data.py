"""Rows of the ``sequences`` view as the model's inputs and targets.

The view stores ``x`` as a list of windows; petastorm needs flat fixed-size arrays, so the
Spark side flattens it (:func:`flat_columns`) and the model side reshapes it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FLAT_COLUMNS = ("x_flat", "mask", "static", "days_to_next", "censored", "future_sessions")


def label_columns(horizons_days: tuple[int, ...] | list[int]) -> list[str]:
    """The view's label column names, one per horizon."""
    return [f"active_{h}d" for h in horizons_days]


def flat_columns(horizons_days: tuple[int, ...] | list[int], with_user_id: bool = True) -> list[str]:
    """Spark SQL expressions that turn view rows into petastorm-friendly flat columns."""
    labels = [f"CAST(coalesce({c}, -1) AS FLOAT) AS {c}" for c in label_columns(horizons_days)]
    return [
        *(["user_id"] if with_user_id else []),
        "CAST(flatten(x) AS ARRAY<FLOAT>) AS x_flat",
        "CAST(mask AS ARRAY<FLOAT>) AS mask",
        "CAST(static AS ARRAY<FLOAT>) AS static",
        "CAST(days_to_next AS FLOAT) AS days_to_next",
        "CAST(censored AS FLOAT) AS censored",
        "CAST(future_sessions AS ARRAY<FLOAT>) AS future_sessions",
        *labels,
    ]


def arrays(
    frame: pd.DataFrame, n_windows: int, n_window_features: int, n_static: int, horizons_days: tuple[int, ...] | list[int]
) -> tuple[dict, dict]:
    """(inputs, targets) numpy dicts from a pandas frame of :func:`flat_columns` rows.

    Label -1 means "not known yet" (the horizon reaches past the data).
    """
    if frame.empty:
        empty = np.zeros((0, n_windows), np.float32)
        inputs = {
            "x": np.zeros((0, n_windows, n_window_features), np.float32),
            "mask": empty,
            "static": np.zeros((0, n_static), np.float32),
        }
        targets = {c: np.zeros(0, np.float32) for c in ("days_to_next", "censored", *label_columns(horizons_days))}
        return inputs, {**targets, "future_sessions": np.zeros((0, 0), np.float32)}
    inputs = {
        "x": np.stack(frame["x_flat"].to_numpy()).astype(np.float32).reshape(-1, n_windows, n_window_features),
        "mask": np.stack(frame["mask"].to_numpy()).astype(np.float32),
        "static": np.stack(frame["static"].to_numpy()).astype(np.float32),
    }
    targets = {
        "days_to_next": frame["days_to_next"].to_numpy(np.float32),
        "censored": frame["censored"].to_numpy(np.float32),
        "future_sessions": np.stack(frame["future_sessions"].to_numpy()).astype(np.float32),
        **{c: frame[c].to_numpy(np.float32) for c in label_columns(horizons_days)},
    }
    return inputs, targets


def recency_score(inputs: dict) -> np.ndarray:
    """The recency rule as a score: the sooner the last event, the likelier a return."""
    return -inputs["static"][:, 1]


def sample_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded sample of ``limit`` of ``n`` rows, in order; all ``n`` when there are
    no more than ``limit`` (or ``limit`` is None)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
