"""One local SparkSession with Delta Lake for the whole suite (local[2], UI off, few partitions)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.spark import build_spark_session, configure_object_store

from object_store import S3Server, s3_server
from shops import SHOP, TrainedShop, build_shop, shop_settings
from spark_cluster import NotStarted, Submission, train_and_score_on_a_cluster

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> SparkSession:
    warehouse = tmp_path_factory.mktemp("warehouse")
    settings = load_settings(
        REPO / "conf" / "local.yaml",
        [
            "spark.master=local[2]",
            "spark.app_name=interest-decay-tests",
            "spark.conf.spark.driver.memory=3g",
            "spark.conf.spark.sql.shuffle.partitions=2",
            "spark.conf.spark.default.parallelism=2",
            "spark.conf.spark.ui.enabled=false",
            f"spark.conf.spark.sql.warehouse.dir={warehouse}",
            "spark.conf.spark.databricks.delta.snapshotPartitions=2",
        ],
    )
    session = build_spark_session(settings.spark)
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults with the lakehouse and generated files in a fresh temporary folder."""
    return load_settings(
        REPO / "conf" / "local.yaml",
        [f"lakehouse={tmp_path / 'lakehouse'}", f"generator.output={tmp_path / 'generated'}", "generator.output_files=2"],
    )


@pytest.fixture(scope="session")
def s3(spark: SparkSession) -> S3Server:
    """One local S3 server for the suite (Hadoop caches its s3a clients per bucket, so one
    endpoint), with the shared session's s3a pointed at it."""
    with s3_server() as server:
        configure_object_store(spark)
        yield server


@pytest.fixture(scope="session")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> TrainedShop:
    """One generated shop for the suite (tests/shops.py: 1,500 users), built and trained once."""
    root = tmp_path_factory.mktemp("shop")
    trained = build_shop(spark, shop_settings(root, *SHOP), trained=True)
    return TrainedShop(root, trained)


@pytest.fixture(scope="session")
def cluster_run(
    shop: TrainedShop, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Submission | NotStarted, Path]]:
    """test_cluster.py's spark-submit of the shop's train and score on a standalone cluster,
    running in the background, and its work folder.

    It takes about two and a half minutes, so the hook below starts it with the first test that
    uses the shop and runs test_cluster.py last."""
    work_dir = tmp_path_factory.mktemp("cluster_run")
    with contextlib.ExitStack() as stack:
        try:
            submission = stack.enter_context(train_and_score_on_a_cluster(shop, s3, work_dir))
        except Exception as exc:  # noqa: BLE001 -- any failure to start is reported by the cluster test, not by whichever test started it
            submission = NotStarted(exc)
        yield submission, work_dir


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they will
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that wait for ``cluster_run`` to the end, and start it early."""
    waiting = [item for item in items if "cluster_run" in getattr(item, "fixturenames", ())]
    if not waiting:
        return
    items[:] = [item for item in items if item not in waiting] + waiting
    first = next(item for item in items if "shop" in item.fixturenames)
    if "cluster_run" not in first.fixturenames:
        first.fixturenames.append("cluster_run")
