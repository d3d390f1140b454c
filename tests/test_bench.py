"""Benchmarks that cannot rot: a smoke run of a bench at a tiny size, its figures sent to a
temporary folder (never bench/results/), so a changed signature fails here instead of in the
next measurement, or on the few minutes of a lent GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pyspark.sql import SparkSession
from typer.testing import CliRunner

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


@pytest.mark.slow
def test_the_gpu_check_runs_its_loop_on_the_cpu(tmp_path: Path) -> None:
    lines = _bench("gpu_check.py", "--rows", "256", "--epochs", "1", "--batch-size", "64", "--cpu", results=tmp_path)
    assert [(line["device"], line["mixed_precision"], line["rows"]) for line in lines] == [("CPU", False, 256), ("CPU", True, 256)]
    assert all(line["samples_per_second"] > 0 and line["final_loss"] == line["final_loss"] for line in lines)  # finite loss
    assert all("bench/gpu_check.py" in line["command"] and line["date"] for line in lines)
    assert not (REPO / "bench" / "results" / "gpu_check.jsonl").exists()


@pytest.mark.slow
def test_the_stream_bench_measures_latency_at_a_tiny_rate(
    spark: SparkSession, shop: TrainedShop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In this process, on the suite's session (the bench reuses an active one): a second JVM and
    # fresh TensorFlow workers would cost minutes on two cores. A generous grace: the suite keeps
    # the machine busy.
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import results_file  # noqa: PLC0415 -- bench/ is on the path only for this test

    spec = importlib.util.spec_from_file_location("bench_stream", REPO / "bench" / "stream.py")
    bench_stream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_stream)
    monkeypatch.setattr(results_file, "RESULTS_DIR", tmp_path)
    recorded = (REPO / "bench" / "results" / "stream.jsonl").read_bytes()
    args = [
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
    ]
    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / "stream.py"), *args])  # the command the line records
    app = typer.Typer()
    app.command()(bench_stream.main)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [line] = [json.loads(text) for text in (tmp_path / "stream.jsonl").read_text().splitlines()]
    assert (line["rate_events_per_second"], line["files"], line["files_not_scored"]) == (30, 4, 0)
    assert 0 < line["latency_p50_s"] <= line["latency_p95_s"] <= line["latency_p99_s"] < 300
    assert line["events"] == 120 and line["command"] == shlex.join([".venv/bin/python", "bench/stream.py", *args])
    assert (REPO / "bench" / "results" / "stream.jsonl").read_bytes() == recorded
