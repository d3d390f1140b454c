"""Ingest's parts that the batch `ingest` stage and the streaming job share: reading raw files by
their mapping, validating them, and writing events and quarantine rows exactly once.

Every row read ends in exactly one place: ``events`` (new), already in ``events`` from an
earlier run of the same file, or ``events_quarantine`` with its reason:
``read = new + already_ingested + quarantined``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from functools import reduce
from pathlib import PurePosixPath

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest_decay.contract import REQUIRED_EVENT_COLUMNS, SourceMapping, Table
from interest_decay.features.events import (
    PRESETS,
    batch_to_classify,
    classify_against_table,
    mark_batch_duplicates,
    new_events,
    normalize_events,
    pseudonymize_user_ids,
    quarantine_rows,
    source_columns,
    validate_events,
    withhold_raw_user_ids,
)
from interest_decay.jobs.common.config import IngestSettings, Settings
from interest_decay.jobs.common.runs import RunSummary
from interest_decay.jobs.common.spark import persisted
from interest_decay.jobs.common.storage import first_line, input_file_uris, list_input_files
from interest_decay.jobs.common.tables import (
    EVENTS_SCHEMA,
    QUARANTINE_SCHEMA,
    ensure_table,
    insert_new,
    latest_version,
    retry_on_conflict,
    table_exists,
    table_property,
)

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
    if fmt == "csv" and mapping.header:
        return _read_csv_by_header(spark, path, mapping, keep_extra)
    if fmt == "csv":
        header = spark.read.option("header", False).option("sep", mapping.delimiter).csv(path).columns
        absent = absent_source_columns(mapping, header, path)
        extra = [c for c in header if c not in columns] if keep_extra else []
        frame = _read_csv(spark, path, header, mapping.delimiter, has_header=False)
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
    return _canonical_source(frame, columns, absent, extra)


def _canonical_source(frame: DataFrame, columns: list[str], absent: list[str], extra: list[str]) -> DataFrame:
    """The mapping's source columns in order (null where absent), the kept extra ones, the
    corrupt record, the file and a row number."""
    return frame.select(
        *[F.lit(None).cast("string").alias(c) if c in absent else F.col(f"`{c}`") for c in columns],
        *[F.col(f"`{c}`") for c in extra],
        F.col(CORRUPT),
        F.col("_metadata.file_path").alias("_source_file"),
        F.monotonically_increasing_id().alias("_row"),
    )


def _read_csv(spark: SparkSession, paths: str | list[str], header: list[str], delimiter: str, has_header: bool) -> DataFrame:
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header] + [T.StructField(CORRUPT, T.StringType())])
    reader = (
        spark.read.schema(schema)
        .option("header", has_header)
        .option("sep", delimiter)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
    )
    return reader.csv(paths)


def _read_csv_by_header(spark: SparkSession, path: str, mapping: SourceMapping, keep_extra: bool) -> DataFrame:
    """CSV files each read by its own header: files whose columns come in another order (or with
    others) are mapped by name, never by position. Files with the same header are read together."""
    columns = source_columns(mapping)
    groups: dict[tuple[str, ...], list[str]] = {}
    for file in input_file_uris(path):
        line = first_line(file).lstrip("\ufeff")  # a byte-order mark is not part of the first name
        header = tuple(name.strip() for name in next(csv.reader([line], delimiter=mapping.delimiter), [])) if line else ()
        groups.setdefault(header, []).append(file)
    if not groups:
        raise ValueError(f"{path}: no CSV file to read")
    extra_all = sorted({c for header in groups for c in header if c not in columns}) if keep_extra else []
    frames = []
    for header, files in groups.items():
        where = files[0] if len(files) == 1 else f"{path} ({len(files)} files with header {list(header)})"
        absent = absent_source_columns(mapping, list(header), where)
        frame = _read_csv(spark, files, list(header), mapping.delimiter, has_header=True)
        frame = frame.select("*", *[F.lit(None).cast("string").alias(c) for c in extra_all if c not in header])
        frames.append(_canonical_source(frame, columns, absent, extra_all))
    return reduce(lambda a, b: a.unionByName(b), frames)


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


# Table properties of ``events``: how its event ids were made. A re-run with other settings would
# give the same events other ids (and insert them again), so a mismatch is refused.
EVENT_ID_SCHEME = "instant-utc/v2"
ID_PROPERTIES = ("event_id_scheme", "pseudonymized", "pseudonym_key_fingerprint", "source_time_zone")


def id_properties(conf: IngestSettings, mapping: SourceMapping) -> dict[str, str]:
    """What this run's event ids depend on, as the events table records it."""
    fingerprint = ""
    if conf.pseudonymize_user_ids:
        # A fingerprint of the key, never the key: HMAC of a fixed text under it.
        fingerprint = hmac.new(pseudonym_key(conf), b"interest-decay key fingerprint", hashlib.sha256).hexdigest()[:16]
    values = {
        "event_id_scheme": EVENT_ID_SCHEME,
        "pseudonymized": str(conf.pseudonymize_user_ids).lower(),
        "pseudonym_key_fingerprint": fingerprint,
        "source_time_zone": mapping.time_zone,
    }
    return {f"interest_decay.{key}": values[key] for key in ID_PROPERTIES}


