"""Evaluation metrics for P(active within h): ranking, calibration and the counts a CRM team plans with.

Every function takes ``labels`` (0/1) and ``scores`` as numpy arrays of the same length.
Scores of a rule that is not a probability (the recency rule) still rank users; the
probability metrics (Brier, calibration, predicted returners) are then left out (NaN).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

TOP_FRACTIONS = (0.05, 0.10, 0.20)


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and of one length, got {labels.shape} and {scores.shape}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return labels, scores


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over equal-width probability bins, weighted by bin size."""
    labels, probabilities = _check(labels, probabilities)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(labels[in_bin].mean() - probabilities[in_bin].mean())
    return float(error)


def calibration_curve(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted, observed rate, users) per non-empty equal-width bin."""
    labels, probabilities = _check(labels, probabilities)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    predicted = np.array([probabilities[which == b].mean() for b in used])
    observed = np.array([labels[which == b].mean() for b in used])
    return predicted, observed, np.array([(which == b).sum() for b in used])


def _top(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``fraction`` highest scores (at least one user); ties broken by position."""
    n = max(1, math.ceil(fraction * len(scores)))
    return np.argsort(-scores, kind="stable")[:n]


def precision_recall_at(labels: np.ndarray, scores: np.ndarray, fraction: float) -> tuple[float, float]:
    """Precision and recall when the top ``fraction`` of users by score are targeted."""
    labels, scores = _check(labels, scores)
    hits = labels[_top(scores, fraction)].sum()
    positives = labels.sum()
    return float(hits / len(_top(scores, fraction))), float(hits / positives) if positives else float("nan")


def lift_at(labels: np.ndarray, scores: np.ndarray, fraction: float = 0.10) -> float:
    """Positive rate in the top ``fraction`` over the overall positive rate."""
    labels, scores = _check(labels, scores)
    base = labels.mean()
    return float(labels[_top(scores, fraction)].mean() / base) if base else float("nan")


def gains_curve(labels: np.ndarray, scores: np.ndarray, points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of users targeted, fraction of all positives found), best scores first."""
    labels, scores = _check(labels, scores)
    found = np.concatenate([[0.0], np.cumsum(labels[np.argsort(-scores, kind="stable")])]) / max(labels.sum(), 1.0)
    targeted = np.linspace(0, 1, points + 1)
    return targeted, found[np.round(targeted * len(labels)).astype(int)]


def binary_metrics(labels: np.ndarray, scores: np.ndarray, is_probability: bool = True) -> dict[str, float]:
    """Every metric of the evaluation table for one method and horizon."""
    labels, scores = _check(labels, scores)
    both_classes = 0 < labels.sum() < len(labels)
    result = {
        "users": float(len(labels)),
        "actual_returners": float(labels.sum()),
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both_classes else float("nan"),
        "lift_top_10": lift_at(labels, scores, 0.10),
    }
    for fraction in TOP_FRACTIONS:
        precision, recall = precision_recall_at(labels, scores, fraction)
        result[f"precision_top_{round(fraction * 100)}"] = precision
        result[f"recall_top_{round(fraction * 100)}"] = recall
    nan = float("nan")
    result["brier"] = float(np.mean((scores - labels) ** 2)) if is_probability else nan
    result["ece"] = expected_calibration_error(labels, scores) if is_probability else nan
    result["predicted_returners"] = float(scores.sum()) if is_probability else nan
    return result


class _RankedScores:
    """One method's scores as tie groups in ascending order, so that a weighted AUC is two
    bincounts and a cumulative sum: O(users) per bootstrap round instead of a sort."""

    def __init__(self, scores: np.ndarray) -> None:
        values, self.group = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
        self.groups = len(values)

    def auc(self, labels: np.ndarray, weights: np.ndarray) -> float:
        """ROC-AUC with each user counted ``weights`` times (ties count one half)."""
        positive = np.bincount(self.group, weights=weights * labels, minlength=self.groups)
        negative = np.bincount(self.group, weights=weights * (1.0 - labels), minlength=self.groups)
        pairs = positive.sum() * negative.sum()
        below = np.cumsum(negative) - negative
        return float((positive * (below + 0.5 * negative)).sum() / pairs) if pairs else float("nan")


def auc_gain_intervals(
    labels: np.ndarray, reference: np.ndarray, others: dict[str, np.ndarray], rounds: int = 500, seed: int = 0
) -> dict[str, dict[str, float]]:
    """For each of ``others``: AUC(reference) - AUC(other) on the same users, with a 95% interval
    from resampling users (every method sees the same resamples, so the pairs are paired)."""
    labels, reference = _check(labels, reference)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    ranked_reference = _RankedScores(reference)
    ranked = {name: _RankedScores(_check(labels, scores)[1]) for name, scores in others.items()}
    ones = np.ones(len(labels))
    differences: dict[str, list[float]] = {name: [] for name in others}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        # A resample of the users as how often each one is drawn.
        weights = np.bincount(rng.integers(0, len(labels), len(labels)), minlength=len(labels)).astype(np.float64)
        if not 0 < (weights * labels).sum() < weights.sum():
            continue
        first = ranked_reference.auc(labels, weights)
        for name, scores in ranked.items():
            differences[name].append(first - scores.auc(labels, weights))
    result = {}
    for name, scores in ranked.items():
        low, high = np.percentile(differences[name], [2.5, 97.5]) if differences[name] else (np.nan, np.nan)
        whole = ranked_reference.auc(labels, ones) - scores.auc(labels, ones)
        result[name] = {"difference": float(whole), "low": float(low), "high": float(high)}
    return result
