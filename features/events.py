"""Raw rows to canonical events, with a reason for every row that cannot be kept.

The functions here are pure (DataFrame in, DataFrame out). The input of
:func:`normalize_events` has every source column as a string plus ``_corrupt_record``,
``_source_file`` and ``_row`` (see jobs.common.ingestion.read_raw). Rows are never dropped: a row that
fails a rule keeps its ``reason`` and goes to quarantine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from interest_decay.contract import CANONICAL_COLUMNS, EVENT_TYPES, SourceMapping

PRESETS: dict[str, SourceMapping] = {
    "generator": SourceMapping(
        columns={"event_id": "event_id", **{c: c for c in CANONICAL_COLUMNS if c != "event_id"}},
    ),
    # "eCommerce behavior data from multi category store" (REES46): category_code is often
    # empty, category_id is always there.
    "rees46": SourceMapping(
        columns={
            "user_id": "user_id",
            "event_time": "event_time",
            "event_type": "event_type",
            "product_id": "product_id",
            "category": "category_code|category_id",
            "price": "price",
        },
        timestamp_formats=["yyyy-MM-dd HH:mm:ss z"],
    ),
    # CDNOW_master.txt: whitespace-separated, one row per purchase day, dollar_value is the spend.
    "cdnow": SourceMapping(
        columns={"user_id": "customer_id", "event_time": "date", "price": "dollar_value"},
        constant_event_type="purchase",
        timestamp_formats=["yyyyMMdd"],
        delimiter="whitespace",
    ),
}

# Reasons, in the order the rules are checked: a row gets the first that applies.
REASONS = (
    "malformed_line",
    "missing_user_id",
    "missing_event_time",
    "unparseable_event_time",
    "event_time_in_future",
    "event_time_before_floor",
    "unknown_event_type",
    "non_numeric_price",
    "negative_price",
    "duplicate_event",
)

EVENT_COLUMNS = ("event_id", "user_id", "event_time", "event_type", "product_id", "category", "price", "event_date")


def source_columns(mapping: SourceMapping) -> list[str]:
    """The source columns a mapping reads, in a stable order (``a|b`` means a, else b)."""
    names: list[str] = []
    for spec in mapping.columns.values():
        for name in spec.split("|"):
            if name not in names:
                names.append(name)
    return names


def _blank_to_null(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed != "", trimmed)


def _mapped(mapping: SourceMapping, canonical: str) -> Column:
    spec = mapping.columns.get(canonical)
    if spec is None:
        return F.lit(None).cast("string")
    return F.coalesce(*[_blank_to_null(F.col(f"`{name}`")) for name in spec.split("|")])


# An explicit zone at the end of a timestamp: Z, an offset (+01:00, -0500) or a zone name (UTC, CET, Europe/Paris).
_ZONE_AT_END = r"(?i)(z|[+-]\d{2}(:?\d{2})?|\b(utc|gmt|[a-z]{2,5}|[a-z]+/[a-z_]+))$"


def _parse_time(name: str, formats: list[str], session_time_zone: str, source_time_zone: str) -> Column:
    """Parse the string column ``name`` into an instant: ISO-8601 first, then each format in turn.

    Spark reads a timestamp without a zone in the session's zone; such a value is moved to mean
    that wall-clock time in ``source_time_zone`` instead, so the instant (and the event's id)
    never depends on where or how the job runs. Epoch numbers and timestamps with a zone are
    instants already."""
    has_zone = F.trim(F.col(name)).rlike(_ZONE_AT_END)

    def in_source_zone(parsed: Column) -> Column:
        if session_time_zone == source_time_zone:
            return parsed
        moved = F.to_utc_timestamp(F.from_utc_timestamp(parsed, session_time_zone), source_time_zone)
        return F.when(has_zone, parsed).otherwise(moved)

    candidates = [in_source_zone(F.try_to_timestamp(F.col(name)))]
    for fmt in formats:
        if fmt == "epoch_seconds":
            candidates.append(F.timestamp_seconds(F.expr(f"try_cast({name} AS double)")))
        elif fmt == "epoch_millis":
            candidates.append(F.timestamp_millis(F.expr(f"try_cast({name} AS bigint)")))
        else:
            candidates.append(in_source_zone(F.try_to_timestamp(F.col(name), F.lit(fmt))))
    return F.coalesce(*candidates)


def normalize_events(raw: DataFrame, mapping: SourceMapping, session_time_zone: str = "UTC") -> DataFrame:
    """Map source columns to canonical ones and parse them; unparseable values become null.
    ``session_time_zone`` is the reading Spark session's (timestamps without a zone are read in
    it, then moved to the mapping's ``time_zone``).

    Keeps the raw text (``raw``), the trimmed raw timestamp, type and price (``*_raw``) so the
    rules in :func:`validate_events` can tell a missing value from a malformed one.
    """
    missing = [c for c in source_columns(mapping) if c not in raw.columns]
    if missing:
        raise ValueError(f"source columns {missing} are not in the input (it has {raw.columns})")
    # Every column the reader kept (the mapping's, and a file's extra ones when asked for).
    raw_json = F.to_json(F.struct(*[F.col(f"`{c}`") for c in raw.columns if not c.startswith("_")]))
    event_type_raw = F.lit(mapping.constant_event_type) if mapping.constant_event_type else _mapped(mapping, "event_type")
    selected = raw.select(
        F.coalesce(F.col("_corrupt_record"), raw_json).alias("raw"),
        F.col("_corrupt_record").isNotNull().alias("malformed"),
        F.col("_source_file").alias("source_file"),
        F.col("_row"),
        _mapped(mapping, "event_id").alias("source_event_id"),
        _mapped(mapping, "user_id").alias("user_id"),
        _mapped(mapping, "event_time").alias("event_time_raw"),
        F.lower(event_type_raw).alias("event_type_raw"),
        _mapped(mapping, "product_id").alias("product_id"),
        _mapped(mapping, "category").alias("category"),
        _mapped(mapping, "price").alias("price_raw"),
    )
    if mapping.event_types:
        lookup = F.create_map(*[F.lit(x) for pair in mapping.event_types.items() for x in pair])
        event_type = F.coalesce(F.element_at(lookup, F.col("event_type_raw")), F.col("event_type_raw"))
    else:
        event_type = F.col("event_type_raw")
    return selected.select(
        "*",
        _parse_time("event_time_raw", mapping.timestamp_formats, session_time_zone, mapping.time_zone).alias("event_time"),
        event_type.alias("event_type"),
        F.expr("try_cast(price_raw AS double)").alias("price"),
    )


def pseudonymize_user_ids(events: DataFrame, key: bytes) -> DataFrame:
    """Replace ``user_id`` by its HMAC-SHA256 (hex) under ``key``; nulls stay null."""
    if not isinstance(key, bytes) or not key:
        raise ValueError("key must be non-empty bytes")

    @F.pandas_udf("string")
    def keyed_hash(user_ids: pd.Series) -> pd.Series:
        return user_ids.map(lambda v: None if v is None else hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest())

    return events.withColumn("user_id", keyed_hash("user_id"))


def withhold_raw_user_ids(events: DataFrame, user_columns: list[str]) -> DataFrame:
    """With pseudonymised ids, the quarantine must not keep the raw ones: a parsed row's ``raw``
    JSON gets the pseudonym (``user_id``) in place of the source's user columns, and a malformed
    line, whose fields cannot be told apart, is replaced by its length and SHA-256 (enough to tell
    two copies of a line apart from two lines)."""
    dropped = ", ".join(f"'{c}'" for c in user_columns)
    fields = F.expr(f"map_filter(from_json(raw, 'map<string,string>'), (k, v) -> k NOT IN ({dropped}))")
    parsed = F.to_json(F.map_concat(fields, F.create_map(F.lit("user_id"), F.col("user_id"))))
    withheld = F.concat(
        F.lit("withheld: a malformed line of "), F.length("raw").cast("string"), F.lit(" characters, sha256 "), F.sha2("raw", 256)
    )
    return events.withColumn("raw", F.when(F.col("malformed"), withheld).otherwise(parsed))


def validate_events(
    events: DataFrame,
    *,
    now: dt.datetime,
    future_tolerance_hours: float,
    min_event_time: dt.datetime,
) -> DataFrame:
    """Add ``reason`` (null for a good row), the stable ``event_id`` and ``event_date``.

    ``event_id`` hashes what identifies an event (user, time, type, product, price and the
    source's own id when it has one), so the same event read twice gets the same id, while two
    CDNOW purchases on one day with different amounts stay two events.
    """
    latest = F.lit(now) + F.expr(f"INTERVAL {int(future_tolerance_hours * 3600)} SECONDS")
    price = F.col("price")
    reason = (
        F.when(F.col("malformed"), "malformed_line")
        .when(F.col("user_id").isNull(), "missing_user_id")
        .when(F.col("event_time_raw").isNull(), "missing_event_time")
        .when(F.col("event_time").isNull(), "unparseable_event_time")
        .when(F.col("event_time") > latest, "event_time_in_future")
        .when(F.col("event_time") < F.lit(min_event_time), "event_time_before_floor")
        .when(F.col("event_type").isNull() | ~F.col("event_type").isin(*EVENT_TYPES), "unknown_event_type")
        .when(
            F.col("price_raw").isNotNull() & (price.isNull() | F.isnan(price) | (F.abs(price) == float("inf"))),
            "non_numeric_price",
        )
        .when(price < 0, "negative_price")
    )
    # The instant (microseconds since the epoch), never a formatted time, which would depend on
    # the session's zone.
    identity = F.concat_ws(
        "\u001f",
        F.col("user_id"),
        F.unix_micros("event_time").cast("string"),
        F.col("event_type"),
        F.coalesce(F.col("product_id"), F.lit("")),
        F.coalesce(F.col("price").cast("string"), F.lit("")),
        F.coalesce(F.col("source_event_id"), F.lit("")),
    )
    return events.select(
        "*",
        reason.alias("reason"),
        F.substring(F.sha2(identity, 256), 1, 32).alias("event_id"),
        # The UTC date of the instant: to_date would use the session's zone.
        F.date_add(F.lit(dt.date(1970, 1, 1)), F.floor(F.unix_seconds("event_time") / 86400).cast("int")).alias("event_date"),
    )


def mark_batch_duplicates(events: DataFrame) -> DataFrame:
    """Within one batch, every good row after the first with the same ``event_id`` is a duplicate.

    ``_row`` is kept only on the rows that go to quarantine (which number identical bad lines by
    it): the kept rows no longer need it, and it was a fifth of what ingest's cache held."""
    first_seen = Window.partitionBy("event_id").orderBy("source_file", "_row")
    occurrence = F.when(F.col("reason").isNull(), F.row_number().over(first_seen))
    reason = F.when(occurrence > 1, "duplicate_event").otherwise(F.col("reason"))
    return events.withColumn("reason", reason).withColumn("_row", F.when(F.col("reason").isNotNull(), F.col("_row")))


def batch_to_classify(events: DataFrame) -> DataFrame:
    """The columns of a validated batch that finding duplicates, classifying, inserting and
    quarantining read, with ``raw`` only on the rows that failed a rule: a good row's quarantine
    row, if it turns out to be a duplicate, shows the event it repeats (:func:`quarantine_rows`),
    never its raw data. Taken before :func:`mark_batch_duplicates`, so that the shuffle that finds
    duplicates carries narrow rows: on 10M generated events the parsing columns and the raw JSON
    of every row were most of what it moved and what ingest persisted."""
    return events.select(*EVENT_COLUMNS, "source_file", "_row", "reason", F.when(F.col("reason").isNotNull(), F.col("raw")).alias("raw"))


def classify_against_table(batch: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Add ``status``: ``new``, ``already_ingested`` (same file read again) or the row's reason.

    ``existing`` holds ``event_id`` and ``source_file`` of the events already in the table, or is
    None when the table holds none on the batch's dates (a first load: nothing to join with). An
    event already there from another file is a ``duplicate_event``; from the same file it is a
    re-run and is neither written again nor quarantined again.
    """
    if existing is None:
        return batch.withColumn("status", F.coalesce(F.col("reason"), F.lit("new")))
    known = existing.select("event_id", F.col("source_file").alias("_known_source"))
    joined = batch.join(known, on="event_id", how="left")
    seen_elsewhere = F.col("reason").isNull() & F.col("_known_source").isNotNull() & (F.col("_known_source") != F.col("source_file"))
    rerun = F.col("reason").isNull() & (F.col("_known_source") == F.col("source_file"))
    reason = F.when(seen_elsewhere, "duplicate_event").otherwise(F.col("reason"))
    status = F.when(rerun, "already_ingested").when(reason.isNotNull(), reason).otherwise("new")
    return joined.withColumn("reason", reason).withColumn("status", status).drop("_known_source")


def quarantine_rows(classified: DataFrame) -> DataFrame:
    """The quarantined rows, each with a ``quarantine_id`` that is the same on every re-run.

    Identical bad lines in one file are all kept: the id includes their occurrence number.
    """
    # A duplicate keeps a reference to the event it repeats, not a second copy of its raw data.
    raw = F.when(F.col("reason") == "duplicate_event", F.to_json(F.struct(F.col("event_id").alias("duplicate_of")))).otherwise(F.col("raw"))
    bad = classified.where(F.col("reason").isNotNull()).withColumn("raw", raw)
    same_line = Window.partitionBy("source_file", "reason", "raw").orderBy("_row")
    occurrence = F.row_number().over(same_line)
    key = F.concat_ws("\u001f", "source_file", "reason", "raw", occurrence.cast("string"))
    return bad.select(
        F.substring(F.sha2(key, 256), 1, 32).alias("quarantine_id"),
        "raw",
        "reason",
        F.col("source_file").alias("source"),
    )


def new_events(classified: DataFrame) -> DataFrame:
    """The canonical columns of the rows to add to ``events``."""
    return classified.where(F.col("status") == "new").select(*EVENT_COLUMNS, "source_file")
