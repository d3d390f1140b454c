"""Scoring with a saved model: what the pandas UDF of jobs/score.py calls on every Arrow batch.

The model is loaded once per Python worker (cached by path), so a worker that scores many
batches, or many tasks with worker reuse, pays the load once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from model.export import Scorer

METADATA_FILE = "interest_decay.json"


def read_metadata(path: str | Path) -> dict:
    """A saved model's metadata (feature spec, shape, normalisation) without loading TensorFlow."""
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an interest-decay model: {METADATA_FILE} is missing")
    return json.loads(file.read_text())


@lru_cache(maxsize=4)
def load_scorer(path: str) -> Scorer:
    """The model at ``path``, loaded once per process (TensorFlow is imported here, on first use)."""
    from model.export import Scorer

    return Scorer(path)


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


def score_frame(scorer: Scorer, x_flat: pd.Series, mask: pd.Series, static: pd.Series, horizons: list[int]) -> pd.DataFrame:
    """Scores for one batch of view rows (flat arrays, as Arrow hands them over)."""
    spec = scorer.feature_spec
    inputs = {
        "x": np.stack(x_flat.to_numpy()).astype(np.float32).reshape(-1, spec["n_windows"], len(spec["window_features"])),
        "mask": np.stack(mask.to_numpy()).astype(np.float32),
        "static": np.stack(static.to_numpy()).astype(np.float32),
    }
    out = scorer(inputs)
    model_horizons = list(spec["horizons_days"])
    frame = pd.DataFrame({f"p_active_{h}d": out["p_active"][:, model_horizons.index(h)].astype(np.float64) for h in horizons})
    frame["decay_curve"] = list(out["decay_curve"].astype(np.float64))
    frame["half_life_days"] = out["half_life_days"].astype(np.float64)
    frame["interest_half_life_days"] = out["interest_half_life_days"].astype(np.float64)
    if "z" in out:
        frame["z"] = list(out["z"].astype(np.float64))
        frame["reconstruction_error"] = out["reconstruction_error"].astype(np.float64)
    else:
        frame["z"] = [np.zeros(0)] * len(frame)
        frame["reconstruction_error"] = np.nan
    return frame


def score_batches(model_path: str, horizons: list[int], batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
    """The body of the iterator pandas UDF: load once, then score batch after batch."""
    scorer = load_scorer(model_path)
    for x_flat, mask, static in batches:
        yield score_frame(scorer, x_flat, mask, static, horizons)
