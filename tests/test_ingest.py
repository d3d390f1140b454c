from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from interest_decay.contract import Table
from interest_decay.jobs import generate, ingest
from interest_decay.jobs.common.config import Settings

EVENT_VALUES = "user_id STRING, event_time TIMESTAMP, event_type STRING, product_id STRING, category STRING, price DOUBLE"
HEADER = "event_id,user_id,event_time,event_type,product_id,category,price"
NOW = "2026-06-01T00:00:00"

# One line per rule, and the reason each bad line must get.
CORPUS = [
    ("e1,u1,2026-05-01T10:00:00Z,view,p1,books,9.99", None),
    ("e2,u1,2026-05-01 10:05:00,cart,p1,books,9.99", None),
    ("e3,u2,2026-05-02T08:00:00.000Z,purchase,p2,toys,", None),
    ("e4,u2,2026-05-31T23:30:00Z, VIEW ,p2,toys,5", None),
    ("e12,u4,2026-06-01T12:00:00Z,view,p1,books,1.0", None),  # inside the 24 h tolerance
    ('e17,u5,2026-05-01T10:00:00Z,view,p9,"books, rare",12.5', None),
    ("e5,u3,2026-05-01T10:00:00Z,view", "malformed_line"),
    ("e6,u3,2026-05-01T10:00:00Z,view,p1,books,1.0,extra", "malformed_line"),
    ("e7,,2026-05-01T10:00:00Z,view,p1,books,1.0", "missing_user_id"),
    ("e8,   ,2026-05-01T10:00:00Z,view,p1,books,1.0", "missing_user_id"),
    ("e9,u4,,view,p1,books,1.0", "missing_event_time"),
    ("e10,u4,yesterday,view,p1,books,1.0", "unparseable_event_time"),
    ("e11,u4,2026-06-03T00:00:00Z,view,p1,books,1.0", "event_time_in_future"),
    ("e13,u4,1970-01-01T00:00:00Z,view,p1,books,1.0", "event_time_before_floor"),
    ("e14,u4,2026-05-01T10:00:00Z,click,p1,books,1.0", "unknown_event_type"),
    ("e15,u4,2026-05-01T10:00:00Z,view,p1,books,abc", "non_numeric_price"),
    ("e16,u4,2026-05-01T10:00:00Z,view,p1,books,-3.5", "negative_price"),
    ("e1,u1,2026-05-01T10:00:00Z,view,p1,books,9.99", "duplicate_event"),
]
GOOD_EVENTS = [
    ("u1", dt.datetime(2026, 5, 1, 10, 0), "view", "p1", "books", 9.99),
    ("u1", dt.datetime(2026, 5, 1, 10, 5), "cart", "p1", "books", 9.99),
    ("u2", dt.datetime(2026, 5, 2, 8, 0), "purchase", "p2", "toys", None),
    ("u2", dt.datetime(2026, 5, 31, 23, 30), "view", "p2", "toys", 5.0),
    ("u4", dt.datetime(2026, 6, 1, 12, 0), "view", "p1", "books", 1.0),
    ("u5", dt.datetime(2026, 5, 1, 10, 0), "view", "p9", "books, rare", 12.5),
]


