"""Evaluate the model against its baselines on the same users, labels and date, and write a report.

Out of time: the model trained with ``train.until = D`` is judged on the users of as-of date D,
with labels from what happened after D; the baselines are fitted on what was known on D. The
users are a seeded sample of up to ``evaluate.max_users``, scored by score's pandas UDF on the
executors; their rows and scores are collected, and the metrics computed, on the driver.
Rolling origins: at ``evaluate.folds`` earlier dates the model is retrained (one process) with
``until`` at that date and every baseline refitted, giving a spread of each metric.

Outputs: the Delta table ``evaluations`` (one row per method, horizon and fold; a re-run replaces
its (as_of_date, model_version) slice), an HTML report with PNGs under ``<lakehouse>/_reports``,
and an MLflow run with the same metrics and the report.

    spark-submit jobs/evaluate.py --conf conf/local.yaml [--as-of 2026-03-30] [--model runs:/<id>]
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import STATIC_FEATURES, Artifact, Table
from interest_decay.features.sessions import session_offsets, session_starts
from interest_decay.features.windows import censor_at
from interest_decay.jobs import train as train_job
from interest_decay.jobs.common.config import EvaluateSettings, Settings
from interest_decay.jobs.common.models import check_model_fits, local_model, resolve_model
from interest_decay.jobs.common.report import ReportData, write_report
from interest_decay.jobs.common.runs import RunSummary, stage_run, tracking_uri
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.tables import last_commit_metadata, latest_version, slice_predicate, table_exists, write_slice
from interest_decay.jobs.common.udf import score_udf
from interest_decay.jobs.common.views import read_view, rows_by_date, validation_date, view_arrays
from interest_decay.model.data import flat_columns, sample_indices
from interest_decay.model.evaluated import (
    IMPORTANCE_USERS,
    Evaluated,
    cross_validation_summary,
    explain,
    future_checks,
    headline_metrics,
    model_outputs_from,
    visit_checks,
    with_auc_gain_intervals,
)
from interest_decay.model.evaluation import (
    METHODS,
    Predictions,
    comparison_table,
    fit_baselines,
    labels_within,
    principal_components,
    spearman_by_sessions,
)
from interest_decay.model.metadata import read_metadata
from interest_decay.model.scoring import load_scorer, risk_tier, score_columns

log = logging.getLogger(__name__)

# The per-user maximum-likelihood reference fits each user alone: a seeded sample above this.
TRUTH_USERS = 20_000


def evaluation_date(view: DataFrame, horizons_days: list[int], until: dt.date | None) -> dt.date:
    """The first as-of date on or after ``until`` (out of time), or without ``until`` the latest
    whose longest horizon is observed for every user."""
    dates = view.select("as_of_date").distinct()
    if until is not None:
        row = dates.where(F.col("as_of_date") >= F.lit(until)).agg(F.min("as_of_date")).first()
        if row[0] is None:
            raise ValueError(f"the view has no as-of date on or after the model's train.until {until}")
        return row[0]
    return validation_date(view, max(horizons_days))


def _sample(
    rows: DataFrame, columns: list[str], limit: int, available: int, seed: int, model: Callable[[DataFrame], DataFrame] | None = None
) -> pd.DataFrame:
    """``columns`` of up to ``limit`` of the ``available`` rows, those whose user ids hash lowest
    (not sample(): the same users whatever the partitioning), in that order; with ``model``, the
    columns it adds to the chosen rows too (it runs in Spark, on the sample only)."""
    key = F.xxhash64("user_id", F.lit(seed))

    def lowest(candidates: DataFrame) -> pd.DataFrame:
        chosen = (
            candidates.select("*", key.alias("sample_key"))
            .orderBy("sample_key", "as_of_date")
            .limit(limit)
            .selectExpr(*columns, "sample_key", "as_of_date AS sample_date")
        )
        frame = (model(chosen) if model else chosen).toPandas()
        order = ["sample_key", "sample_date"]
        return frame.sort_values(order, kind="stable").drop(columns=order).reset_index(drop=True)

    if available > 2 * limit:
        # The rows with the lowest hashes lie below a bound that about 1.25 x limit rows pass, so
        # the top-K holds a few of them instead of every row. Too few pass only by a freak of the
        # hash (or users with very many rows each); then the sample is taken without the bound.
        bound = -(2**63) + int(min(1.0, 1.25 * limit / available) * 2**64)
        picked = lowest(rows.where(key < F.lit(bound)))
        if len(picked) == limit:
            return picked
    return lowest(rows)


def model_pass(spark: SparkSession, settings: Settings, model_uri: str) -> Callable[[DataFrame], DataFrame]:
    """The rows -> rows + the model's outputs function of an evaluation: score's pandas UDF (no
    drivers, with the decay parameters) on the executors, over as many partitions as the
    session has cores, each executor fetching the model once."""
    horizons = list(settings.horizons_days)
    udf = score_udf(Storage.for_settings(settings), model_uri, horizons, explain=False, with_params=True)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.score.arrow_batch_size))
    names = [name for name, _ in score_columns(horizons, with_params=True) if name not in ("drivers", "driver_effects")]

    def scored(rows: DataFrame) -> DataFrame:
        spread = rows.repartition(spark.sparkContext.defaultParallelism)  # the top-K left them in one partition
        return spread.select("*", udf("x_flat", "mask", "static").alias("model")).select(
            *rows.columns, *[F.col(f"model.{n}").alias(f"model_{n}") for n in names]
        )

    return scored


def evaluate_at(view: DataFrame, settings: Settings, as_of: dt.date, model_uri: str, horizons: list[int]) -> Evaluated:
    """Every method on the users of ``as_of``: the model at ``model_uri`` (scored by score's
    pandas UDF on the sample) and the baselines fitted on what was known then."""
    conf = settings.evaluate
    spark = view.sparkSession
    per_date = rows_by_date(view)
    population = per_date.get(as_of, 0)
    if population == 0:
        raise ValueError(f"the view has no users at {as_of}")
    columns = flat_columns(settings.horizons_days)
    at_date = view.where(F.col("as_of_date") == F.lit(as_of))
    rows = _sample(at_date, columns, conf.max_users, population, conf.seed, model_pass(spark, settings, model_uri))
    outputs = model_outputs_from(rows)
    inputs, targets = view_arrays(rows, settings)
    labels = labels_within(targets, horizons)
    history = censor_at(view, as_of, settings.horizons_days, settings.features.window_days)
    earlier = sum(count for date, count in per_date.items() if date < as_of)
    history_frame = _sample(history, columns, conf.baseline_rows, earlier, conf.seed)
    history_inputs, history_targets = view_arrays(history_frame, settings)
    log.info(
        "evaluated %d of the %d users at %s (the model through the scoring UDF); hazard baselines learn from %d earlier rows",
        len(rows),
        population,
        as_of,
        len(history_targets["censored"]),
    )
    scorer = load_scorer(local_model(settings, model_uri))
    by_method = {"model": scorer.p_active_from(outputs["decay_params"], horizons).astype(np.float64)}
    censored = targets["censored"] > 0.5
    # Every user at the date is followed to the end of the data: a censored user's wait is that span.
    span = float(targets["days_to_next"][censored].max()) if censored.any() else float(targets["days_to_next"].max())
    days = curve_check_days(max(horizons), span)
    baselines, failures, curves = fit_baselines(
        history_inputs,
        history_targets,
        inputs,
        horizons,
        settings.features.window_days,
        conf.seed,
        history_frame["user_id"].to_numpy(),
        conf.btyd_fit_users,
        curve_days=list(days),
    )
    predictions = Predictions(list(horizons), {**by_method, **baselines}, failures)
    days_to_return = np.where(censored, np.inf, targets["days_to_next"]).astype(np.float64)
    user_ids = rows["user_id"].to_numpy()
    observed = {h: count for h, count in visits_within(spark, settings, as_of, user_ids, [h for h in horizons if h <= span]).items()}
    return Evaluated(
        as_of,
        user_ids,
        inputs,
        labels,
        predictions,
        comparison_table(labels, predictions),
        outputs,
        days_to_return,
        targets["future_sessions"],
        population,
        len(history_targets["censored"]),
        observed_span_days=span,
        curve_days=days,
        baseline_curves=curves,
        visits_observed=observed,
    )


def curve_check_days(longest_horizon: int, span_days: float) -> np.ndarray:
    """The days the decay curves are checked on: a week's days, then weeks and months, up to
    the longest horizon and no further than the data reach."""
    days = {1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 75, 91, *range(120, longest_horizon, 30), longest_horizon}
    return np.array(sorted(d for d in days if d <= min(longest_horizon, span_days)), dtype=np.float64)


def visits_within(
    spark: SparkSession, settings: Settings, as_of: dt.date, user_ids: np.ndarray, horizons: list[int]
) -> dict[int, np.ndarray]:
    """Each user's visits (sessions started) in the ``h`` days from ``as_of``, for every horizon
    h, counted from the sessions (or the events), in the order of ``user_ids``."""
    if not horizons:
        return {}
    start = dt.datetime.combine(as_of, dt.time())
    starts = read_session_starts(spark, settings).join(_users_frame(spark, user_ids), "user_id")
    after = F.col("session_start") >= F.lit(start)
    counts = starts.groupBy("user_id").agg(
        *[F.count(F.when(after & (F.col("session_start") < F.lit(start + dt.timedelta(days=h))), 1)).alias(f"h{h}") for h in horizons]
    )
    frame = counts.toPandas().set_index("user_id").reindex(user_ids).fillna(0)
    return {h: frame[f"h{h}"].to_numpy(np.float64) for h in horizons}


def rolling_origins(view: DataFrame, settings: Settings, as_of: dt.date, horizons: list[int]) -> tuple[pd.DataFrame, list[str]]:
    """Metrics at ``evaluate.folds`` earlier origins, the model retrained at each; (table, notes)."""
    conf = settings.evaluate
    window = settings.features.window_days
    step = conf.fold_step_days or window * -(-max(horizons) // window)
    tables, notes = [], []
    for k in range(1, conf.folds + 1):
        origin = as_of - dt.timedelta(days=k * step)
        fold = settings.model_copy(
            update={
                "train": settings.train.model_copy(
                    update={
                        "until": origin,
                        "mode": "single",
                        "epochs": conf.fold_epochs or settings.train.epochs,
                        "alias": None,
                        "registered_model": None,
                        # Every date before the origin trains, as the baselines learn from every
                        # date before it; validating on the latest date with the longest horizon
                        # known would leave an early origin a date or two to learn from.
                        "validation": "users",
                        "validation_as_of": None,
                        "experiment": f"{settings.train.experiment}-folds",
                    }
                )
            }
        )
        try:
            trained = train_job.run(view.sparkSession, fold, stage="train_fold")
            try:
                evaluated = evaluate_at(view, settings, origin, trained.outputs["model"], horizons)
            finally:  # a fold's model is needed for its evaluation only: none pile up under _models
                storage = Storage.for_settings(settings)
                storage.remove(trained.outputs["model"])
                storage.remove(trained.outputs["checkpoints"])
        except ValueError as exc:
            notes.append(f"origin {origin} skipped: {exc}")
            log.warning("rolling origin %s skipped: %s", origin, exc)
            continue
        tables.append(evaluated.table.assign(fold=str(origin)))
        log.info("rolling origin %s: model AUC %s", origin, evaluated.table.query("method == 'model'")["roc_auc"].round(4).tolist())
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), notes


def rolling_origin_count(conf: EvaluateSettings, users: int) -> tuple[int, list[str]]:
    """(how many rolling origins to retrain at, notes for the report): ``evaluate.folds``, or none
    when the evaluation date has more than ``evaluate.folds_max_users`` users."""
    if conf.folds and users > conf.folds_max_users:
        return 0, [
            f"rolling origins left out: {users:,} users at the evaluation date, more than evaluate.folds_max_users "
            f"({conf.folds_max_users:,}); each origin retrains the model"
        ]
    return conf.folds, []


def folds_for(view: DataFrame, settings: Settings, as_of: dt.date, horizons: list[int], users: int) -> tuple[pd.DataFrame, list[str]]:
    """The rolling-origin metrics and notes, when :func:`rolling_origin_count` keeps any origin."""
    count, notes = rolling_origin_count(settings.evaluate, users)
    if not count:
        for note in notes:
            log.warning(note)
        return pd.DataFrame(), notes
    return rolling_origins(view, settings, as_of, horizons)


def _users_frame(spark: SparkSession, user_ids: np.ndarray) -> DataFrame:
    # Small enough to broadcast: a join with it reads only these users' rows of a large table.
    return F.broadcast(spark.createDataFrame(pd.DataFrame({"user_id": user_ids})))


def read_truth(spark: SparkSession, settings: Settings, user_ids: np.ndarray) -> pd.DataFrame | None:
    """The generator's truth for ``user_ids``, one row each in their order (generated data), or
    None: no truth table, or its users are not these (pseudonymised ids do not match)."""
    path = settings.table_path(Table.TRUTH)
    if not table_exists(spark, path):
        return None
    truth = spark.read.format("delta").load(path).join(_users_frame(spark, user_ids), "user_id")
    matched = truth.toPandas().set_index("user_id").reindex(user_ids)
    return matched if matched["tau_days"].notna().mean() > 0.9 else None


def read_session_starts(spark: SparkSession, settings: Settings) -> DataFrame:
    """(user_id, session_start) of every session: from the sessions table when it is up to date
    with the events (a quarter of their size at 50 events per user), else from the events."""
    events_path, sessions_path = settings.table_path(Table.EVENTS), settings.table_path(Table.SESSIONS)
    built_from = last_commit_metadata(spark, sessions_path)
    if built_from is not None:
        current = {"events_version": latest_version(spark, events_path), "gap_minutes": settings.sessions.gap_minutes}
        if all(built_from.get(key) == value for key, value in current.items()):
            return spark.read.format("delta").load(sessions_path).select("user_id", "session_start")
    log.info("the sessions table is missing or behind the events; session starts come from the events")
    return session_starts(spark.read.format("delta").load(events_path), settings.sessions.gap_minutes)


def truth_comparison(
    spark: SparkSession, settings: Settings, evaluated: Evaluated, truth_tau: np.ndarray, members: np.ndarray
) -> tuple[pd.DataFrame, dict]:
    """Predicted interest half-lives against the generator's (tau ln 2), next to the achievable
    reference: the generator's process fitted to each user by maximum likelihood from the
    sessions before the as-of date; for the evaluated users at the indices ``members``.
    (table by past sessions, metrics)."""
    from interest_decay.model.reference import fit_decay_mle

    as_of = dt.datetime.combine(evaluated.as_of, dt.time())
    user_ids = evaluated.user_ids[members]
    offsets = session_offsets(read_session_starts(spark, settings).join(_users_frame(spark, user_ids), "user_id"), as_of)
    offsets = offsets.toPandas().set_index("user_id")
    offsets = offsets.reindex(user_ids)
    has_history = offsets["span_days"].notna().to_numpy()
    reference = np.full(len(user_ids), np.nan)
    if has_history.any():
        fit = fit_decay_mle(
            [np.asarray(o, np.float64) for o in offsets["offsets_days"][has_history]], offsets["span_days"][has_history].to_numpy()
        )
        reference[has_history] = fit.interest_half_life_days
    outputs = evaluated.model_outputs
    past_sessions = evaluated.inputs["static"][members, STATIC_FEATURES.index("total_sessions")]
    table = spearman_by_sessions(
        {
            "model": outputs["interest_half_life_days"][members],
            "reference_mle": reference,
            "silence_half_life (contrast)": outputs["silence_half_life_days"][members],
            "return_median (contrast)": outputs["return_median_days"][members],
        },
        truth_tau[members] * np.log(2.0),
        past_sessions,
    )
    overall = table.iloc[0]
    metrics = {
        "interest_half_life_spearman_vs_truth": overall["model"],
        "reference_mle_spearman_vs_truth": overall["reference_mle"],
        "return_median_spearman_vs_truth": overall["return_median (contrast)"],
        "silence_half_life_spearman_vs_truth": overall["silence_half_life (contrast)"],
    }
    return table, metrics


def truth_section(
    spark: SparkSession, settings: Settings, main: Evaluated, truth: pd.DataFrame | None, seed: int = 0
) -> tuple[np.ndarray | None, pd.DataFrame, dict]:
    """On generated data (``truth`` from :func:`read_truth`): (each user's true time constant, the
    half-life comparison by past sessions on up to TRUTH_USERS of them, its metrics); elsewhere
    (None, empty, {})."""
    if truth is None:
        return None, pd.DataFrame(), {}
    truth_tau = truth["tau_days"].to_numpy(np.float64)
    # The interest half-life (the excess rate halves) is what the generator's time constant
    # sets; the median wait for the next visit is shown for contrast.
    table, metrics = truth_comparison(spark, settings, main, truth_tau, sample_indices(len(main.user_ids), TRUTH_USERS, seed))
    return truth_tau, table, metrics


def _write_table(spark: SparkSession, settings: Settings, rows: pd.DataFrame, as_of: dt.date, model_version: str) -> str:
    path = settings.table_path(Table.EVALUATIONS)
    frame = (
        spark.createDataFrame(rows).withColumn("as_of_date", F.lit(as_of).cast("date")).withColumn("model_version", F.lit(model_version))
    )
    # mergeSchema: a newer version may add metric columns to a table older runs wrote.
    write_slice(spark, frame, path, slice_predicate(as_of, model_version), merge_schema=True)
    return path


def _log_mlflow(settings: Settings, summary: RunSummary, report_folder: Path, model_version: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(settings))
    mlflow.set_experiment(settings.train.experiment)
    with mlflow.start_run(run_name=f"evaluate-{summary.run_id}") as active:
        mlflow.set_tag("model_run_id", model_version)
        mlflow.log_params({k: v for k, v in summary.inputs.items() if k != "model"})
        mlflow.log_metrics({k: v for k, v in summary.metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)})
        mlflow.log_artifacts(str(report_folder), artifact_path="report")
        return active.info.run_id


@dataclass(frozen=True)
class ModelUnderTest:
    """The model an evaluation judges and the date it is judged on."""

    uri: str
    version: str
    path: str  # a local copy of the SavedModel
    trained_until: dt.date | None
    as_of: dt.date

    @property
    def out_of_time(self) -> bool:
        return self.trained_until is not None and self.as_of >= self.trained_until


def model_under_test(
    spark: SparkSession, settings: Settings, view: DataFrame, horizons: list[int], as_of: dt.date | None, model: str | None
) -> ModelUnderTest:
    """The model ``model`` names (default: the newest trained) and the evaluation date: ``as_of``,
    else ``evaluate.as_of``, else the first date on or after the model's ``train.until``."""
    uri, version = resolve_model(spark, settings, model)
    path = local_model(settings, uri)
    metadata = read_metadata(path)
    check_model_fits(settings, metadata, version)
    until_text = metadata.get("training", {}).get("until") or ""
    until = dt.date.fromisoformat(until_text) if until_text else None
    chosen = ModelUnderTest(uri, version, str(path), until, as_of or settings.evaluate.as_of or evaluation_date(view, horizons, until))
    if not chosen.out_of_time:
        log.warning(
            "the model was not trained with train.until <= %s: it may have seen these labels (not an out-of-time evaluation)", chosen.as_of
        )
    return chosen


