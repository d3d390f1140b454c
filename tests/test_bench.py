"""Benchmarks that cannot rot: a smoke run of a bench at a tiny size, its figures sent to a
temporary folder (never bench/results/), so a changed signature fails here instead of in the
next measurement, or on the few minutes of a lent GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shops import TrainedShop

REPO = Path(__file__).resolve().parent.parent


def _bench(script: str, *args: str, results: Path) -> list[dict]:
    env = {**os.environ, "INTEREST_DECAY_BENCH_RESULTS": str(results), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args], cwd=REPO / "bench", env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    name = script.removesuffix(".py")
    return [json.loads(line) for line in (results / f"{name}.jsonl").read_text().splitlines()]


def test_the_gpu_check_runs_its_loop_on_the_cpu(tmp_path: Path) -> None:
    lines = _bench("gpu_check.py", "--rows", "256", "--epochs", "1", "--batch-size", "64", "--cpu", results=tmp_path)
    assert [(line["device"], line["mixed_precision"], line["rows"]) for line in lines] == [("CPU", False, 256), ("CPU", True, 256)]
    assert all(line["samples_per_second"] > 0 and line["final_loss"] == line["final_loss"] for line in lines)  # finite loss
    assert all("bench/gpu_check.py" in line["command"] and line["date"] for line in lines)
    assert not (REPO / "bench" / "results" / "gpu_check.jsonl").exists()


def test_the_stream_bench_measures_latency_at_a_tiny_rate(shop: TrainedShop, tmp_path: Path) -> None:
    # A generous grace: the first batch starts TensorFlow in fresh Python workers, on a machine the
    # suite keeps busy.
    args = (
        "--rates",
        "30",
        "--seconds",
        "4",
        "--users",
        "150",
        "--trigger",
        "1s",
        "--grace",
        "300",
        "--model",
        shop.trained.outputs["model"],
    )
    [line] = _bench("stream.py", *args, results=tmp_path)
    assert (line["rate_events_per_second"], line["files"], line["files_not_scored"]) == (30, 4, 0)
    assert 0 < line["latency_p50_s"] <= line["latency_p95_s"] <= line["latency_p99_s"] < 300
    assert line["events"] == 120 and "bench/stream.py" in line["command"]
