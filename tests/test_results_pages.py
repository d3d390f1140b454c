"""docs/results/ and the README's headline table are generated from bench/results/, never typed:
the committed pages must be what the generator writes from the committed result files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import results_pages  # noqa: E402


def test_the_committed_pages_are_what_the_result_files_give() -> None:
    stale = [str(path) for path, text in results_pages.render().items() if not path.is_file() or path.read_text() != text]
    assert stale == [], "run `.venv/bin/python bench/results_pages.py` and commit what it writes"


def _run(seed: int, model_auc: float, gain_low: float, gain_high: float, label: str = "default", batch: str = "b1") -> dict:
    rows = [
        {
            "method": "model",
            "horizon_days": 30,
            "status": "ok",
            "roc_auc": model_auc,
            "predicted_returners": 100.0 + seed,
            "actual_returners": 110.0,
        },
        {
            "method": "lightgbm",
            "horizon_days": 30,
            "status": "ok",
            "roc_auc": 0.75,
            "predicted_returners": 105.0,
            "actual_returners": 110.0,
            "model_auc_gain": model_auc - 0.75,
            "model_auc_gain_low": gain_low,
            "model_auc_gain_high": gain_high,
        },
    ]
    return {
        "shop": "demo",
        "label": label,
        "batch": batch,
        "seed": seed,
        "metrics": {"x": float(seed)},
        "comparison": rows,
        "date": "2026-12-03T10:00:00+00:00",
        "code": "abc1234",
        "command": "bench/evaluation.py --shop demo",
    }


def test_a_batch_is_summarised_as_mean_and_spread_with_every_seed_interval() -> None:
    runs = [_run(0, 0.76, 0.001, 0.019), _run(1, 0.77, 0.011, 0.029), _run(2, 0.78, -0.002, 0.062)]
    (row,) = results_pages.gain_rows(results_pages.comparison_frame(runs))
    assert row["model AUC"] == "0.7700 ± 0.0100"
    assert row["baseline"] == "lightgbm" and row["gain (mean)"] == "+0.0200"
    assert row["95% interval per seed"] == "[+0.0010, +0.0190] [+0.0110, +0.0290] [-0.0020, +0.0620]"
    assert row["seeds above / below zero"] == "2 / 0 of 3"
    assert row["returners predicted (model)"] == "101 ± 1" and row["actual"] == "110"


def test_the_latest_batch_of_each_label_is_shown_and_labels_never_mix() -> None:
    runs = [_run(0, 0.70, 0, 0, batch="old"), _run(0, 0.76, 0, 0, batch="new"), _run(0, 0.60, 0, 0, label="no-vae", batch="x")]
    latest = results_pages.latest_by_label(runs)
    assert list(latest) == ["default", "no-vae"]
    assert [r["batch"] for r in latest["default"]] == ["new"]
    page = results_pages.shop_page("demo", runs)
    assert "## default: 1 seed(s)" in page and "## no-vae: 1 seed(s)" in page and "| old | default |" in page


@pytest.mark.parametrize(("values", "shown"), [([0.5], "0.500"), ([1.0, 3.0], "2.000 ± 1.414"), ([], ""), ([float("nan"), 2.0], "2.000")])
def test_mean_and_spread(values: list[float], shown: str) -> None:
    assert results_pages._mean_sd(values) == shown
