"""Training and scoring through spark-submit against a real standalone cluster (a master and two
workers started from pyspark's own scripts), with the lakehouse on an S3 server: executors in
their own JVMs, Horovod ranks inside executor tasks reading petastorm's cache from the bucket,
the scoring UDF fetching the published model on each executor, Delta on s3a from --jars.

The stages before training are the shared shop's (generated and featurised in the test
process); the whole pipeline from raw events on a cluster is `bench/pipeline.py --master`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
from pyspark.sql import SparkSession

from jobs.spark import local_delta_jars, local_object_store_jars
from jobs.storage import Storage

from object_store import S3Server
from shops import LOCAL, TrainedShop
from spark_cluster import standalone_cluster


def _upload(shop: TrainedShop, tables: tuple[str, ...], lake: str) -> None:
    """Copy the shop's Delta ``tables`` (plain files with a relative log) into the bucket."""
    s3 = fsspec.filesystem("s3")
    for table in tables:
        s3.put(str(shop.root / "lakehouse" / table), f"{lake.removeprefix('s3a://')}/{table}", recursive=True)


@pytest.mark.slow
def test_train_and_score_through_spark_submit_on_a_standalone_cluster_with_the_lakehouse_on_s3(
    spark: SparkSession, shop: TrainedShop, s3: S3Server, tmp_path: Path
) -> None:
    lake = s3.uri("cluster-lake")
    _upload(shop, ("sequences", "category_interest"), lake)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **s3.env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    settings = [
        f"lakehouse={lake}",
        f"storage.cache_dir={tmp_path / 'cache'}",
        "train.mode=horovod",
        "train.num_proc=2",
        "train.epochs=1",
        "train.average_from_epoch=1",
        "train.validation=users",
        "train.until=2026-03-02",  # fewer as-of dates than the shop trained on: a smaller, quicker run
        "train.batch_size=512",
        "train.experiment=cluster",
        "score.arrow_batch_size=200",
    ]
    jars = ",".join(str(j) for j in [*local_delta_jars(), *local_object_store_jars()])
    with standalone_cluster(tmp_path / "cluster", workers=2, cores=1, memory="2g") as master:
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
                str(Path(LOCAL).parent.parent / "jobs" / "run.py"),
                "--conf",
                str(LOCAL),
                *[arg for setting in settings for arg in ("--set", setting)],
                "--from",
                "train",
                "--to",
                "score",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=900,
        )
    assert result.returncode == 0, f"{result.stdout[-1500:]}{result.stderr[-3000:]}"
    trained, scored = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"stage"')]

    assert (trained["stage"], scored["stage"]) == ("train", "score")
    assert trained["metrics"]["processes"] == 2  # two Horovod ranks, one in each worker's executor
    assert trained["metrics"]["rank_weight_spread"] == 0.0  # every rank ends with the same averaged weights
    assert (trained["counts"]["epochs_run"], trained["counts"]["averaged_epochs"]) == (1, 1)
    assert trained["metrics"]["val_auc_7d"] > 0.6
    latest = spark.read.format("delta").load(str(shop.root / "lakehouse" / "sequences")).agg({"as_of_date": "max"}).first()[0]
    users = spark.read.format("delta").load(str(shop.root / "lakehouse" / "sequences")).where(f"as_of_date = '{latest}'").count()
    assert scored["counts"]["scored"] == scored["counts"]["users"] == users  # the pandas UDF on the executors
    assert spark.read.format("delta").load(scored["outputs"]["scores"]).count() == users
    # The model is published in the bucket, the checkpoints mirrored there; on disk only the cache.
    storage = Storage(lake, str(tmp_path / "cache"))
    assert trained["outputs"]["model"] == storage.uri("_models", trained["outputs"]["mlflow_run_id"])
    assert storage.is_published(trained["outputs"]["model"]) and storage.exists(trained["outputs"]["checkpoints"] + "/checkpoint")
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"cache", "cluster"}, written
