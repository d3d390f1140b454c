from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from jobs.cli import app
from jobs.storage import Storage

from object_store import S3Server

REPO = Path(__file__).resolve().parent.parent
LOCAL = str(REPO / "conf" / "local.yaml")


def _summaries(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"stage"')]


def test_help_lists_the_stages() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for stage in ("generate", "ingest", "run"):
        assert stage in result.output


def test_stage_help_explains_the_options() -> None:
    result = CliRunner().invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0
    for text in ("--conf", "--set", "--input", "--preset", "events_quarantine"):
        assert text in result.output


def test_a_config_error_exits_2_and_names_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("generator:\n  userz: 5\n")
    result = CliRunner().invoke(app, ["generate", "--conf", str(conf)])
    assert result.exit_code == 2
    assert "generator.userz: unknown key" in result.output


@pytest.mark.parametrize("spelling", ["path", "file_uri"])
def test_generate_then_ingest_in_process(spark: SparkSession, tmp_path: Path, spelling: str) -> None:
    lakehouse = tmp_path / "lake" if spelling == "path" else f"file://{tmp_path / 'lake'}"
    common = ["--conf", LOCAL, "--set", f"lakehouse={lakehouse}"]
    generated = CliRunner().invoke(app, ["generate", *common, "--users", "40", "--days", "30", "--output", str(tmp_path / "raw")])
    assert generated.exit_code == 0, generated.output
    (gen,) = _summaries(generated.stdout)
    ingested = CliRunner().invoke(app, ["ingest", *common, "--input", gen["outputs"]["events"], "--preset", "generator"])
    assert ingested.exit_code == 0, ingested.output
    (ing,) = _summaries(ingested.stdout)
    assert ing["counts"]["read"] == ing["counts"]["written"] == gen["counts"]["events"]
    # Either spelling is the same table, at the same local folder.
    assert ing["outputs"]["events"] == str(tmp_path / "lake" / "events")
    assert spark.read.format("delta").load(str(tmp_path / "lake" / "events")).count() == gen["counts"]["events"]
    assert spark.sparkContext._jsc is not None  # the shared session is still alive


def test_a_bad_input_path_is_a_clear_error(spark: SparkSession, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", "--conf", LOCAL, "--set", f"lakehouse={tmp_path}", "--input", str(tmp_path / "none.xml")])
    assert result.exit_code == 2
    assert "cannot tell the format" in result.output


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error")]


def test_a_stage_error_is_one_line_naming_the_stage_and_the_fix(spark: SparkSession, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["score", "--conf", LOCAL, "--set", f"lakehouse={tmp_path / 'empty'}"])
    assert result.exit_code == 2
    assert _error_lines(result.output) == [
        f"error in score: no sequences table at {tmp_path / 'empty'}/sequences: run `interest-decay features` first"
    ]
    assert "Traceback" not in result.output


def test_a_spark_error_is_one_line_too_and_the_traceback_is_there_on_debug(spark: SparkSession, tmp_path: Path) -> None:
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"this is not parquet")
    command = ["ingest", "--conf", LOCAL, "--set", f"lakehouse={tmp_path / 'lake'}", "--input", str(broken), "--preset", "generator"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = _error_lines(result.output)
    assert line.startswith("error in ingest: Spark: ") and line.endswith("(the full traceback: --set log_level=DEBUG)")
    debug = CliRunner().invoke(app, [*command, "--set", "log_level=DEBUG"])
    assert debug.exit_code == 2 and "Traceback" in debug.output


@pytest.mark.slow
def test_console_script_runs_the_whole_pipeline_on_s3(spark: SparkSession, s3: S3Server, tmp_path: Path) -> None:
    """The README's pipeline command in its own process with the cluster profile, the lakehouse
    and the raw files on an S3 server (s3a:// for Spark, s3fs for the models and reports), the
    endpoint and credentials from the environment; spark-submit with a file:/// lakehouse:
    tests/test_cluster.py."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **s3.env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    overrides = [
        "--set",
        f"lakehouse={s3.uri('cli-lake')}",
        "--set",
        f"generator.output={s3.uri('cli-raw')}",
        "--set",
        f"storage.cache_dir={tmp_path / 'cache'}",
        # What spark-submit would give on a cluster: a master, Delta, small shuffles for 300 users.
        "--set",
        "spark.master=local[2]",
        "--set",
        "spark.delta_jars=local",
        "--set",
        "spark.conf.spark.driver.memory=1g",
        "--set",
        "spark.conf.spark.sql.shuffle.partitions=4",
        "--set",
        "generator.output_files=2",
        "--set",
        "train.until=2026-03-30",
        "--set",
        "train.epochs=1",
        "--set",
        "evaluate.folds=0",
    ]
    run = subprocess.run(
        [str(bin_dir / "interest-decay"), "run", "--conf", str(REPO / "conf" / "cluster.yaml"), "--users", "300", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    generated, ingested, sessionized, featured, trained, scored, evaluated = _summaries(run.stdout)
    assert ingested["counts"]["written"] == generated["counts"]["events"] > 0
    assert sessionized["counts"]["events"] == generated["counts"]["events"]
    assert featured["counts"]["sequences"] > 0
    assert trained["metrics"]["processes"] == 2
    assert scored["counts"]["scored"] == scored["counts"]["users"] > 0
    assert evaluated["inputs"]["out_of_time"] is True and evaluated["counts"]["methods"] == 10
    assert "[7/7] evaluate" in run.stderr
    assert f"evaluation report: {evaluated['outputs']['report']}" in run.stderr.replace("\n", "")
    # Every artifact is in the bucket, none in the working folder.
    storage = Storage(s3.uri("cli-lake"), str(tmp_path / "cache"))
    assert trained["outputs"]["model"] == storage.uri("_models", trained["outputs"]["mlflow_run_id"])
    assert storage.is_published(trained["outputs"]["model"]) and storage.exists(trained["outputs"]["checkpoints"] + "/checkpoint")
    assert evaluated["outputs"]["report"].startswith(s3.uri("cli-lake", "_reports")) and storage.exists(evaluated["outputs"]["report"])
    assert spark.read.format("delta").load(scored["outputs"]["scores"]).count() == scored["counts"]["scored"]
    # Outside the bucket only the local cache (fetched copies, MLflow's file store) holds files.
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.relative_to(tmp_path).parts[0] != "cache"] == []