def sample_sizes(main: Evaluated, conf: EvaluateSettings) -> str:
    """The users (or rows) each part of the evaluation saw, for the report."""
    users = len(main.user_ids)
    evaluated = f"{users:,} of the {main.population:,} users at the date" + (
        f" (a seeded sample: evaluate.max_users {conf.max_users:,})" if users < main.population else ""
    )
    return (
        f"model, baselines and metrics on {evaluated}; paired bootstrap on {min(users, conf.bootstrap_users):,}; "
        f"BG/NBD and Pareto/NBD fitted on {min(users, conf.btyd_fit_users):,}; hazard baselines on {main.history_rows:,} earlier rows; "
        f"permutation importance on {min(users, IMPORTANCE_USERS):,}; half-lives against the truth (generated data) on "
        f"{min(users, TRUTH_USERS):,}"
    )


def run(spark: SparkSession, settings: Settings, as_of: dt.date | None = None, model: str | None = None) -> RunSummary:
    """Evaluate out of time and over rolling origins; write the table, the report and the MLflow run."""
    conf = settings.evaluate
    view, _ = read_view(spark, settings)
    horizons = sorted(conf.horizons_days or settings.horizons_days)
    target = model_under_test(spark, settings, view, horizons, as_of, model)
    inputs = {
        "as_of_date": str(target.as_of),
        "model_version": target.version,
        "model": target.uri,
        "horizons_days": ",".join(map(str, horizons)),
        "model_trained_until": str(target.trained_until or ""),
        "out_of_time": target.out_of_time,
    }
    with stage_run(spark, settings, "evaluate", rate=("users", "users"), **inputs) as summary:
        main = evaluate_at(view, settings, target.as_of, target.uri, horizons)
        folds, notes = folds_for(view, settings, target.as_of, horizons, main.population)
        main.table = with_auc_gain_intervals(main, conf.bootstrap_rounds, conf.seed, conf.bootstrap_users)
        scorer = load_scorer(target.path)
        # The tiers as `score` sets them: P(active) over the view's longest horizon.
        tier_p = scorer.p_active_from(main.model_outputs["decay_params"], [max(settings.horizons_days)])[:, 0]
        thresholds = settings.score.thresholds(lambda probabilities: np.quantile(tier_p, probabilities))
        tiers = risk_tier(tier_p, *thresholds)
        truth = read_truth(spark, settings, main.user_ids)
        calibration, decay, visit_metrics = visit_checks(scorer, main, settings.features.window_days, truth)
        truth_tau, truth_table, truth_metrics = truth_section(spark, settings, main, truth, conf.seed)
        future_tables, future_metrics = future_checks(scorer, main)
        metrics = {**headline_metrics(main, horizons, tiers), **visit_metrics, **future_metrics, **truth_metrics}
        importance, explained_users = explain(scorer, main, horizons[-1], conf.seed, conf.explain_users)
        facts = {
            "model trained until": str(target.trained_until or "(not set)"),
            "sample sizes": sample_sizes(main, conf),
            "risk tiers": f"{settings.score.tiers}: high below P={thresholds[0]:.3f}, medium below P={thresholds[1]:.3f}",
            **metrics,
        }
        report = report_data(
            scorer,
            main,
            target,
            facts,
            folds,
            notes,
            tiers=tiers,
            importance=importance,
            explained_users=explained_users,
            visits_calibration=calibration,
            decay_check=decay,
            truth_tau_days=truth_tau,
            truth_by_sessions=truth_table,
            **future_tables,
        )
        # The table first: a report is only published for an evaluation that was recorded.
        rows = pd.concat([main.table.assign(fold="out_of_time"), folds], ignore_index=True).assign(evaluation_run_id=summary.run_id)
        table_path = _write_table(spark, settings, rows, target.as_of, target.version)
        storage = Storage.for_settings(settings)
        report_uri = storage.uri(Artifact.REPORTS, f"evaluate-{target.as_of}-{summary.run_id}")
        with storage.publishing(report_uri) as report_folder:
            write_report(report, report_folder)
        summary.counts = {
            "users": len(main.user_ids),
            "methods": len(METHODS),
            "horizons": len(horizons),
            "rolling_origins": int(folds["fold"].nunique()) if len(folds) else 0,
        }
        summary.metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
        summary.outputs = {"report": f"{report_uri}/index.html", Table.EVALUATIONS.value: table_path}
        summary.outputs["mlflow_run_id"] = _log_mlflow(settings, summary, storage.fetch(report_uri), target.version)
    return summary


