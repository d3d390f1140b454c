"""The whole pipeline through spark-submit against a real standalone cluster (a master and two
workers started from pyspark's own scripts): executors in their own JVMs, Python UDFs shipped to
them, Horovod ranks inside executor tasks, Delta from --jars. The lakehouse is given as a
file:/// URI, as a shared filesystem would be named on a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.spark import local_delta_jars

from spark_cluster import standalone_cluster

REPO = Path(__file__).resolve().parent.parent
LOCAL = str(REPO / "conf" / "local.yaml")


@pytest.mark.slow
def test_the_pipeline_through_spark_submit_on_a_standalone_cluster(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    overrides = [
        "--set",
        f"lakehouse=file://{tmp_path / 'lake'}",
        "--set",
        f"generator.output={tmp_path / 'raw'}",
        "--set",
        "train.epochs=1",
        "--set",
        "train.num_proc=2",
        "--set",
        "evaluate.folds=0",
    ]
    jars = ",".join(str(j) for j in local_delta_jars())
    with standalone_cluster(tmp_path / "cluster", workers=2, cores=1, memory="2g") as master:

        def submit(stage: str, *args: str) -> list[dict]:
            """The stage's script through spark-submit; the summaries it printed."""
            result = subprocess.run(
                [
                    str(bin_dir / "spark-submit"),
                    "--master",
                    master,
                    "--jars",
                    jars,
                    "--conf",
                    "spark.driver.memory=1g",
                    "--conf",
                    "spark.executor.memory=1g",
                    "--conf",
                    "spark.executor.cores=1",
                    "--conf",
                    "spark.sql.shuffle.partitions=4",
                    "--conf",
                    f"spark.pyspark.python={sys.executable}",
                    str(REPO / "jobs" / f"{stage}.py"),
                    "--conf",
                    LOCAL,
                    *overrides,
                    *args,
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=900,
            )
            assert result.returncode == 0, f"{stage}: {result.stdout[-1500:]}{result.stderr[-3000:]}"
            return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"stage"')]

        # Every stage in one application (one driver, executors started once), then one stage's
        # own script again: per-stage entry points work too, and a re-run replaces its output.
        generated, ingested, sessionized, featured, trained, scored, evaluated = submit("run", "--users", "300")
        (rescored,) = submit("score")

    assert [s["stage"] for s in (generated, ingested, sessionized, featured, trained, scored, evaluated)] == [
        "generate",
        "ingest",
        "sessionize",
        "features",
        "train",
        "score",
        "evaluate",
    ]
    assert ingested["counts"]["written"] == generated["counts"]["events"] == sessionized["counts"]["events"] > 0
    assert featured["counts"]["sequences"] > 0
    assert trained["metrics"]["processes"] == 2  # two Horovod ranks, one in each worker's executor
    assert trained["metrics"]["rank_weight_spread"] == 0.0
    assert scored["counts"]["scored"] == scored["counts"]["users"] > 0  # pandas UDF on executors
    assert rescored["counts"]["scored"] == scored["counts"]["scored"] and rescored["inputs"]["as_of_date"] == scored["inputs"]["as_of_date"]
    assert evaluated["inputs"]["out_of_time"] is True and Path(evaluated["outputs"]["report"]).is_file()
