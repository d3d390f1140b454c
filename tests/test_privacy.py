"""With pseudonymisation on, a whole run keeps no raw user id: the pipeline run through the CLI
in its own process, on a generated shop, and everything it wrote grepped for the raw ids read
from the generated files: every file under the lakehouse (Delta logs and data, the MLflow
store with the report and the model), every row of every table, the folder it ran in, and its
logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from interest_decay.contract import Artifact, Table

REPO = Path(__file__).resolve().parent.parent
GENERATED_ID = re.compile(rb"u\d{8}")  # the generator's ids: u00000000, u00000001, ...


def _raw_ids_in(data: bytes, raw_ids: set[bytes]) -> set[bytes]:
    return set(GENERATED_ID.findall(data)) & raw_ids


@pytest.mark.slow
def test_a_pseudonymised_run_keeps_no_raw_user_id_in_any_table_report_log_or_mlflow_artifact(spark: SparkSession, tmp_path: Path) -> None:
    lakehouse, generated, cwd = tmp_path / "lakehouse", tmp_path / "generated", tmp_path / "cwd"
    cwd.mkdir()
    overrides = [
        f"lakehouse={lakehouse}",
        f"generator.output={generated}",
        "generator.users=300",
        "ingest.pseudonymize_user_ids=true",
        "spark.master=local[2]",
        "spark.conf.spark.driver.memory=2g",
        "spark.conf.spark.sql.shuffle.partitions=2",
        "train.mode=single",
        "train.epochs=1",
        "evaluate.folds=0",
    ]
    command = [str(Path(sys.executable).parent / "interest-decay"), "run", "--conf", str(REPO / "conf" / "local.yaml")]
    command += [arg for override in overrides for arg in ("--set", override)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "INTEREST_DECAY_PSEUDONYM_KEY": "a-test-key-not-a-secret"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:].decode(errors="replace")
    stages = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith('{"stage"')]
    assert [s["stage"] for s in stages] == ["generate", "ingest", "sessionize", "features", "train", "score", "evaluate"]
    # The truth table carries the same pseudonyms as the events, so the evaluation still compares
    # every user's half-life with the generator's.
    assert "interest_half_life_spearman_vs_truth" in stages[-1]["metrics"]

    raw_ids = {f"u{i:08d}".encode() for i in range(300)}  # every id the generator gave
    events = spark.read.parquet(str(generated / "events")).select("user_id").distinct().collect()
    assert {r["user_id"].encode() for r in events} <= raw_ids and len(events) > 250

    leaks = {"stdout": _raw_ids_in(done.stdout, raw_ids), "stderr": _raw_ids_in(done.stderr, raw_ids)}
    written = [p for root in (lakehouse, cwd) for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in written) and any(Artifact.MLFLOW in p.parts for p in written)
    leaks.update({str(p): _raw_ids_in(p.read_bytes(), raw_ids) for p in written})
    # Compressed Parquet pages need not show their strings: every table is read row by row too.
    tables = sorted({p.parent for p in lakehouse.rglob("_delta_log")})
    assert {t.name for t in tables} >= set(Table) - {Table.SCORES_LIVE}
    for table in tables:
        rows = "\n".join(json.dumps(r.asDict(recursive=True), default=str) for r in spark.read.format("delta").load(str(table)).collect())
        leaks[f"rows of {table.name}"] = _raw_ids_in(rows.encode(), raw_ids)
    assert {where: found for where, found in leaks.items() if found} == {}
