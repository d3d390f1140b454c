"""Score every user of the view for one as-of date into the Delta table ``scores``.

A pandas UDF in iterator form scores Arrow batches in parallel on the executors; the model is
loaded once per Python worker. Each run replaces exactly its slice (as_of_date, model_version)
in one Delta commit, so there is one row per user per slice, a re-run changes nothing, and a
run killed part-way leaves the table as it was.

    spark-submit jobs/score.py --conf conf/local.yaml --as-of 2026-04-27 [--model runs:/<id>]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from contract import STATIC_FEATURES, view_spec
from jobs.config import Settings
from jobs.runs import RUNS_TABLE, RunSummary, stage_run, tracking_uri
from jobs.storage import Storage
from jobs.tables import require_table, table_exists, write_slice
from model.data import flat_columns
from model.scoring import feature_mismatch, read_metadata, score_batches, score_columns

log = logging.getLogger(__name__)

TIERS = ("high", "medium", "low")


def resolve_model(spark: SparkSession, settings: Settings, model: str | None) -> tuple[str, str]:
    """(local model folder, model_version) for a folder, ``runs:/<id>``, ``models:/<name>@<alias>``,
    or the newest trained model; model_version is the MLflow run id (the folder name for a folder)."""
    choice = model or settings.score.model
    if choice is None:
        runs = settings.table_path(RUNS_TABLE)
        latest = (
            spark.read.format("delta").load(runs).where("stage = 'train'").orderBy(F.desc("started_at")).select("summary").first()
            if table_exists(spark, runs)
            else None
        )
        if latest is None:
            raise ValueError("no trained model: run `interest-decay train`, or pass --model PATH or runs:/<mlflow run id>")
        outputs = json.loads(latest["summary"])["outputs"]
        return outputs["model"], outputs["mlflow_run_id"]
    if choice.startswith(("runs:/", "models:/")):
        import mlflow

        uri = tracking_uri(settings)
        if choice.startswith("models:/"):
            name, _, alias = choice.removeprefix("models:/").partition("@")
            if not alias:
                raise ValueError(f"--model {choice}: expected models:/<name>@<alias>")
            run_id = mlflow.tracking.MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(name, alias).run_id
        else:
            run_id = choice.removeprefix("runs:/").strip("/")
        # The slice is named after the training run, however the model was referred to.
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", tracking_uri=uri), run_id
    if not Storage.for_settings(settings).exists(choice):
        raise ValueError(f"model folder {choice} does not exist")
    return choice, choice.rstrip("/").rsplit("/", 1)[-1]


def local_model(settings: Settings, model_uri: str) -> str:
    """A local folder holding the model at ``model_uri`` (fetched once from an object store)."""
    return str(Storage.for_settings(settings).fetch(model_uri))


def check_model_fits(settings: Settings, metadata: dict, model_version: str) -> None:
    """Raise ValueError, naming every difference, when the model's feature spec is not the view's."""
    problems = feature_mismatch(
        metadata["feature_spec"], view_spec(settings.features.n_windows, settings.features.window_days, settings.horizons_days)
    )
    if problems:
        raise ValueError(f"model {model_version} does not fit the view: " + "; ".join(problems))


def score_udf(storage: Storage, model_uri: str, horizons: list[int], explain: bool = True, with_params: bool = False):  # noqa: ANN201
    """The iterator pandas UDF: (x_flat, mask, static) batches in, a struct of scores out
    (:func:`model.scoring.score_columns`). Each executor fetches the model from ``storage`` once
    into its local cache. ``evaluate`` runs the same UDF, with the decay parameters added."""

    @F.pandas_udf(", ".join(f"{name} {kind}" for name, kind in score_columns(horizons, with_params)))
    def score(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        yield from score_batches(str(storage.fetch(model_uri)), horizons, batches, explain, with_params)

    return score


def decaying_categories(interest: Column, min_drop: float) -> Column:
    """Names of the top categories whose recent share fell by at least ``min_drop``."""
    fading = F.filter(interest, lambda c: c["earlier_share"] - c["recent_share"] >= min_drop)
    return F.coalesce(F.transform(fading, lambda c: c["category"]), F.array().cast("array<string>"))


def with_tier_and_action(scores: DataFrame, settings: Settings, thresholds: tuple[float, float]) -> DataFrame:
    """``risk_tier`` from P(active within the longest horizon) against ``thresholds`` (high risk
    below the first, medium below the second) and the ``action`` the rules pick.

    Rules, first that applies: high risk and a decaying category -> recommend that category;
    high risk and a past buyer -> coupon; high risk -> win-back; medium risk -> reminder; else none.
    """
    high_below, medium_below = thresholds
    p_longest = F.col(f"p_active_{max(settings.horizons_days)}d")
    tier = F.when(p_longest < high_below, "high").when(p_longest < medium_below, "medium").otherwise("low")
    past_buyer = F.col("static")[STATIC_FEATURES.index("total_purchases")] > 0
    high = F.col("risk_tier") == "high"
    action = (
        F.when(high & (F.size("top_decaying_categories") > 0), F.concat(F.lit("recommend_category:"), F.col("top_decaying_categories")[0]))
        .when(high & past_buyer, "coupon")
        .when(high, "win_back")
        .when(F.col("risk_tier") == "medium", "reminder")
        .otherwise("none")
    )
    return scores.withColumn("risk_tier", tier).withColumn("action", action)


def _category_interest(spark: SparkSession, settings: Settings, as_of: dt.date) -> DataFrame:
    """Each user's top categories at ``as_of`` (none when the table was never built)."""
    path = settings.table_path("category_interest")
    if not table_exists(spark, path):
        return spark.createDataFrame(
            [], "user_id STRING, top_categories ARRAY<STRUCT<rank: INT, category: STRING, recent_share: DOUBLE, earlier_share: DOUBLE>>"
        )
    return spark.read.format("delta").load(path).where(F.col("as_of_date") == F.lit(as_of)).select("user_id", "top_categories")


