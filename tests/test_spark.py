from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from interest_decay.jobs.common.config import SparkSettings
from interest_decay.jobs.common.spark import (
    CACHE_COMPRESSION,
    DELTA_CATALOG,
    DELTA_EXTENSION,
    build_spark_session,
    local_delta_jars,
    persisted,
    session_conf,
    spark_session,
)


def test_session_has_delta_and_the_defaults(spark: SparkSession) -> None:
    assert spark.conf.get("spark.sql.extensions") == DELTA_EXTENSION
    assert spark.conf.get("spark.sql.catalog.spark_catalog") == DELTA_CATALOG
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.legacy.timeParserPolicy") == "CORRECTED"


def test_conf_from_the_profile_overrides_the_defaults(spark: SparkSession) -> None:
    # conftest sets 2 where the default would be 8.
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.sparkContext.master == "local[2]"


def test_an_active_session_is_reused_and_not_stopped(spark: SparkSession) -> None:
    with spark_session(SparkSettings(master="local[1]")) as same:
        assert same is spark
    assert build_spark_session(SparkSettings()) is spark
    assert spark.range(3).count() == 3


def test_delta_round_trip(spark: SparkSession, tmp_path: Path) -> None:
    frame = spark.createDataFrame([(1, "view"), (2, "cart")], "n INT, event_type STRING")
    frame.write.format("delta").save(str(tmp_path / "t"))
    assertDataFrameEqual(spark.read.format("delta").load(str(tmp_path / "t")), frame)


def test_missing_jars_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"delta-spark_2.12.*make setup"):
        local_delta_jars(tmp_path)


def test_setup_fetched_both_jars() -> None:
    names = sorted(jar.name for jar in local_delta_jars())
    assert names == ["delta-spark_2.12-3.2.1.jar", "delta-storage-3.2.1.jar"]


def test_settings_type_is_checked() -> None:
    with pytest.raises(TypeError, match="settings must be SparkSettings"):
        build_spark_session({"master": "local[1]"})  # type: ignore[arg-type]


@pytest.mark.parametrize("before", [None, "true"])
def test_persisted_holds_the_rows_and_leaves_the_cache_setting_as_it_was(spark: SparkSession, before: str | None) -> None:
    session = spark.newSession()  # its own SQL conf: the suite's session is left as it is
    if before is not None:
        session.conf.set(CACHE_COMPRESSION, before)
    frame = session.range(5).selectExpr("id", "id * 2 AS twice")
    with persisted(frame) as held:
        assert held.is_cached
        assert session.conf.get(CACHE_COMPRESSION, None) == before
        assertDataFrameEqual(held, session.createDataFrame([(i, 2 * i) for i in range(5)], "id BIGINT, twice BIGINT"))
    assert not held.is_cached
    assert session.conf.get(CACHE_COMPRESSION, None) == before


def test_session_conf_holds_for_the_block_and_is_put_back(spark: SparkSession) -> None:
    partitions = spark.conf.get("spark.sql.shuffle.partitions")  # the shared session's, left as it is
    with session_conf(spark, {"spark.sql.shuffle.partitions": "5", "parquet.enable.dictionary": "false"}):
        assert (spark.conf.get("spark.sql.shuffle.partitions"), spark.conf.get("parquet.enable.dictionary")) == ("5", "false")
    assert (spark.conf.get("spark.sql.shuffle.partitions"), spark.conf.get("parquet.enable.dictionary", None)) == (partitions, None)
    with pytest.raises(RuntimeError, match="inside"), session_conf(spark, {"parquet.enable.dictionary": "false"}):
        raise RuntimeError("inside")
    assert spark.conf.get("parquet.enable.dictionary", None) is None
    with pytest.raises(TypeError, match="settings must map strings to strings"), session_conf(spark, {"spark.sql.shuffle.partitions": 5}):
        pass