def check_id_properties(spark: SparkSession, events_path: str, wanted: dict[str, str]) -> None:
    """ValueError, naming each difference, when the events already there were given ids another
    way than this run would: a re-ingest would insert every event again, or mix raw and
    pseudonymised ids."""
    if not table_exists(spark, events_path):
        return
    found = {key: table_property(spark, events_path, key) for key in wanted}
    if found[f"interest_decay.{ID_PROPERTIES[0]}"] is None:
        raise ValueError(
            f"{events_path} was written by an earlier version, whose event ids depended on the Spark session's time zone: "
            "ingest into a new lakehouse (or a new events table), so a re-run can never insert an event twice"
        )
    differ = [
        f"{key.removeprefix('interest_decay.')}: {found[key]!r} there, {value!r} now"
        for key, value in wanted.items()
        if found[key] != value
    ]
    if differ:
        raise ValueError(
            f"{events_path} was ingested with other settings ({'; '.join(differ)}): its events would get other ids and be "
            "inserted again (or raw and pseudonymised ids mixed); ingest with the table's settings, or into a new lakehouse"
        )


def validated_events(
    spark: SparkSession, settings: Settings, path: str | list[str], mapping: SourceMapping, fmt: str, now: dt.datetime
) -> DataFrame:
    """The raw rows of ``path`` (or of several paths, read each on its own and checked for
    duplicates together) as canonical events, each with its status: valid, a batch duplicate, or
    the reason it goes to quarantine."""
    conf = settings.ingest
    keep_extra = conf.extra_columns == "keep"
    frames = [read_raw(spark, p, mapping, fmt, keep_extra=keep_extra) for p in ([path] if isinstance(path, str) else path)]
    if not frames:
        raise ValueError("no input paths")
    raw = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    events = normalize_events(raw, mapping, spark.conf.get("spark.sql.session.timeZone"))
    if conf.pseudonymize_user_ids:
        events = pseudonymize_user_ids(events, pseudonym_key(conf))
        events = withhold_raw_user_ids(events, mapping.columns["user_id"].split("|"))
    validated = validate_events(events, now=now, future_tolerance_hours=conf.future_tolerance_hours, min_event_time=conf.min_event_time)
    return mark_batch_duplicates(batch_to_classify(validated))