def report_data(
    scorer,  # noqa: ANN001
    main: Evaluated,
    target: ModelUnderTest,
    facts: dict,
    folds: pd.DataFrame,
    notes: list[str],
    **sections: object,
) -> ReportData:
    """Everything the HTML report shows about one evaluation; ``sections`` are the report's
    fields computed elsewhere (tiers, importance, explained users, calibration, ...)."""
    horizons = main.predictions.horizons_days
    longest = horizons[-1]
    outputs = main.model_outputs  # half-lives, z, and the decay parameters every curve comes from
    curve_days = np.linspace(0.0, max(longest, 90), 61)
    survival = np.concatenate(
        [np.ones((len(main.user_ids), 1)), 1.0 - scorer.p_active_from(outputs["decay_params"], list(curve_days[1:]))], axis=1
    )
    facts = {
        "evaluation as-of date": target.as_of,
        "model": target.version,
        "out of time": target.out_of_time,
        "users evaluated": len(main.user_ids),
        "horizons (days)": horizons,
        "failed baselines": "; ".join(f"{m}: {why}" for m, why in main.predictions.failures.items()) or "none",
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in facts.items()},
    }
    return ReportData(
        title=f"interest-decay evaluation at {target.as_of}",
        facts=facts,
        comparison=main.table,
        cross_validation=cross_validation_summary(folds),
        horizon=longest,
        labels=main.labels[longest],
        predictions={
            m: main.predictions.at(m, longest) for m, p in METHODS.items() if (p or m == "recency_rule") and m in main.predictions.by_method
        },
        probability_methods=[m for m, p in METHODS.items() if p and m in main.predictions.by_method],
        curve_days=curve_days,
        survival=survival,
        half_life_days=outputs["interest_half_life_days"],
        latent_2d=principal_components(outputs["z"]) if "z" in outputs and outputs["z"].shape[1] >= 2 else None,
        days_to_return=main.days_to_return,
        notes=notes,
        **sections,
    )


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("evaluate")
