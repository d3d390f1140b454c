from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from interest_decay.contract import Table
from interest_decay.jobs.common.config import ConfigError, Settings, SourceMapping, absolute_path, load_settings

CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.parametrize("profile", ["local", "cluster", "cluster-gpu", "databricks"])
def test_every_shipped_profile_is_valid(profile: str) -> None:
    settings = load_settings(CONF / f"{profile}.yaml")
    # What a run records as its effective configuration reads back as the same settings.
    assert Settings.model_validate(settings.model_dump()) == settings
    assert settings.table_path(Table.EVENTS).endswith("/events")


def test_local_profile_matches_the_documented_defaults() -> None:
    settings = load_settings(CONF / "local.yaml")
    assert settings.spark.master == "local[*]"
    assert settings.spark.delta_jars == "local"
    assert settings.generator.start_date == dt.date(2026, 1, 1)
    assert settings.ingest.min_event_time == dt.datetime(1990, 1, 1)


def test_cluster_profiles_expect_delta_from_the_cluster() -> None:
    assert load_settings(CONF / "cluster.yaml").spark.delta_jars == "provided"
    assert load_settings(CONF / "databricks.yaml").spark.delta_jars == "provided"


def test_overrides_parse_values_as_yaml_and_keep_dotted_spark_keys_whole() -> None:
    settings = load_settings(
        CONF / "local.yaml",
        ["generator.users=123", "ingest.pseudonymize_user_ids=true", "spark.conf.spark.sql.shuffle.partitions=3"],
    )
    assert settings.generator.users == 123
    assert settings.ingest.pseudonymize_user_ids is True
    assert settings.spark.conf["spark.sql.shuffle.partitions"] == 3
    assert settings.spark.conf["spark.driver.memory"] == "8g"


def test_unknown_key_in_a_file_names_the_file_and_the_dotted_key(tmp_path: Path) -> None:
    conf = tmp_path / "typo.yaml"
    conf.write_text("ingest:\n  futur_tolerance_hours: 48\n")
    with pytest.raises(ConfigError) as err:
        load_settings(conf)
    assert str(conf) in str(err.value)
    assert "ingest.futur_tolerance_hours: unknown key" in str(err.value)


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("generator:\n  users: lots\n")
    with pytest.raises(ConfigError, match=r"generator\.users: .*valid integer.*'lots'"):
        load_settings(conf)


def test_out_of_range_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"generator\.users: .*greater than 0"):
        load_settings(None, ["generator.users=0"])


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_settings("nope.yaml")


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    conf = tmp_path / "list.yaml"
    conf.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(conf)


def test_invalid_yaml(tmp_path: Path) -> None:
    conf = tmp_path / "broken.yaml"
    conf.write_text("ingest: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(conf)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nonsense", "expected dotted.key=value"),
        ("spark.master.x=1", "spark.master is a value, not a section"),
        ("ingest.nope=1", "ingest.nope: unknown key"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(CONF / "local.yaml", [override])


def test_mapping_must_name_user_and_time_columns() -> None:
    with pytest.raises(ConfigError, match=r"ingest\.mapping\.columns: .*\['event_time'\]"):
        load_settings(None, ["ingest.preset=", "ingest.mapping={columns: {user_id: visitor}}"])


def test_mapping_event_types_must_be_canonical() -> None:
    with pytest.raises(ValueError, match="not among"):
        SourceMapping(columns={"user_id": "u", "event_time": "t"}, event_types={"addtocart": "basket"})


def test_table_paths_are_absolute_for_local_lakehouses_and_untouched_for_uris(tmp_path: Path) -> None:
    assert load_settings(None, ["lakehouse=rel/lake"]).table_path(Table.EVENTS) == str(Path("rel/lake").resolve() / "events")
    assert load_settings(None, ["lakehouse=s3a://b/lake/"]).table_path(Table.EVENTS) == "s3a://b/lake/events"
    assert load_settings(None, ["lakehouse=dbfs:/lake"]).table_path(Table.EVENTS) == "dbfs:/lake/events"


def test_a_validation_date_with_a_users_split_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.*validation_as_of goes with validation: as_of_date"):
        load_settings(None, ["train.validation=users", "train.validation_as_of=2026-03-01"])


def test_a_file_uri_lakehouse_is_the_local_folder_it_names(tmp_path: Path) -> None:
    # One spelling for Spark, Delta and the local artifacts: Delta refuses a table whose path it
    # sees as both file:///x and file:/x.
    assert absolute_path(f"file://{tmp_path}/lake") == str(tmp_path / "lake")
    assert absolute_path(f"file:{tmp_path}/lake") == str(tmp_path / "lake")
    assert absolute_path(f"file://localhost{tmp_path}/a%20b") == str(tmp_path / "a b")
    assert absolute_path("s3a://bucket/lake") == "s3a://bucket/lake" and absolute_path("dbfs:/lake") == "dbfs:/lake"
    with pytest.raises(ValueError, match="names no host"):
        absolute_path("file://server/lake")
