"""The storage layer on a local disk and on a real S3 server (moto), and Spark's s3a:// beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from interest_decay.contract import Artifact, Table
from interest_decay.jobs.common.config import load_settings
from interest_decay.jobs.common.runs import check_log_store
from interest_decay.jobs.common.spark import build_spark_session
from interest_decay.jobs.common.storage import PUBLISHED_MARKER, Storage, list_input_files, python_uri

from object_store import S3Server


def test_uris_are_joined_with_slashes_never_pathlib(tmp_path: Path) -> None:
    assert Storage("s3a://bucket/lake/", str(tmp_path)).uri(Artifact.MODELS, "run-1") == "s3a://bucket/lake/_models/run-1"
    assert Storage(f"file://{tmp_path}/lake", str(tmp_path)).uri(Artifact.REPORTS) == f"{tmp_path}/lake/_reports"
    assert not Storage("s3a://bucket/lake", str(tmp_path)).is_local and Storage(str(tmp_path), str(tmp_path)).is_local
    assert python_uri("dbfs:/Volumes/main/shop/lake") == "/Volumes/main/shop/lake"
    assert python_uri("dbfs:/tmp/lake") == "/dbfs/tmp/lake"
    with pytest.raises(TypeError, match="root"):
        Storage("", str(tmp_path))


def test_publishing_on_a_local_disk_is_all_or_nothing(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "lake"), str(tmp_path / "cache"))
    target = storage.uri(Artifact.MODELS, "run-1")
    with pytest.raises(RuntimeError, match="crashed"), storage.publishing(target) as folder:
        (folder / "weights").write_text("half")
        raise RuntimeError("crashed while saving")
    assert not Path(target).exists() and list((tmp_path / "lake" / "_models").iterdir()) == []  # no staging left behind

    with storage.publishing(target) as folder:
        (folder / "weights").write_text("v1")
    with storage.publishing(target) as folder:  # a retry of the same run replaces the first copy
        (folder / "weights").write_text("v2")
    assert sorted(p.name for p in Path(target).iterdir()) == [PUBLISHED_MARKER, "weights"]
    assert (Path(target) / "weights").read_text() == "v2"
    assert storage.fetch(target) == Path(target) and storage.is_published(target)


def test_input_files_leave_out_hidden_and_underscore_files(tmp_path: Path) -> None:
    (tmp_path / "raw" / "day=1").mkdir(parents=True)
    for name in ("day=1/a.csv", "b.csv", "_SUCCESS", ".b.csv.crc"):
        (tmp_path / "raw" / name).write_text("x")
    assert [Path(f).name for f in list_input_files(str(tmp_path / "raw"))] == ["b.csv", "a.csv"]
    assert [Path(f).name for f in list_input_files(f"file://{tmp_path}/raw/*.csv")] == ["b.csv"]


def test_publish_fetch_and_mirror_on_s3(s3: S3Server, tmp_path: Path) -> None:
    storage = Storage(s3.uri("storage-test"), str(tmp_path / "cache"))
    model = storage.uri(Artifact.MODELS, "run-1")
    with pytest.raises(FileNotFoundError, match=PUBLISHED_MARKER):
        storage.fetch(model)
    with storage.publishing(model) as folder:
        (folder / "variables").mkdir()
        (folder / "variables" / "data").write_bytes(b"\x00\x01")
        (folder / "interest_decay.json").write_text("{}")
    assert storage.is_published(model)
    fetched = storage.fetch(model)
    assert sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*") if p.is_file()) == [
        PUBLISHED_MARKER,
        "interest_decay.json",
        "variables/data",
    ]
    assert (fetched / "variables" / "data").read_bytes() == b"\x00\x01"

    # Checkpoints: a second working copy (the next run, another rank) starts from what was synced.
    checkpoints = storage.uri(Artifact.CHECKPOINTS, "abc")
    with storage.working_folder(checkpoints) as first:
        (first.local / "ckpt-1.index").write_text("1")
        (first.local / "checkpoint").write_text("ckpt-1")
        first.sync()
        (first.local / "checkpoint").write_text("ckpt-2")  # uploaded when the block ends
    with storage.working_folder(checkpoints) as second:
        assert (second.local / "ckpt-1.index").read_text() == "1"
        assert (second.local / "checkpoint").read_text() == "ckpt-2"
    storage.remove(checkpoints)
    assert not storage.exists(checkpoints)


def test_spark_reads_and_writes_delta_on_s3a(spark: SparkSession, s3: S3Server, tmp_path: Path) -> None:
    settings = load_settings(None, [f"lakehouse={s3.uri('spark-test')}"])
    session = build_spark_session(settings.spark)  # the shared session, which the s3 fixture pointed at the server
    frame = session.createDataFrame([("u1", 3), ("u2", 5)], "user_id STRING, sessions INT")
    frame.write.format("delta").mode("overwrite").save(settings.table_path(Table.EVENTS))
    assertDataFrameEqual(session.read.format("delta").load(settings.table_path(Table.EVENTS)), frame)
    assert Storage.for_settings(settings).exists(settings.table_path(Table.EVENTS) + "/_delta_log")


def test_an_s3_lakehouse_without_the_multi_writer_log_store_is_refused(spark: SparkSession) -> None:
    """Delta's default S3 log store can lose a commit when two drivers write at once: a stage on
    an s3a:// lakehouse refuses to start unless the DynamoDB log store is configured or the conf
    says there is one writer."""
    settings = load_settings(None, ["lakehouse=s3a://bucket/lake"])
    with pytest.raises(
        ValueError, match=r"set spark.delta.logStore.s3a.impl=io.delta.storage.S3DynamoDBLogStore .* or storage.single_writer: true"
    ):
        check_log_store(spark, settings)
    check_log_store(spark, load_settings(None, ["lakehouse=s3a://bucket/lake", "storage.single_writer=true"]))
    check_log_store(spark, load_settings(None, ["lakehouse=/tmp/lake"]))  # a local lakehouse: Delta's own log store is safe
    spark.conf.set("spark.delta.logStore.s3a.impl", "io.delta.storage.S3DynamoDBLogStore")
    try:
        check_log_store(spark, settings)
    finally:
        spark.conf.unset("spark.delta.logStore.s3a.impl")
