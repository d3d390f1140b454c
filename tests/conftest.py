"""One local SparkSession with Delta Lake for the whole suite (local[2], UI off, few partitions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.config import Settings, load_settings
from jobs.spark import build_spark_session, configure_object_store

from object_store import S3Server, s3_server
from shops import SHOP, TrainedShop, build_shop, shop_settings

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
