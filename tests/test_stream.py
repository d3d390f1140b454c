"""The streaming job on the shared shop's model: live rows equal batch `score` at a grid date,
files that land are ingested exactly as batch `ingest` ingests them, and a crash between the
ingest and the score commit, then a restart, ends with the same live scores as a run never
stopped."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Artifact, Table
from interest_decay.jobs import features, ingest, score, stream
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.models import resolve_model
from interest_decay.jobs.common.runs import tracking_uri
from interest_decay.jobs.common.storage import Storage, python_uri

from shops import TrainedShop, shop_settings

GRID_DATE = dt.date(2026, 3, 30)  # a window boundary of the shop's view (train.until)
# The model computes in float32: the same row scored in another Arrow batch can differ in the
# seventh significant digit (measured: at most 5.6e-7 relative).
FLOAT_TOLERANCE = 1e-6


def _model_columns(frame: pd.DataFrame) -> list[str]:
    skip = {"user_id", "as_of", "as_of_date", "scored_at", "events_until", "model_version"}
    return [c for c in frame.columns if c not in skip]


def assert_same_scores(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Every score column equal per user: numbers to 1e-6 (absolute or relative), arrays
    element-wise, text exactly."""
    left, right = left.set_index("user_id").sort_index(), right.set_index("user_id").sort_index()
    assert list(left.index) == list(right.index)
    for column in _model_columns(left.reset_index()):
        a, b = left[column], right[column]
        if a.map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            for x, y in zip(a, b, strict=True):
                if x is None or y is None:
                    assert x is None and y is None, column
                elif len(x) and isinstance(x[0], (dict, str)) or (len(x) and hasattr(x[0], "asDict")):
                    assert list(x) == list(y), column
                else:
                    assert pd.Series(list(x), dtype=float).tolist() == pytest.approx(
                        pd.Series(list(y), dtype=float).tolist(), rel=FLOAT_TOLERANCE, abs=FLOAT_TOLERANCE, nan_ok=True
                    ), column
        elif pd.api.types.is_float_dtype(a):
            assert a.to_numpy() == pytest.approx(b.to_numpy(), rel=FLOAT_TOLERANCE, abs=FLOAT_TOLERANCE, nan_ok=True), column
        else:
            assert a.tolist() == b.tolist(), column


def test_live_scores_at_a_grid_date_equal_batch_score(spark: SparkSession, shop: TrainedShop, tmp_path: Path) -> None:
    settings = shop.copy(tmp_path, only=("sequences", "category_interest", "_runs", "_models", "_mlflow", "events"))
    settings.score.tiers = "fixed"  # the stream's tiers; quantile tiers depend on who else is scored
    model = shop.trained.outputs["model"]
    features.run(spark, settings, as_of=GRID_DATE)  # the view and the users' categories at that date
    batch = score.run(spark, settings, as_of=GRID_DATE, model=model)
    batch_rows = spark.read.format("delta").load(batch.outputs["scores"]).where(F.col("as_of_date") == GRID_DATE).toPandas()

    moment = dt.datetime(GRID_DATE.year, GRID_DATE.month, GRID_DATE.day, tzinfo=dt.UTC)
    events = spark.read.format("delta").load(settings.table_path(Table.EVENTS))
    live = stream.live_scores(spark, settings, events, moment, resolve_model(spark, settings, model), moment).toPandas()
    assert len(live) == len(batch_rows) == batch.counts["scored"] > 1000
    assert (pd.to_datetime(live["as_of"]) == pd.Timestamp(GRID_DATE)).all()
    assert (pd.to_datetime(live["events_until"]) < pd.Timestamp(GRID_DATE)).all()
    assert_same_scores(live, batch_rows)