def _write(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _fixed_now(settings: Settings) -> Settings:
    """A fixed "now" for the future rule; and no ceiling on the quarantine, since the corpus is
    mostly bad lines on purpose (the ceiling has its own test)."""
    settings.ingest.now = dt.datetime.fromisoformat(NOW)
    settings.ingest.max_quarantine_share = 1.0
    return settings


def _events(spark: SparkSession, settings: Settings) -> DataFrame:
    return spark.read.format("delta").load(settings.table_path(Table.EVENTS))


def _quarantine(spark: SparkSession, settings: Settings) -> DataFrame:
    return spark.read.format("delta").load(settings.table_path(Table.QUARANTINE))


def _assert_events(spark: SparkSession, settings: Settings, expected: list[tuple]) -> None:
    """The events table holds exactly ``expected`` (in EVENT_VALUES columns), in any order."""
    actual = _events(spark, settings).select("user_id", "event_time", "event_type", "product_id", "category", "price")
    assertDataFrameEqual(actual, spark.createDataFrame(expected, EVENT_VALUES))


def test_every_bad_row_is_quarantined_with_its_reason(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    source = _write(tmp_path / "raw" / "corpus.csv", [HEADER] + [line for line, _ in CORPUS])
    summary = ingest.run(spark, _fixed_now(settings), input_path=source, preset="generator")

    bad = [reason for _, reason in CORPUS if reason]
    assert summary.counts["read"] == len(CORPUS)
    assert summary.counts["written"] == len(GOOD_EVENTS)
    assert summary.counts["quarantined"] == len(bad)
    assert summary.counts["read"] == summary.counts["written"] + summary.counts["already_ingested"] + summary.counts["quarantined"]
    for reason in set(bad):
        assert summary.counts[f"quarantined.{reason}"] == bad.count(reason)

    _assert_events(spark, settings, GOOD_EVENTS)
    quarantine = _quarantine(spark, settings)
    assertDataFrameEqual(
        quarantine.groupBy("reason").count(),
        spark.createDataFrame([(r, bad.count(r)) for r in set(bad)], "reason STRING, count BIGINT"),
    )
    # The raw text of a malformed line is kept as it was; other rows keep their fields.
    raws = {r["raw"] for r in quarantine.where("reason = 'malformed_line'").collect()}
    assert raws == {"e5,u3,2026-05-01T10:00:00Z,view", "e6,u3,2026-05-01T10:00:00Z,view,p1,books,1.0,extra"}
    negative = json.loads(quarantine.where("reason = 'negative_price'").first()["raw"])
    assert negative["event_id"] == "e16" and negative["price"] == "-3.5"
    assert quarantine.where(F.col("source").endswith("corpus.csv")).count() == len(bad)


def test_rerunning_the_same_files_adds_nothing(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    source = _write(tmp_path / "raw" / "corpus.csv", [HEADER] + [line for line, _ in CORPUS])
    _fixed_now(settings)
    first = ingest.run(spark, settings, input_path=source, preset="generator")
    events_before = _events(spark, settings).orderBy("event_id").collect()
    quarantine_before = _quarantine(spark, settings).orderBy("quarantine_id").collect()

    again = ingest.run(spark, settings, input_path=source, preset="generator")

    assert again.counts["read"] == first.counts["read"]
    assert again.counts["written"] == 0
    assert again.counts["already_ingested"] == len(GOOD_EVENTS)
    assert again.counts["quarantined"] == first.counts["quarantined"]
    assert again.counts["quarantine_rows_added"] == 0
    assert _events(spark, settings).orderBy("event_id").collect() == events_before
    assert _quarantine(spark, settings).orderBy("quarantine_id").collect() == quarantine_before


def test_an_event_seen_in_an_earlier_file_is_a_duplicate(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    _fixed_now(settings)
    first = _write(tmp_path / "day1" / "a.csv", [HEADER, CORPUS[0][0], CORPUS[1][0]])
    second = _write(tmp_path / "day2" / "b.csv", [HEADER, CORPUS[0][0], "e20,u9,2026-05-03T09:00:00Z,view,p3,garden,2.5"])
    ingest.run(spark, settings, input_path=first, preset="generator")
    summary = ingest.run(spark, settings, input_path=second, preset="generator")
    assert summary.counts == {
        "read": 2,
        "written": 1,
        "already_ingested": 0,
        "quarantined": 1,
        "quarantine_rows_added": 1,
        "quarantined.duplicate_event": 1,
    }
    assert _events(spark, settings).count() == 3
    assert _quarantine(spark, settings).where("reason = 'duplicate_event'").count() == 1
    # Re-running the second file quarantines the duplicate no second time.
    assert ingest.run(spark, settings, input_path=second, preset="generator").counts["quarantine_rows_added"] == 0
    assert _quarantine(spark, settings).count() == 1


def test_identical_bad_lines_are_all_kept(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    source = _write(tmp_path / "raw" / "twice.csv", [HEADER, "e5,u3,2026-05-01T10:00:00Z,view", "e5,u3,2026-05-01T10:00:00Z,view"])
    summary = ingest.run(spark, _fixed_now(settings), input_path=source, preset="generator")
    assert summary.counts["quarantined.malformed_line"] == 2
    assert _quarantine(spark, settings).count() == 2


def test_generated_parquet_goes_in_whole(spark: SparkSession, settings: Settings) -> None:
    settings.generator.users = 150
    generated = generate.run(spark, settings)
    summary = ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
    assert summary.inputs["format"] == "parquet"
    assert summary.counts["read"] == generated.counts["events"] == summary.counts["written"]
    assert summary.counts["quarantined"] == 0
    assert summary.metrics["events_per_second"] == pytest.approx(summary.counts["read"] / summary.seconds, abs=0.1)
    raw = spark.read.parquet(generated.outputs["events"])
    assertDataFrameEqual(
        _events(spark, settings).select("user_id", "event_time", "event_type", "product_id", "category", "price"),
        raw.select("user_id", "event_time", "event_type", F.col("product_id").cast("string"), "category", "price"),
    )
    partitions = {r["event_date"] for r in _events(spark, settings).select("event_date").distinct().collect()}
    assert len(partitions) > 30
    assert (Path(settings.table_path(Table.EVENTS)) / f"event_date={min(partitions)}").is_dir()


def test_rees46_preset(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    source = _write(
        tmp_path / "rees46.csv",
        [
            "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
            "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde",
            "2019-10-01 00:00:04 UTC,cart,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,554748717,9333dfbd",
            "2019-10-01 00:00:05 UTC,remove_from_cart,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,554748717,9333dfbd",
        ],
    )
    summary = ingest.run(spark, settings, input_path=source, preset="rees46")
    assert summary.counts["written"] == 3
    expected = [
        ("541312140", dt.datetime(2019, 10, 1, 0, 0, 0), "view", "44600062", "2103807459595387724", 35.79),
        ("554748717", dt.datetime(2019, 10, 1, 0, 0, 4), "cart", "3900821", "appliances.environment.water_heater", 33.2),
        ("554748717", dt.datetime(2019, 10, 1, 0, 0, 5), "remove_from_cart", "3900821", "appliances.environment.water_heater", 33.2),
    ]
    _assert_events(spark, settings, expected)


def test_cdnow_preset_reads_the_master_file_format(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    # The layout of CDNOW_master.txt as it ships in the lifetimes wheel: padded, CRLF, a header.
    source = tmp_path / "CDNOW_master.txt"
    source.write_bytes(
        b" customer_id  date number_of_cds  dollar_value\r\n"
        b" 00001 19970101  1   11.77\r\n"
        b" 00002 19970112  1   12.00\r\n"
        b" 00002 19970112  5   77.00\r\n"
        b" 00002 19970112  1   12.00\r\n"
        b" 00003 1997\r\n"
        b"\r\n"
    )
    summary = ingest.run(spark, settings, input_path=str(source), preset="cdnow")
    assert summary.inputs["format"] == "text"
    assert summary.counts == {
        "read": 5,
        "written": 3,
        "already_ingested": 0,
        "quarantined": 2,
        "quarantine_rows_added": 2,
        "quarantined.duplicate_event": 1,
        "quarantined.malformed_line": 1,
    }
    expected = [
        ("00001", dt.datetime(1997, 1, 1), "purchase", None, None, 11.77),
        ("00002", dt.datetime(1997, 1, 12), "purchase", None, None, 12.0),
        ("00002", dt.datetime(1997, 1, 12), "purchase", None, None, 77.0),  # same day, another order
    ]
    _assert_events(spark, settings, expected)


def test_json_with_a_mapping_from_conf(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    settings.ingest.max_quarantine_share = 1.0  # one of the three lines is malformed on purpose
    source = _write(
        tmp_path / "events.jsonl",
        [
            '{"visitorid": 17, "timestamp": "1433221332117", "event": "addtocart", "itemid": "355908"}',
            '{"visitorid": 18, "timestamp": "1433224214164", "event": "view", "itemid": "248676"}',
            '{"visitorid": 19, "timestamp": "1433221999827", "event": "transaction"',
        ],
    )
    settings.ingest.preset = None
    settings.ingest.mapping = {  # validated into a SourceMapping on assignment
        "columns": {"user_id": "visitorid", "event_time": "timestamp", "event_type": "event", "product_id": "itemid"},
        "event_types": {"addtocart": "cart", "transaction": "purchase"},
        "timestamp_formats": ["epoch_millis"],
    }
    summary = ingest.run(spark, settings, input_path=source)
    assert summary.inputs == {"path": source, "preset": "mapping", "format": "json"}
    assert (summary.counts["written"], summary.counts["quarantined.malformed_line"]) == (2, 1)
    expected = [
        ("17", dt.datetime(2015, 6, 2, 5, 2, 12, 117000), "cart", "355908", None, None),
        ("18", dt.datetime(2015, 6, 2, 5, 50, 14, 164000), "view", "248676", None, None),
    ]
    _assert_events(spark, settings, expected)


def test_pseudonymised_user_ids_are_keyed_hashes(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "not-a-real-secret-4f1c"
    monkeypatch.setenv("INTEREST_DECAY_PSEUDONYM_KEY", key)
    settings.ingest.pseudonymize_user_ids = True
    source = _write(tmp_path / "raw.csv", [HEADER, CORPUS[0][0], CORPUS[2][0]])
    summary = ingest.run(spark, _fixed_now(settings), input_path=source, preset="generator")
    expected = {hmac.new(key.encode(), uid.encode(), hashlib.sha256).hexdigest() for uid in ("u1", "u2")}
    assert {r["user_id"] for r in _events(spark, settings).collect()} == expected
    assert key not in summary.to_json()
    assert key not in capsys.readouterr().out


def test_pseudonymising_without_a_key_is_refused(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTEREST_DECAY_PSEUDONYM_KEY", raising=False)
    settings.ingest.pseudonymize_user_ids = True
    source = _write(tmp_path / "raw.csv", [HEADER, CORPUS[0][0]])
    with pytest.raises(ValueError, match="INTEREST_DECAY_PSEUDONYM_KEY is empty or unset"):
        ingest.run(spark, settings, input_path=source, preset="generator")


def test_unknown_format_and_missing_columns_are_clear_errors(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    odd = _write(tmp_path / "events.xml", ["<event/>"])
    with pytest.raises(ValueError, match="cannot tell the format"):
        ingest.run(spark, settings, input_path=odd, preset="generator")
    wrong = _write(tmp_path / "wrong.csv", ["a,b", "1,2"])
    with pytest.raises(ValueError, match=r"the required column user_id \(source column user_id\) is missing; the input has \['a', 'b'\]"):
        ingest.run(spark, settings, input_path=wrong, preset="generator")
    with pytest.raises(ValueError, match="preset must be one of"):
        ingest.run(spark, settings, input_path=wrong, preset="amazon")


def test_schema_drift_extra_and_missing_optional_columns_load_a_missing_required_one_is_refused(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    settings = _fixed_now(settings)
    # An extra column the mapping does not read, and no category or price: both still load.
    drifted = _write(
        tmp_path / "drift" / "a.csv",
        [
            "event_id,user_id,event_time,event_type,product_id,referrer",
            "d1,u1,2026-05-01T10:00:00Z,view,p1,mail",
            "d2,u2,2026-05-02T10:00:00Z,cart,p2,",
        ],
    )
    summary = ingest.run(spark, settings, input_path=drifted, preset="generator")
    assert summary.counts["read"] == summary.counts["written"] == 2
    events = (
        spark.read.format("delta")
        .load(settings.table_path(Table.EVENTS))
        .select("user_id", "event_type", "product_id", "category", "price")
    )
    expected = spark.createDataFrame([("u1", "view", "p1", None, None), ("u2", "cart", "p2", None, None)], events.schema)
    assertDataFrameEqual(events, expected)
    # A file without event_time is refused before anything is written.
    no_time = _write(tmp_path / "drift2" / "b.csv", ["event_id,user_id,event_type", "d3,u3,view"])
    before = spark.read.format("delta").load(settings.table_path(Table.EVENTS)).count()
    with pytest.raises(ValueError, match=r"the required column event_time \(source column event_time\) is missing"):
        ingest.run(spark, settings, input_path=no_time, preset="generator")
    assert spark.read.format("delta").load(settings.table_path(Table.EVENTS)).count() == before


def test_json_without_a_required_key_is_refused_and_extra_columns_can_be_kept(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    settings = _fixed_now(settings)
    # JSON Lines without event_time anywhere: refused before anything is written, like CSV.
    no_time = _write(tmp_path / "j" / "a.json", ['{"event_id": "j1", "user_id": "u1", "event_type": "view"}'])
    with pytest.raises(ValueError, match=r"the required column event_time \(source column event_time\) is missing"):
        ingest.run(spark, settings, input_path=no_time, preset="generator")
    assert not DeltaTable.isDeltaTable(spark, settings.table_path(Table.EVENTS))

    # ingest.extra_columns: keep puts a CSV's unmapped column into the quarantined row's raw JSON.
    settings.ingest.extra_columns = "keep"
    extra = _write(
        tmp_path / "x" / "b.csv",
        [
            "event_id,user_id,event_time,event_type,product_id,category,price,referrer",
            "x1,u1,2026-05-01T10:00:00Z,teleport,p1,books,3,mail",
        ],
    )
    summary = ingest.run(spark, settings, input_path=extra, preset="generator")
    assert summary.counts["quarantined.unknown_event_type"] == 1
    (row,) = spark.read.format("delta").load(settings.table_path(Table.QUARANTINE)).select("raw").collect()
    assert json.loads(row["raw"]) == {
        "event_id": "x1",
        "user_id": "u1",
        "event_time": "2026-05-01T10:00:00Z",
        "event_type": "teleport",
        "product_id": "p1",
        "category": "books",
        "price": "3",
        "referrer": "mail",
    }


def _event_ids(spark: SparkSession, settings: Settings) -> set[str]:
    return {r["event_id"] for r in _events(spark, settings).collect()}


def test_a_reingest_in_another_session_time_zone_adds_nothing(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    """An event's id hashes its instant, and a timestamp without a zone means the source's
    zone (UTC here), so a notebook or cluster in New York re-reads the same file to the same ids."""
    source = _write(tmp_path / "raw" / "a.csv", [HEADER, CORPUS[0][0], CORPUS[1][0], CORPUS[2][0]])
    first = ingest.run(spark, _fixed_now(settings), input_path=source, preset="generator")
    ids, times = _event_ids(spark, settings), sorted(r["event_time"] for r in _events(spark, settings).collect())
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        again = ingest.run(spark, settings, input_path=source, preset="generator")
        # The zone-less "2026-05-01 10:05:00" is still 10:05 UTC.
        instants = sorted(r["t"] for r in _events(spark, settings).select(F.unix_micros("event_time").alias("t")).collect())
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    assert (first.counts["written"], again.counts["written"], again.counts["already_ingested"]) == (3, 0, 3)
    assert _event_ids(spark, settings) == ids and sorted(r["event_time"] for r in _events(spark, settings).collect()) == times
    assert instants[1] == int(dt.datetime(2026, 5, 1, 10, 5, tzinfo=dt.UTC).timestamp() * 1_000_000)


def test_an_ingest_with_other_id_settings_is_refused(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turning pseudonymisation on (or changing its key, or the source's zone) would give the same
    events other ids: refused, naming what differs, before anything is written."""
    source = _write(tmp_path / "raw" / "a.csv", [HEADER, CORPUS[0][0]])
    ingest.run(spark, _fixed_now(settings), input_path=source, preset="generator")
    properties = DeltaTable.forPath(spark, settings.table_path(Table.EVENTS)).detail().first()["properties"]
    assert properties["interest_decay.pseudonymized"] == "false" and properties["interest_decay.source_time_zone"] == "UTC"
    monkeypatch.setenv("INTEREST_DECAY_PSEUDONYM_KEY", "key-one")
    settings.ingest.pseudonymize_user_ids = True
    version = DeltaTable.forPath(spark, settings.table_path(Table.EVENTS)).history().agg({"version": "max"}).first()[0]
    with pytest.raises(
        ValueError, match=r"ingested with other settings \(pseudonymized: 'false' there, 'true' now; pseudonym_key_fingerprint"
    ):
        ingest.run(spark, settings, input_path=source, preset="generator")
    assert DeltaTable.forPath(spark, settings.table_path(Table.EVENTS)).history().agg({"version": "max"}).first()[0] == version


def test_csv_files_are_each_read_by_their_own_header(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    """A folder whose second file has the same columns in another order (and a byte-order mark):
    every row lands in its own columns."""
    _write(tmp_path / "raw" / "a.csv", [HEADER, CORPUS[0][0]])
    reordered = "\ufeffprice,category,product_id,event_type,event_time,user_id,event_id"
    _write(tmp_path / "raw" / "b.csv", [reordered, "2.5,garden,p3,view,2026-05-03T09:00:00Z,u9,e20"])
    summary = ingest.run(spark, _fixed_now(settings), input_path=str(tmp_path / "raw"), preset="generator")
    assert (summary.counts["written"], summary.counts["quarantined"]) == (2, 0)
    _assert_events(spark, settings, [GOOD_EVENTS[0], ("u9", dt.datetime(2026, 5, 3, 9, 0), "view", "p3", "garden", 2.5)])


def test_a_file_mostly_quarantined_fails_the_stage_after_writing_the_quarantine(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    """A timestamp format the mapping does not read: every row to quarantine, and exit 2."""
    lines = [f"e{i},u{i},01/05/2026 10:{i:02d},view,p1,books,1.0" for i in range(10)]
    source = _write(tmp_path / "raw" / "a.csv", [HEADER, *lines])
    settings.ingest.now = dt.datetime.fromisoformat(NOW)
    with pytest.raises(
        ValueError,
        match=r"10 of 10 rows \(100%\) were quarantined, above ingest.max_quarantine_share 20%; the commonest reason is unparseable_event_time \(10 rows\)",
    ):
        ingest.run(spark, settings, input_path=source, preset="generator")
    assert _quarantine(spark, settings).where("reason = 'unparseable_event_time'").count() == 10  # nothing lost


def test_pseudonymised_runs_keep_no_raw_user_id_anywhere(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pseudonymisation on, the quarantine's raw rows carry the pseudonym, a malformed line
    only its length and hash, and a file ingested again from another path no copy of its rows."""
    monkeypatch.setenv("INTEREST_DECAY_PSEUDONYM_KEY", "not-a-real-secret-77")
    settings.ingest.pseudonymize_user_ids = True
    lines = [CORPUS[0][0], "e5,rawuserseven,2026-05-01T10:00:00Z,view", "e15,rawusereight,2026-05-01T10:00:00Z,view,p1,books,abc"]
    source = _write(tmp_path / "day1" / "a.csv", [HEADER, *lines])
    ingest.run(spark, _fixed_now(settings), input_path=source, preset="generator")
    moved = _write(tmp_path / "day2" / "a-copy.csv", [HEADER, *lines])
    ingest.run(spark, settings, input_path=moved, preset="generator")
    written = [
        json.dumps(r.asDict(), default=str) for table in (_events(spark, settings), _quarantine(spark, settings)) for r in table.collect()
    ]
    assert not [row for row in written if "rawuser" in row or '"u1"' in row]
    # Nor in any text the lakehouse keeps beside the rows: Delta's logs (with their column
    # statistics, min and max values included) and the runs' summaries.
    texts = [p for p in Path(settings.lakehouse).rglob("*") if p.is_file() and p.suffix in (".json", ".crc", ".checkpoint")]
    assert texts and not [str(p) for p in texts if "rawuser" in p.read_text(errors="replace")]
    assert not [r for r in spark.read.format("delta").load(settings.table_path(Table.RUNS)).collect() if "rawuser" in r["summary"]]
    duplicate = _quarantine(spark, settings).where("reason = 'duplicate_event'").first()
    assert json.loads(duplicate["raw"]) == {"duplicate_of": _events(spark, settings).first()["event_id"]}
    malformed = _quarantine(spark, settings).where("reason = 'malformed_line' AND source LIKE '%day1%'").first()["raw"]
    assert malformed == f"withheld: a malformed line of {len(lines[1])} characters, sha256 {hashlib.sha256(lines[1].encode()).hexdigest()}"


@pytest.mark.slow
def test_two_ingests_at_once_into_a_new_lakehouse_both_land_every_row_once(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    """Two sessions (two notebooks on one cluster) ingest different files at the same moment
    into a lakehouse that has no tables yet: both succeed, and every row of both files, counted
    from the files themselves, is in the table exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    files = []
    for name, users in (("a", range(0, 40)), ("b", range(40, 80))):
        lines = [f"{name}{u},u{u},2026-05-{1 + u % 28:02d}T10:00:00Z,view,p{u},books,1.0" for u in users]
        files.append(_write(tmp_path / name / f"{name}.csv", [HEADER, *lines]))
    _fixed_now(settings)

    def one(path: str) -> dict[str, int]:
        return ingest.run(spark.newSession(), settings, input_path=path, preset="generator").counts

    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(one, files))
    expected = {line.split(",")[0] for path in files for line in Path(path).read_text().splitlines()[1:]}
    ids = [r["user_id"] for r in _events(spark, settings).collect()]
    assert len(ids) == len(set(ids)) == len(expected) == 80
    assert [c["written"] for c in counts] == [40, 40]


@pytest.mark.slow
def test_the_same_file_ingested_twice_at_once_into_a_new_lakehouse_lands_once(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    """A scheduled run and a manual one load the same file at the same moment into an empty
    table: both take the first-load path (nothing to compare with), the MERGE of whichever
    commits second conflicts and runs again against what the first wrote, so every row is in
    the table once and the two runs' counts add up to one file's rows."""
    from concurrent.futures import ThreadPoolExecutor

    lines = [f"e{u},u{u},2026-05-{1 + u % 28:02d}T10:00:00Z,view,p{u},books,1.0" for u in range(60)]
    source = _write(tmp_path / "same" / "events.csv", [HEADER, *lines, "e0,u0,2026-05-01T10:00:00Z,view,p0,books,-1.0"])
    _fixed_now(settings)

    def one(_: int) -> dict[str, int]:
        return ingest.run(spark.newSession(), settings, input_path=source, preset="generator").counts

    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(one, range(2)))
    ids = sorted(r["user_id"] for r in _events(spark, settings).collect())
    assert ids == sorted(f"u{u}" for u in range(60))
    assert sorted(c["written"] for c in counts) == [0, 60]
    assert [(c["read"], c["written"] + c["already_ingested"], c["quarantined.negative_price"]) for c in counts] == [(61, 60, 1)] * 2
    assert _quarantine(spark, settings).select("reason").collect() == [Row(reason="negative_price")]
