"""Bronze ingest: raw CSV / JSON / Parquet / text files to the ``events`` Delta table.

Every row read ends in exactly one place: ``events`` (new), already in ``events`` from an
earlier run of the same file, or ``events_quarantine`` with its reason. The run summary
reconciles the three: ``read = new + already_ingested + quarantined``.

    spark-submit jobs/ingest.py --conf conf/local.yaml --input data/generated/events --preset generator
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import PurePosixPath

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest_decay.contract import REQUIRED_EVENT_COLUMNS, SourceMapping, Table
from interest_decay.features.events import (
    PRESETS,
    classify_against_table,
    mark_batch_duplicates,
    new_events,
    normalize_events,
    pseudonymize_user_ids,
    quarantine_rows,
    source_columns,
    validate_events,
)
from interest_decay.jobs.common.config import IngestSettings, Settings
from interest_decay.jobs.common.runs import RunSummary, stage_run
from interest_decay.jobs.common.storage import list_input_files
from interest_decay.jobs.common.tables import EVENTS_SCHEMA, QUARANTINE_SCHEMA, ensure_table, insert_new, latest_version

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet", ".txt": "text"}


def resolve_mapping(settings: IngestSettings, preset: str | None = None) -> tuple[str, SourceMapping]:
    """The source mapping to use: ``preset`` (argument, then conf), else ``ingest.mapping``."""
    name = preset or settings.preset
    if name is not None:
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return name, PRESETS[name]
    if settings.mapping is None:
        raise ValueError("set ingest.preset or ingest.mapping (a column mapping) in the conf")
    return "mapping", settings.mapping


def detect_format(path: str, mapping: SourceMapping, fmt: str = "auto") -> str:
    """``fmt`` unless it is ``auto``: then from the file suffix of ``path`` or the files it holds."""
    if fmt != "auto":
        return fmt
    if mapping.delimiter == "whitespace":
        return "text"
    suffixes = {_SUFFIX_FORMATS.get(PurePosixPath(f).suffix.lower()) for f in list_input_files(path)} - {None}
    if len(suffixes) != 1:
        raise ValueError(
            f"cannot tell the format of {path!r} from its file names (found {sorted(suffixes) or 'none'}); "
            "set ingest.format to csv, json, parquet or text"
        )
    return suffixes.pop()


def json_columns(spark: SparkSession, path: str, sample_lines: int = 1000) -> list[str] | None:
    """The keys of the JSON objects in the first ``sample_lines`` lines of ``path`` (JSON Lines),
    or None when none of them parses (every row will be quarantined as malformed anyway)."""
    keys: set[str] = set()
    parsed = False
    for row in spark.read.text(path).limit(sample_lines).collect():
        try:
            record = json.loads(row["value"])
        except ValueError:
            continue
        if isinstance(record, dict):
            parsed = True
            keys.update(record)
    return sorted(keys) if parsed else None


def absent_source_columns(mapping: SourceMapping, available: list[str], path: str) -> list[str]:
    """The mapping's source columns that ``available`` lacks, to be read as nulls.

    A source whose file lacks an optional column (product_id, category, price, event_id) still
    loads, with nulls there; one that lacks every source name of a required column raises
    ValueError naming it, before anything is written."""
    required = [c for c in REQUIRED_EVENT_COLUMNS if not (c == "event_type" and mapping.constant_event_type)]
    absent: list[str] = []
    for canonical, spec in mapping.columns.items():
        names = spec.split("|")
        if canonical in required and not any(name in available for name in names):
            raise ValueError(
                f"{path}: the required column {canonical} (source column {' or '.join(names)}) is missing; "
                f"the input has {available}: fix the file or the source mapping (ingest.source.columns)"
            )
        absent += [name for name in names if name not in available and name not in absent]
    if absent:
        log.warning("%s: source column(s) %s are absent and read as empty", path, absent)
    extra = [name for name in available if name not in source_columns(mapping) and name != CORRUPT]
    if extra:
        log.info(
            "%s: column(s) %s are not in the source mapping (ingest.extra_columns: ignored, or kept in the quarantine's raw JSON)",
            path,
            extra,
        )
    return absent


def read_raw(spark: SparkSession, path: str, mapping: SourceMapping, fmt: str, keep_extra: bool = False) -> DataFrame:
    """Every source column as a string (null where the input lacks an optional one), plus
    ``_corrupt_record``, ``_source_file`` and ``_row``; with ``keep_extra``, a CSV or Parquet
    file's other columns too (as strings, after the mapped ones), for the quarantine's raw JSON."""
    columns = source_columns(mapping)
    strings = T.StructType([T.StructField(c, T.StringType()) for c in columns])
    absent: list[str] = []
    extra: list[str] = []
    if fmt == "csv":
        header = spark.read.option("header", mapping.header).option("sep", mapping.delimiter).csv(path).columns
        absent = absent_source_columns(mapping, header, path)
        extra = [c for c in header if c not in columns] if keep_extra else []
        schema = T.StructType([T.StructField(c, T.StringType()) for c in header] + [T.StructField(CORRUPT, T.StringType())])
        frame = (
            spark.read.schema(schema)
            .option("header", mapping.header)
            .option("sep", mapping.delimiter)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .csv(path)
        )
    elif fmt == "json":
        present = json_columns(spark, path)
        absent = absent_source_columns(mapping, present, path) if present is not None else []
        schema = T.StructType(list(strings.fields) + [T.StructField(CORRUPT, T.StringType())])
        frame = spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT).json(path)
    elif fmt == "parquet":
        frame = spark.read.parquet(path)
        absent = absent_source_columns(mapping, frame.columns, path)
        extra = [c for c in frame.columns if c not in columns] if keep_extra else []
        frame = frame.select(
            *[F.col(f"`{c}`").cast("string").alias(c) for c in [*columns, *extra] if c not in absent],
            F.lit(None).cast("string").alias(CORRUPT),
        )
    elif fmt == "text":
        frame = _read_whitespace_text(spark, path, columns, mapping.header)
    else:
        raise ValueError(f"format must be csv, json, parquet or text, got {fmt!r}")
    return frame.select(
        *[F.lit(None).cast("string").alias(c) if c in absent else F.col(f"`{c}`") for c in columns],
        *[F.col(f"`{c}`") for c in extra],
        F.col(CORRUPT),
        F.col("_metadata.file_path").alias("_source_file"),
        F.monotonically_increasing_id().alias("_row"),
    )


def _read_whitespace_text(spark: SparkSession, path: str, columns: list[str], header: bool) -> DataFrame:
    """Whitespace-separated text (CDNOW_master.txt): fields by position, header lines skipped."""
    lines = spark.read.text(path).select("*", "_metadata")
    value = F.trim(F.regexp_replace("value", "\r", ""))
    tokens = F.split(value, r"\s+")
    lines = lines.select(value.alias("line"), tokens.alias("tokens"), "_metadata").where(F.col("line") != "")
    if header:
        first = lines.first()
        if first is None:
            raise ValueError(f"{path}: no lines to read")
        names = first["tokens"]
        lines = lines.where(F.col("line") != first["line"])
    else:
        names = columns
    absent = [c for c in columns if c not in names]
    if absent:
        raise ValueError(f"{path}: columns {absent} are not in the header {names}")
    well_formed = F.size("tokens") == len(names)
    fields = [F.when(well_formed, F.col("tokens")[names.index(c)]).alias(c) for c in columns]
    return lines.select(*fields, F.when(~well_formed, F.col("line")).alias(CORRUPT), "_metadata")


def pseudonym_key(settings: IngestSettings) -> bytes:
    """The HMAC key from the environment variable the conf names; never logged."""
    key = os.environ.get(settings.pseudonymize_key_env, "")
    if not key:
        raise ValueError(
            f"ingest.pseudonymize_user_ids is on but the environment variable {settings.pseudonymize_key_env} is empty or unset"
        )
    return key.encode("utf-8")


def validated_events(spark: SparkSession, settings: Settings, path: str, mapping: SourceMapping, fmt: str, now: dt.datetime) -> DataFrame:
    """The raw rows of ``path`` as canonical events, each with its status: valid, a batch
    duplicate, or the reason it goes to quarantine."""
    conf = settings.ingest
    events = normalize_events(read_raw(spark, path, mapping, fmt, keep_extra=conf.extra_columns == "keep"), mapping)
    if conf.pseudonymize_user_ids:
        events = pseudonymize_user_ids(events, pseudonym_key(conf))
    validated = validate_events(events, now=now, future_tolerance_hours=conf.future_tolerance_hours, min_event_time=conf.min_event_time)
    return mark_batch_duplicates(validated)


def write_events(spark: SparkSession, settings: Settings, events: DataFrame, summary: RunSummary) -> dict[str, int]:
    """Insert the new events into ``events`` and the bad rows into ``events_quarantine``, each
    stamped with the run; the counts by outcome (read = written + already ingested + quarantined)."""
    events_path = settings.table_path(Table.EVENTS)
    events_table = ensure_table(spark, events_path, EVENTS_SCHEMA, partitioned_by=["event_date"], change_feed=True)
    quarantine_table = ensure_table(spark, settings.table_path(Table.QUARANTINE), QUARANTINE_SCHEMA)
    # Pinned to the version before this run's MERGE, so a recomputed partition classifies alike.
    version = latest_version(spark, events_path)
    existing = spark.read.format("delta").option("versionAsOf", version).load(events_path).select("event_id", "source_file")
    classified = classify_against_table(events, existing).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_status = {row["status"]: row["count"] for row in classified.groupBy("status").count().collect()}
        read = sum(by_status.values())
        expected_new = by_status.get("new", 0)
        already = by_status.get("already_ingested", 0)
        quarantined = read - expected_new - already
        stamp = [F.lit(summary.run_id).alias("run_id"), F.lit(summary.started_at).cast("timestamp").alias("ingested_at")]
        written = insert_new(events_table, new_events(classified).select("*", *stamp), ["event_date", "event_id"]) if expected_new else 0
        quarantine_written = (
            insert_new(quarantine_table, quarantine_rows(classified).select("*", *stamp), ["quarantine_id"]) if quarantined else 0
        )
    finally:
        classified.unpersist()
    if written != expected_new:
        raise RuntimeError(f"events: expected to insert {expected_new} rows, Delta inserted {written} (a concurrent writer?)")
    return {
        "read": read,
        "written": written,
        "already_ingested": already,
        "quarantined": quarantined,
        "quarantine_rows_added": quarantine_written,
        **{f"quarantined.{reason}": n for reason, n in sorted(by_status.items()) if reason not in ("new", "already_ingested")},
    }


def run(spark: SparkSession, settings: Settings, input_path: str | None = None, preset: str | None = None) -> RunSummary:
    """Ingest ``input_path`` (file, folder or glob) into ``events`` and ``events_quarantine``."""
    path = input_path or settings.ingest.input
    if not path:
        raise ValueError("no input: pass --input PATH or set ingest.input")
    preset_name, mapping = resolve_mapping(settings.ingest, preset)
    fmt = detect_format(path, mapping, settings.ingest.format)
    with stage_run(spark, settings, "ingest", rate=("events", "read"), path=path, preset=preset_name, format=fmt) as summary:
        log.info("ingest %s (%s, preset %s)", path, fmt, preset_name)
        now = settings.ingest.now or summary.started_at.replace(tzinfo=None)
        summary.counts = write_events(spark, settings, validated_events(spark, settings, path, mapping, fmt, now), summary)
        summary.outputs = {"events": settings.table_path(Table.EVENTS), "events_quarantine": settings.table_path(Table.QUARANTINE)}
        if summary.counts["quarantined"]:
            log.warning(
                "ingest: %d of %d rows quarantined (%s)",
                summary.counts["quarantined"],
                summary.counts["read"],
                summary.outputs["events_quarantine"],
            )
    return summary


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("ingest")