def _landing_files(shop: TrainedShop, users: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two arrivals of raw events of the shop's first ``users`` users: the events before
    2026-03-01, then those up to 2026-03-30 with one late event of the first arrival's period and
    one bad row."""
    raw = pd.concat(pd.read_parquet(p) for p in sorted((shop.root / "raw" / "events").glob("*.parquet")))
    kept = raw[raw["user_id"].isin(sorted(raw["user_id"].unique())[:users])]
    cut, end = pd.Timestamp("2026-03-01"), pd.Timestamp(GRID_DATE)
    first = kept[kept["event_time"] < cut].iloc[:-1]
    late = kept[kept["event_time"] < cut].iloc[-1:]
    bad = late.assign(event_type="teleport", event_id="bad-1")
    second = pd.concat([kept[(kept["event_time"] >= cut) & (kept["event_time"] < end)], late, bad])
    return first, second


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Spark reads microseconds; pandas would write nanoseconds.
    frame.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)


def _stream_settings(shop: TrainedShop, root: Path) -> Settings:
    return shop_settings(root, f"score.model={shop.trained.outputs['model']}", f"stream.landing={root / 'landing'}")


def _live(spark: SparkSession, settings: Settings) -> pd.DataFrame:
    return spark.read.format("delta").load(settings.table_path(Table.SCORES_LIVE)).toPandas()


@pytest.mark.slow
def test_the_stream_ingests_as_batch_does_and_a_crash_changes_nothing(
    spark: SparkSession, shop: TrainedShop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _landing_files(shop)

    # Never stopped: the first arrival, then the second with the first file arriving again.
    steady = _stream_settings(shop, tmp_path / "steady")
    _write(first, tmp_path / "steady" / "landing" / "a.parquet")
    one = stream.run(spark, steady)
    assert (one.counts["batches"], one.counts["files"], one.counts["written"]) == (1, 1, len(first))
    after_first = _live(spark, steady)
    assert len(after_first) == first["user_id"].nunique()
    _write(second, tmp_path / "steady" / "landing" / "b.parquet")
    _write(first, tmp_path / "steady" / "landing" / "a-again.parquet")
    two = stream.run(spark, steady)
    assert two.counts["batches"] == 1 and two.counts["quarantined.duplicate_event"] == len(first)
    assert two.counts["quarantined.unknown_event_type"] == 1
    steady_rows = _live(spark, steady)

    # The same files through batch ingest: the same events table, the same quarantine reasons.
    # (One batch ingest of the three files: which copy of a repeated event is kept may differ,
    # what it is may not.)
    batch = shop_settings(tmp_path / "batch")
    ingest.run(spark, batch, input_path=str(tmp_path / "steady" / "landing"), preset="generator")

    def events_of(where: Settings) -> list:
        return sorted(spark.read.format("delta").load(where.table_path(Table.EVENTS)).select("event_id", "user_id", "event_time").collect())

    def reasons_of(where: Settings) -> list[str]:
        return sorted(r["reason"] for r in spark.read.format("delta").load(where.table_path(Table.QUARANTINE)).select("reason").collect())

    assert events_of(steady) == events_of(batch)
    assert reasons_of(steady) == reasons_of(batch) == sorted(["duplicate_event"] * len(first) + ["unknown_event_type"])

    # Every live row is the user's score at the row's moment, from all their events: the late
    # event of the second arrival is in it, and users untouched since keep their row.
    moment = pd.Timestamp(steady_rows["as_of"].max())
    assert moment > pd.Timestamp(second["event_time"].max())
    touched = set(second["user_id"])
    untouched = steady_rows[~steady_rows["user_id"].isin(touched)]
    before = after_first[~after_first["user_id"].isin(touched)]
    pd.testing.assert_frame_equal(
        untouched.sort_values("user_id").reset_index(drop=True), before.sort_values("user_id").reset_index(drop=True)
    )
    recomputed = stream.live_scores(
        spark,
        steady,
        spark.read.format("delta").load(steady.table_path(Table.EVENTS)).where(F.col("user_id").isin(sorted(touched))),
        moment.to_pydatetime().replace(tzinfo=dt.UTC),
        resolve_model(spark, steady, None),
        dt.datetime.now(dt.UTC),
    ).toPandas()
    assert_same_scores(steady_rows[steady_rows["user_id"].isin(touched)], recomputed)

    # Crashed between ingesting the second arrival and writing its scores, then restarted.
    crashed = _stream_settings(shop, tmp_path / "crashed")
    _write(first, tmp_path / "crashed" / "landing" / "a.parquet")
    stream.run(spark, crashed)
    _write(second, tmp_path / "crashed" / "landing" / "b.parquet")
    _write(first, tmp_path / "crashed" / "landing" / "a-again.parquet")
    real_merge = stream.merge_live

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the score commit")

    monkeypatch.setattr(stream, "merge_live", crash)
    with pytest.raises(Exception, match="killed before the score commit"):
        stream.run(spark, crashed)
    monkeypatch.setattr(stream, "merge_live", real_merge)
    restarted = stream.run(spark, crashed)
    assert restarted.counts["batches"] == 1 and restarted.counts.get("written", 0) == 0  # the events were already in
    crashed_rows = _live(spark, crashed)
    assert_same_scores(crashed_rows, steady_rows)
    assert crashed_rows.sort_values("user_id")["as_of"].tolist() == steady_rows.sort_values("user_id")["as_of"].tolist()

    # A replayed batch (same app id and batch id) is skipped by Delta: nothing changes.
    version = spark.sql(f"DESCRIBE HISTORY delta.`{crashed.table_path(Table.SCORES_LIVE)}`").agg(F.max("version")).first()[0]
    rows = spark.read.format("delta").load(crashed.table_path(Table.SCORES_LIVE)).limit(3)
    stream.merge_live(
        spark,
        crashed.table_path(Table.SCORES_LIVE),
        rows,
        stream.app_id_for(stream.checkpoint_location(crashed, str(tmp_path / "crashed" / "landing"))),
        1,
    )
    assert spark.sql(f"DESCRIBE HISTORY delta.`{crashed.table_path(Table.SCORES_LIVE)}`").agg(F.max("version")).first()[0] == version
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_new_champion_is_used_from_the_next_batch_without_a_restart(spark: SparkSession, shop: TrainedShop, tmp_path: Path) -> None:
    """The stream resolves `models:/<name>@champion` at every micro-batch: moving the alias
    between two batches of one run scores the second batch with the new model."""
    shop.copy(tmp_path, only=("_runs", "_models", "_mlflow"))  # the model and its registry; no events yet
    landing = tmp_path / "landing"
    settings = shop_settings(
        tmp_path, "score.model=models:/interest-decay@champion", f"stream.landing={landing}", "stream.max_files_per_trigger=1"
    )
    first, second = _landing_files(shop, users=10)
    _write(first, landing / "a.parquet")
    _write(second, landing / "b.parquet")
    os.utime(landing / "a.parquet", (1_700_000_000, 1_700_000_000))  # a first: the stream takes the oldest file first

    # A second registered version: a new MLflow run whose published model is a copy of the shop's.
    old = shop.trained.outputs["mlflow_run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri(settings), registry_uri=tracking_uri(settings))
    new_run = client.create_run(client.get_run(old).info.experiment_id)
    client.set_terminated(new_run.info.run_id)
    storage = Storage.for_settings(settings)
    shutil.copytree(python_uri(storage.uri(Artifact.MODELS, old)), python_uri(storage.uri(Artifact.MODELS, new_run.info.run_id)))
    new_version = client.create_model_version("interest-decay", source=f"runs:/{new_run.info.run_id}/model", run_id=new_run.info.run_id)
    assert client.get_model_version_by_alias("interest-decay", "champion").run_id == old

    reports: list[stream.BatchReport] = []

    def promote_after_the_first(report: stream.BatchReport) -> None:
        reports.append(report)
        if len(reports) == 1:
            client.set_registered_model_alias("interest-decay", "champion", new_version.version)

    summary = stream.run(spark, settings, on_batch=promote_after_the_first)
    assert summary.counts["batches"] == 2
    assert [(Path(r.files[0]).name, r.model_version) for r in reports] == [("a.parquet", old), ("b.parquet", new_run.info.run_id)]
    live = _live(spark, settings)
    expected = {u: (new_run.info.run_id if u in set(second["user_id"]) else old) for u in set(first["user_id"]) | set(second["user_id"])}
    assert dict(zip(live["user_id"], live["model_version"], strict=True)) == expected
