"""The one place a SparkSession is made.

Precedence of Spark settings, strongest first: what spark-submit was given (``--master``,
``--conf``, ``--packages``), then ``spark.conf`` in the profile, then the defaults below.
A session that already exists (Databricks, a notebook, the test suite) is used as it is.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark import SparkConf, StorageLevel
from pyspark.context import SparkContext
from pyspark.sql import DataFrame, SparkSession

from interest_decay.jobs.common.config import SparkSettings

log = logging.getLogger(__name__)

# Spark's log4j2 configuration when spark.quiet_logs is on (see SparkSettings.quiet_logs).
QUIET_LOG4J = Path(__file__).resolve().parent / "log4j2-quiet.properties"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
JARS_DIR_ENV = "INTEREST_DECAY_JARS_DIR"

# Defaults that make local runs correct and quiet; every one can be overridden.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    # Unparseable timestamps become null (and go to quarantine) instead of raising.
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
}


def default_jars_dir() -> Path:
    """Where setup puts the Delta jars: $INTEREST_DECAY_JARS_DIR or <repo>/.jars."""
    env = os.environ.get(JARS_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".jars"  # jobs/common/spark.py -> the repository


def local_delta_jars(jars_dir: str | Path | None = None) -> list[Path]:
    """The Delta jars in ``jars_dir``; a clear error when setup has not fetched them."""
    folder = Path(jars_dir) if jars_dir else default_jars_dir()
    jars = sorted(folder.glob("delta-spark_*.jar")) + sorted(folder.glob("delta-storage-*.jar"))
    if len(jars) != 2:
        raise FileNotFoundError(
            f"expected one delta-spark_2.12 and one delta-storage jar in {folder}, found {[j.name for j in jars]}: "
            f"run `make setup`, set {JARS_DIR_ENV}, or set spark.delta_jars: provided when the cluster supplies Delta"
        )
    return jars


_DEFAULT_SOURCES = ("core-default.xml", "Set by Spark to default values")


def local_object_store_jars(jars_dir: str | Path | None = None) -> list[Path]:
    """hadoop-aws and its AWS SDK bundle from ``jars_dir`` when setup fetched them (for ``s3a://``)."""
    folder = Path(jars_dir) if jars_dir else default_jars_dir()
    return sorted(folder.glob("hadoop-aws-*.jar")) + sorted(folder.glob("aws-java-sdk-bundle-*.jar"))


def configure_object_store(spark: SparkSession) -> None:
    """Point Hadoop's ``s3a://`` at the same store and credentials Python's filesystems use.

    Reads the standard AWS variables of this process: AWS_ENDPOINT_URL (an S3-compatible server
    such as MinIO; path-style addressing, TLS as its scheme says) and AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN). A key set by the Spark conf
    (``spark.hadoop.fs.s3a.*``) or a Hadoop site file is left as it is. Nothing is set when the variables are absent,
    so instance profiles and cluster-wide settings keep working.
    """
    wanted: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        wanted["fs.s3a.endpoint"] = endpoint
        wanted["fs.s3a.path.style.access"] = "true"
        wanted["fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https:")).lower()
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        wanted["fs.s3a.access.key"] = os.environ["AWS_ACCESS_KEY_ID"]
        wanted["fs.s3a.secret.key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            wanted["fs.s3a.session.token"] = os.environ["AWS_SESSION_TOKEN"]
            wanted["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
    if os.environ.get("AWS_REGION"):
        wanted["fs.s3a.endpoint.region"] = os.environ["AWS_REGION"]
    if not wanted:
        return
    try:
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    except Exception:  # noqa: BLE001 - Spark Connect and shared Databricks clusters expose no JVM
        log.debug("no Hadoop configuration to set s3a options on")
        return
    for key, value in wanted.items():
        # Defaults (Hadoop's core-default.xml, Spark's own s3a endpoint) give way; a site file or
        # spark.hadoop.* wins.
        sources = hadoop.getPropertySources(key)
        if sources is None or all(str(source) in _DEFAULT_SOURCES for source in sources):
            hadoop.set(key, value)
    log.debug("s3a options from the environment: %s", sorted(wanted))


def _submitted_conf() -> dict[str, str]:
    """Settings given to spark-submit, when this process was started by spark-submit."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    SparkContext._ensure_initialized()  # connects to the JVM spark-submit already started
    return dict(SparkConf().getAll())


def build_spark_session(settings: SparkSettings) -> SparkSession:
    """Return the active SparkSession, or build one with Delta Lake from ``settings``."""
    if not isinstance(settings, SparkSettings):
        raise TypeError(f"settings must be SparkSettings, got {type(settings).__name__}")
    active = SparkSession.getActiveSession()
    if active is not None:
        configure_object_store(active)
        return active

    submitted = _submitted_conf()
    conf: dict[str, str] = dict(DEFAULT_CONF)
    conf["spark.sql.extensions"] = DELTA_EXTENSION
    conf["spark.sql.catalog.spark_catalog"] = DELTA_CATALOG
    delta_provided = settings.delta_jars == "provided" or any(
        "delta" in submitted.get(key, "") for key in ("spark.jars.packages", "spark.jars")
    )
    if not delta_provided:
        if submitted:
            raise RuntimeError(
                "started by spark-submit without Delta Lake: pass --packages io.delta:delta-spark_2.12:3.2.1 "
                "(or --jars with the jars in .jars/), or set spark.delta_jars: provided"
            )
        jars = local_delta_jars(settings.jars_dir) + local_object_store_jars(settings.jars_dir)
        conf["spark.jars"] = ",".join(str(j) for j in jars)
    conf.update({key: _spark_value(value) for key, value in settings.conf.items()})
    if settings.quiet_logs and not submitted and "log4j" not in conf.get("spark.driver.extraJavaOptions", ""):
        options = conf.get("spark.driver.extraJavaOptions", "")
        conf["spark.driver.extraJavaOptions"] = f"{options} -Dlog4j2.configurationFile=file:{QUIET_LOG4J}".strip()

    master = submitted.get("spark.master", settings.master)
    python = conf.get("spark.pyspark.python")
    if master.startswith("local") or python:
        # Python workers run this interpreter (with pyarrow), or the one the profile names, not
        # whatever python3 is on PATH. PySpark reads it from this variable when the context
        # starts; spark-submit sets it from spark.pyspark.python, a session started here does not.
        os.environ.setdefault("PYSPARK_PYTHON", python or sys.executable)

    builder = SparkSession.builder.appName(settings.app_name)
    if "spark.master" not in submitted:
        builder = builder.master(settings.master)
    for key, value in conf.items():
        if key not in submitted:
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    configure_object_store(spark)
    if not settings.quiet_logs:
        spark.sparkContext.setLogLevel("WARN")
    log.info("spark session: master=%s, version=%s", spark.sparkContext.master, spark.version)
    return spark


def _spark_value(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@contextmanager
def spark_session(settings: SparkSettings) -> Iterator[SparkSession]:
    """The session for one stage; stopped at the end only if this call created it."""
    existed = SparkSession.getActiveSession() is not None
    spark = build_spark_session(settings)
    try:
        yield spark
    finally:
        if not existed:
            spark.stop()


CACHE_COMPRESSION = "spark.sql.inMemoryColumnarStorage.compressed"


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """``settings`` on the session for the block, then as they were (unset where they were unset).

    A key Spark does not know (``parquet.enable.dictionary``) reaches the Hadoop configuration of
    the writes started in the block. The settings are the session's: a job running in another
    thread of the same session meanwhile sees them too."""
    if not isinstance(settings, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in settings.items()):
        raise TypeError(f"settings must map strings to strings, got {settings!r}")
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def cache_now(frame: DataFrame, compressed: bool = False) -> DataFrame:
    """``frame`` persisted in memory (spilling to disk) and built now; the caller unpersists it.

    Uncompressed unless asked: on this project's 2-core machine, building Spark's compressed
    columnar cache of 5M validated events took 22.8 s and the uncompressed one 12.5 s, more than
    the pass that computed them (the column encoders, not the data, were the cost). The setting
    is read when the cache is built, so it is set only for that moment; a cache that outgrows
    memory spills to disk either way."""
    spark = frame.sparkSession
    cached = frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with session_conf(spark, {CACHE_COMPRESSION: str(compressed).lower()}):
            cached.count()
    except BaseException:
        cached.unpersist()
        raise
    return cached


@contextmanager
def persisted(frame: DataFrame, compressed: bool = False) -> Iterator[DataFrame]:
    """``frame`` cached and built (:func:`cache_now`) for the block, unpersisted after it."""
    cached = cache_now(frame, compressed)
    try:
        yield cached
    finally:
        cached.unpersist()
