"""Benchmarks that cannot rot: a smoke run of a bench at a tiny size, its figures sent to a
temporary folder (never bench/results/), so a changed signature fails here instead of in the
next measurement, or on the few minutes of a lent GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from interest_decay.pipeline import NAMES as STAGES

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


def _bench_in_process(script: str, args: list[str], results: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Run a bench's ``main`` in this process with ``args``, its figures sent to ``results``;
    the lines it recorded. In this process, on the suite's session (a bench reuses an active
    one): a second JVM and fresh TensorFlow workers would cost minutes on two cores."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import results_file  # noqa: PLC0415 -- bench/ is on the path only for these tests

    monkeypatch.setattr(results_file, "RESULTS_DIR", results)
    name = script.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "RESULTS_DIR"):  # read at import (scale_table)
        monkeypatch.setattr(module, "RESULTS_DIR", results)
    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / script), *args])  # the command a line records
    app = typer.Typer()
    app.command()(module.main)
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    recorded = results / f"{name}.jsonl"
    return [json.loads(line) for line in recorded.read_text().splitlines()] if recorded.exists() else [{"output": result.output}]


@pytest.fixture()
def bench_results(tmp_path: Path) -> Path:
    """A smoke run's results folder; bench/results/ is left as it was (checked after the run)."""
    before = {p.name: p.read_bytes() for p in (REPO / "bench" / "results").iterdir()}
    yield tmp_path / "results"
    assert {p.name: p.read_bytes() for p in (REPO / "bench" / "results").iterdir()} == before


@pytest.mark.slow
def test_the_stream_bench_measures_latency_at_a_tiny_rate(
    spark: SparkSession, shop: TrainedShop, bench_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A generous grace: the suite keeps the machine busy.
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
    [line] = _bench_in_process("stream.py", args, bench_results, monkeypatch)
    assert (line["rate_events_per_second"], line["files"], line["files_not_scored"]) == (30, 4, 0)
    assert 0 < line["latency_p50_s"] <= line["latency_p95_s"] <= line["latency_p99_s"] < 300


@pytest.mark.slow
def test_the_ingest_bench_times_a_first_load_a_rerun_and_its_two_references(
    spark: SparkSession, bench_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [line] = _bench_in_process("ingest.py", ["--users", "40"], bench_results, monkeypatch)
    assert line["users"] == 40 and line["events"] > 0 and line["rerun_written"] == 0
    assert line["ingest_events_per_second"] > 0 and "bench/ingest.py --users 40" in line["command"]
    # The references apply the same rules: they keep what ingest keeps.
    assert line["plain_pyspark_kept"] == line["duckdb_kept"] == line["ingest_written"]
    assert line["ingest_over_plain_pyspark"] > 0 and line["ingest_over_duckdb"] > 0


@pytest.mark.slow
def test_the_sessionize_bench_finds_the_sessions_duckdb_finds(
    spark: SparkSession, bench_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bench itself raises when Spark's and DuckDB's session counts differ.
    [line] = _bench_in_process("sessionize.py", ["--events", "2000"], bench_results, monkeypatch)
    assert line["users"] == 40 and line["sessions"] > 0 and line["spark_over_duckdb"] > 0
    assert all(line[f"{stage}_events_per_second"] > 0 for stage in ("ingest", "sessionize", "features"))


@pytest.mark.slow
def test_the_score_bench_times_the_stage_beside_the_bare_model(
    spark: SparkSession, bench_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [line] = _bench_in_process("score.py", ["--users", "1200", "--base-users", "600"], bench_results, monkeypatch)
    assert line["users"] >= 1000  # the base view copied under renamed users
    assert all(line[f"{way}_users_per_second"] > 0 for way in ("stage", "udf_job", "one_process_job", "model_only", "serving_only"))
    # The bare call computes the drivers too, so it can only be slower than the serving signature alone.
    assert 0 < line["drivers_share_of_model_only"] < 1
    assert line["ratio_udf_job_to_model_only"] == pytest.approx(
        line["udf_job_users_per_second"] / line["model_only_users_per_second"], rel=0.01
    )


@pytest.mark.slow
def test_the_learning_curve_trains_once_per_size_on_one_shop(
    spark: SparkSession, bench_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _bench_in_process(
        "learning_curve.py", ["--users", "400", "--rows", "300", "--rows", "100", "--epochs", "1"], bench_results, monkeypatch
    )
    assert [line["rows_aimed"] for line in lines] == [100, 300]  # smallest first
    assert len({line["batch"] for line in lines}) == 1 and len({line["available_rows"] for line in lines}) == 1
    # The bound per date times the dates is at least the rows aimed at; the rows kept never exceed what there is.
    assert all(line["max_rows_per_as_of"] * line["as_of_dates"] >= line["rows_aimed"] for line in lines)
    assert all(0 < line["train_rows"] <= line["available_rows"] for line in lines)
    assert lines[0]["train_rows"] <= lines[1]["train_rows"]
    assert all(0 <= line["val_auc_30d"] <= 1 for line in lines)


@pytest.mark.slow
def test_the_train_bench_compares_two_horovod_ranks_with_one_process(bench_results: Path) -> None:
    # Its own process: Horovod forks a probe that crashes in a process whose TensorFlow has run.
    [line] = _bench("train.py", "--users", "600", "--epochs", "1", "--num-proc", "2", results=bench_results)
    assert (line["processes"], line["epochs"]) == (2, 1) and line["train_rows"] > 0
    assert line["horovod_samples_per_second"] > 0 and line["single_samples_per_second"] > 0


@pytest.mark.slow
def test_the_evaluation_bench_records_one_run_per_seed(bench_results: Path, tmp_path: Path) -> None:
    args = ["--shop", "demo", "--seeds", "1", "--root", str(tmp_path / "lakes"), "--label", "smoke"]
    args += ["--set", "generator.users=600", "--set", "train.epochs=1", "--set", "evaluate.folds=0"]
    [line] = _bench("evaluation.py", *args, results=bench_results)  # its own process: Horovod trains
    assert (line["shop"], line["label"], line["seed"]) == ("demo", "smoke", 0)
    methods = {row["method"] for row in line["comparison"]}
    assert {"model", "pareto_nbd", "lightgbm"} <= methods and "model_auc_30d" in line["metrics"]


@pytest.mark.slow
def test_the_pipeline_bench_and_the_benches_that_read_its_shop(
    spark: SparkSession, bench_results: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pipeline.py keeps a tiny shop; optimize.py compacts copies of its events, scale_table.py
    tabulates its lines, report_picture.py photographs its evaluation report."""
    keep = tmp_path / "kept"
    args = ["--users", "600", "--keep", str(keep), "--set", "train.epochs=1", "--set", "evaluate.folds=0"]
    lines = _bench("pipeline.py", *args, results=bench_results)  # its own process: Horovod trains
    assert [line["stage"] for line in lines] == list(STAGES) and all(line["seconds"] > 0 for line in lines)
    lake = keep / "users-600" / "lake"
    [optimized] = _bench_in_process("optimize.py", ["--lake", str(lake), "--lookup-users", "3"], bench_results, monkeypatch)
    assert optimized["bench"] == "optimize"
    [table] = _bench_in_process("scale_table.py", [], bench_results, monkeypatch)
    assert "600" in table["output"] and "ingest" in table["output"]
    [report] = sorted(lake.glob("_reports/evaluate-*/index.html"))
    picture = tmp_path / "report.png"
    _bench_in_process("report_picture.py", [str(report), "--out", str(picture)], bench_results, monkeypatch)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
