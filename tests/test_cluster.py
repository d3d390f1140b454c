"""Training and scoring through spark-submit against a real standalone cluster (a master and a
worker of two cores, started from pyspark's own scripts), with the lakehouse on an S3 server: an
executor in its own JVM, Horovod ranks inside executor tasks reading petastorm's cache from the
bucket, the scoring UDF fetching the published model on the executor, Delta on s3a from --jars.

The stages before training are the shared shop's (generated and featurised in the test
process); the whole pipeline from raw events on a cluster is `bench/pipeline.py --master`.

The submission takes about two and a half minutes, so the suite starts it in the background as
soon as the shop is trained (conftest.py) and runs this test last, when it has finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from interest_decay.contract import Artifact
from interest_decay.jobs.common.storage import Storage

from object_store import S3Server
from shops import TrainedShop
from spark_cluster import NotStarted, Submission


@pytest.mark.slow
def test_train_and_score_through_spark_submit_on_a_standalone_cluster_with_the_lakehouse_on_s3(
    spark: SparkSession, shop: TrainedShop, s3: S3Server, cluster_run: tuple[Submission | NotStarted, Path]
) -> None:
    submission, work_dir = cluster_run
    result = submission.result(timeout_s=900)
    assert result.returncode == 0, f"{result.stdout[-1500:]}{result.stderr[-3000:]}"
    trained, scored = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"stage"')]

    assert (trained["stage"], scored["stage"]) == ("train", "score")
    assert trained["metrics"]["processes"] == 2  # two Horovod ranks, two tasks of the executor
    assert trained["metrics"]["rank_weight_spread"] == 0.0  # every rank ends with the same averaged weights
    assert (trained["counts"]["epochs_run"], trained["counts"]["averaged_epochs"]) == (1, 1)
    assert trained["metrics"]["val_auc_7d"] > 0.6
    latest = spark.read.format("delta").load(str(shop.root / "lakehouse" / "sequences")).agg({"as_of_date": "max"}).first()[0]
    users = spark.read.format("delta").load(str(shop.root / "lakehouse" / "sequences")).where(f"as_of_date = '{latest}'").count()
    assert scored["counts"]["scored"] == scored["counts"]["users"] == users  # the pandas UDF on the executors
    assert spark.read.format("delta").load(scored["outputs"]["scores"]).count() == users
    # The model is published in the bucket, the checkpoints mirrored there; on disk only the cache.
    storage = Storage(s3.uri("cluster-lake"), str(work_dir / "cwd" / "cache"))
    assert trained["outputs"]["model"] == storage.uri(Artifact.MODELS, trained["outputs"]["mlflow_run_id"])
    assert storage.is_published(trained["outputs"]["model"]) and storage.exists(trained["outputs"]["checkpoints"] + "/checkpoint")
    written = {p.relative_to(work_dir / "cwd").parts[0] for p in (work_dir / "cwd").rglob("*") if p.is_file()}
    assert written <= {"cache"}, written  # nothing in the folder it was started from but the cache
