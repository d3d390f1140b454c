from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from interest_decay.cli import app

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


def test_run_refuses_an_unknown_or_backwards_part_of_the_pipeline() -> None:
    unknown = CliRunner().invoke(app, ["run", "--conf", LOCAL, "--from", "trian"])
    assert unknown.exit_code == 2 and "'trian' is not a stage" in unknown.output
    backwards = CliRunner().invoke(app, ["run", "--conf", LOCAL, "--from", "score", "--to", "train"])
    assert backwards.exit_code == 2 and "score comes after train" in backwards.output