def scores_frame(
    spark: SparkSession, settings: Settings, rows: DataFrame, as_of: dt.date, model: tuple[str, str], scored_at: dt.datetime
) -> tuple[DataFrame, DataFrame, tuple[float, float]]:
    """(the model's outputs for ``rows``, persisted; the rows of the scores table; the tier
    thresholds) for the view's ``rows`` at ``as_of``, scored by ``model`` (its URI and version)."""
    model_uri, model_version = model
    horizons = list(settings.horizons_days)
    udf = score_udf(Storage.for_settings(settings), model_uri, horizons, settings.score.drivers)
    model_scores = (
        rows.selectExpr(*flat_columns(horizons))
        .select("user_id", "static", udf("x_flat", "mask", "static").alias("s"))
        .select("user_id", "static", "s.*")
        .persist()  # the tiers' quantiles and the write read it: the model runs once
    )
    scored = model_scores.join(_category_interest(spark, settings, as_of), "user_id", "left").withColumn(
        "top_decaying_categories", decaying_categories(F.col("top_categories"), settings.score.decaying_share_drop)
    )
    p_longest = f"p_active_{max(horizons)}d"
    thresholds = settings.score.thresholds(lambda probabilities: scored.approxQuantile(p_longest, probabilities, 1e-4))
    model_columns = [name for name, _ in score_columns(horizons)]
    final = with_tier_and_action(scored, settings, thresholds).select(
        "user_id",
        F.lit(as_of).cast("date").alias("as_of_date"),
        F.lit(model_version).alias("model_version"),
        *model_columns[: model_columns.index("z")],
        "risk_tier",
        "action",
        "top_decaying_categories",
        "z",
        "reconstruction_error",
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
    return model_scores, final, thresholds


def run(spark: SparkSession, settings: Settings, as_of: dt.date | None = None, model: str | None = None) -> RunSummary:
    """Score every user of ``sequences`` at ``as_of`` (default: its latest as-of date)."""
    view_path = settings.table_path("sequences")
    require_table(spark, view_path)
    view = spark.read.format("delta").load(view_path)
    as_of = as_of or view.agg(F.max("as_of_date")).first()[0]
    rows = view.where(F.col("as_of_date") == F.lit(as_of))
    model_uri, model_version = resolve_model(spark, settings, model)
    metadata = read_metadata(local_model(settings, model_uri))
    check_model_fits(settings, metadata, model_version)
    inputs = {"as_of_date": str(as_of), "model_version": model_version, "model": model_uri}
    with stage_run(spark, settings, "score", rate=("users", "scored"), **inputs) as summary:
        log.info("scoring %s with model %s", as_of, model_version)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.score.arrow_batch_size))
        model_scores, final, thresholds = scores_frame(spark, settings, rows, as_of, (model_uri, model_version), summary.started_at)
        scores_path = settings.table_path("scores")
        slice_predicate = f"as_of_date = '{as_of}' AND model_version = '{model_version}'"
        try:
            # mergeSchema: a newer version may add score columns to a table older runs wrote.
            write_slice(spark, final, scores_path, slice_predicate, merge_schema=True)
        finally:
            model_scores.unpersist()

        written = spark.read.format("delta").load(scores_path).where(slice_predicate)
        tiers = {r["risk_tier"]: r["count"] for r in written.groupBy("risk_tier").count().collect()}
        summary.counts = {"users": rows.count(), "scored": sum(tiers.values()), **{f"tier.{t}": tiers.get(t, 0) for t in TIERS}}
        summary.outputs = {"scores": scores_path, "decay_curve_days": ",".join(str(d) for d in metadata["decay_curve_days"])}
        summary.inputs["risk_tiers"] = f"{settings.score.tiers}: high below {thresholds[0]:.4f}, medium below {thresholds[1]:.4f}"
    return summary


if __name__ == "__main__":
    from jobs.cli import run_stage_script

    run_stage_script("score")