def write_events(
    spark: SparkSession,
    settings: Settings,
    events: DataFrame,
    mapping: SourceMapping,
    summary: RunSummary,
    on_kept: Callable[[DataFrame], None] | None = None,
) -> dict[str, int]:
    """Insert the new events into ``events`` and the bad rows into ``events_quarantine``, each
    stamped with the run; the counts by outcome (read = written + already ingested + quarantined).

    ``on_kept``, when given, is called once, after the attempt whose writes went in, with this
    input's rows that are in ``events`` (new ones, and those already there from this very file)
    while they are cached: the streaming job rescores their users without reading the table back."""
    events_path = settings.table_path(Table.EVENTS)
    wanted = id_properties(settings.ingest, mapping)
    check_id_properties(spark, events_path, wanted)
    events_table = ensure_table(spark, events_path, EVENTS_SCHEMA, partitioned_by=["event_date"], change_feed=True, properties=wanted)
    quarantine_table = ensure_table(spark, settings.table_path(Table.QUARANTINE), QUARANTINE_SCHEMA)
    stamp = [F.lit(summary.run_id).alias("run_id"), F.lit(summary.started_at).cast("timestamp").alias("ingested_at")]

    # Read and validated once: the dates below and every classifying attempt read it.
    with persisted(events) as events:
        # The event id hashes the instant, so a copy of an event has its date: only the partitions of
        # the dates this batch holds are read to find what is already there, and MERGEd into.
        dates = sorted(r["event_date"] for r in events.where(F.col("event_date").isNotNull()).select("event_date").distinct().collect())
        quoted = ", ".join(f"DATE'{d.isoformat()}'" for d in dates)
        in_dates = f"t.event_date IN ({quoted})" if dates else "FALSE"

        def classify_and_insert() -> tuple[dict[str, int], int, int]:
            # From a fresh read each attempt: a concurrent ingest may have committed in between.
            version = latest_version(spark, events_path)
            existing = (
                spark.read.format("delta")
                .option("versionAsOf", version)
                .load(events_path)
                .where(F.col("event_date").isin(dates))
                .select("event_id", "source_file")
            )
            # A first load (or one of new dates only) has nothing to join with: its statuses are the
            # batch's own, read from the persisted batch without a second copy. The MERGE below still
            # compares with the table as it is then, and a concurrent insert on these dates makes it
            # conflict and run again from here.
            first_load = existing.isEmpty()
            classified = classify_against_table(events, None if first_load else existing)
            if first_load:
                return insert(classified)
            with persisted(classified) as held:  # the join's result is read three times
                return insert(held)

        def insert(classified: DataFrame) -> tuple[dict[str, int], int, int]:
            by_status = {row["status"]: row["count"] for row in classified.groupBy("status").count().collect()}
            inserted = (
                insert_new(events_table, new_events(classified).select("*", *stamp), ["event_date", "event_id"], target_filter=in_dates)
                if by_status.get("new")
                else 0
            )
            quarantined = sum(n for status, n in by_status.items() if status not in ("new", "already_ingested"))
            added = insert_new(quarantine_table, quarantine_rows(classified).select("*", *stamp), ["quarantine_id"]) if quarantined else 0
            if on_kept is not None:
                on_kept(classified.where(F.col("status").isin("new", "already_ingested")))
            return by_status, inserted, added

        by_status, written, quarantine_written = retry_on_conflict(classify_and_insert, f"ingesting into {events_path}")
    read = sum(by_status.values())
    quarantined = read - by_status.get("new", 0) - by_status.get("already_ingested", 0)
    # A run ingesting the same events at the same moment may have inserted some first: they are
    # in the table once, and counted here as already there.
    already = read - written - quarantined
    if already != by_status.get("already_ingested", 0):
        log.warning("ingest: %d event(s) were inserted by a concurrent run first", already - by_status.get("already_ingested", 0))
    return {
        "read": read,
        "written": written,
        "already_ingested": already,
        "quarantined": quarantined,
        "quarantine_rows_added": quarantine_written,
        **{f"quarantined.{reason}": n for reason, n in sorted(by_status.items()) if reason not in ("new", "already_ingested")},
    }


def check_quarantine_share(counts: dict[str, int], ceiling: float, quarantine: str) -> None:
    """ValueError when more than ``ceiling`` of the rows read were bad (duplicates of events
    already kept are not bad data and do not count): a changed format or mapping, not a few bad
    rows. Raised after the quarantine is written, so nothing is lost and the rows can be read there."""
    bad = {
        k.removeprefix("quarantined."): n for k, n in counts.items() if k.startswith("quarantined.") and k != "quarantined.duplicate_event"
    }
    total = sum(bad.values())
    if counts["read"] and total / counts["read"] > ceiling:
        commonest = max(bad, key=bad.get)
        raise ValueError(
            f"{total:,} of {counts['read']:,} rows ({total / counts['read']:.0%}) were quarantined, above ingest.max_quarantine_share "
            f"{ceiling:.0%}; the commonest reason is {commonest} ({bad[commonest]:,} rows): fix the source mapping or the files "
            f"(the rows are in {quarantine}), then ingest again"
        )
