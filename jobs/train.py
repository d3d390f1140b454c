"""Train the interest model on the ``sequences`` view: Horovod-on-Spark fed by petastorm, or one process.

Out-of-time split: with ``train.until`` set, nothing after that date is used (the view is censored
there, see :func:`features.windows.censor_at`), so an evaluation on that date is out of time.
Validation (``train.validation``) is one later as-of date V, with training on the dates before it
and labels censored at V, or a share of the users, with the others training on every date.
Normalisation is fitted on a sample of the training rows only. Checkpoints go to
``<lakehouse>/_checkpoints/<fingerprint>``, keyed by the settings and the view version, so
running the same training again after a crash resumes from the last epoch. Everything is
tracked in MLflow (``<lakehouse>/_mlflow`` unless MLFLOW_TRACKING_URI says otherwise).

    spark-submit jobs/train.py --conf conf/local.yaml [--fresh]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import STATIC_FEATURES, Artifact, Table, view_spec
from interest_decay.features.windows import censor_at, complete_labels, rows_per_as_of, split_by_users
from interest_decay.jobs.common.config import Settings, TrainSettings
from interest_decay.jobs.common.runs import RunSummary, stage_run, tracking_uri
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.views import read_view, rows_by_date, validation_date, view_arrays, view_shape
from interest_decay.model.data import flat_columns, recency_score
from interest_decay.model.network import fit_normalisation
from interest_decay.model.training import auc_by_horizon

if TYPE_CHECKING:
    from interest_decay.model.distributed import RunPlan

log = logging.getLogger(__name__)


def split(known: DataFrame, conf: TrainSettings, horizons_days: list[int], window_days: int) -> tuple[DataFrame, DataFrame, str]:
    """(training rows, validation rows, what validates: a date or "users:<share>") of the rows
    known at ``train.until``, as ``train.validation`` says."""
    if conf.validation == "users":
        training, validating = split_by_users(known, conf.validation_users, conf.seed)
        return training, validating, f"users:{conf.validation_users:g}"
    validation = conf.validation_as_of or validation_date(known, max(horizons_days))
    # censor_at keeps the dates before ``validation`` and cuts their labels there.
    return censor_at(known, validation, horizons_days, window_days), known.where(F.col("as_of_date") == F.lit(validation)), str(validation)


def ranks_for(num_proc: int | str, parallelism: int, cpus_per_task: int = 1) -> int:
    """Horovod ranks for ``train.num_proc``: the number itself, or for "auto" one rank per task
    slot Spark offers (its default parallelism, the executors' cores in all, over
    ``spark.task.cpus``), at least one."""
    if num_proc == "auto":
        return max(1, parallelism // max(1, cpus_per_task))
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc must be a positive number or 'auto', got {num_proc!r}")
    return num_proc


def _sample(frame: DataFrame, rows: int, total: int, seed: int) -> DataFrame:
    return frame if total <= rows else frame.sample(fraction=min(1.0, 1.2 * rows / total), seed=seed).limit(rows)


def _fingerprint(settings: Settings, view_version: int, validation: str) -> str:
    """Identifies a training run for its checkpoints; epochs and patience are left out, so
    asking for more epochs continues the same run."""
    model_settings = settings.train.model_dump(mode="json", exclude={"epochs", "patience"})
    payload = json.dumps({"train": model_settings, "view": view_version, "val": validation}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def register(run_id: str, name: str) -> str:
    """Register the run's model as a new version of ``name``; the version."""
    return str(mlflow.register_model(f"runs:/{run_id}/model", name).version)


def promote(settings: Settings, summary: RunSummary, force: bool = False) -> str:
    """Move ``train.alias`` (the model ``score --model models:/<name>@<alias>`` serves) to this
    run's model version, once the run is recorded in ``_runs``, and only when it is not worse on
    its validation rows than the model the alias names now (the AUC at the longest horizon the
    validation labels measure), or
    when ``force``; what was decided, for the log."""
    conf = settings.train
    registered = summary.outputs.get("registered_model", "")
    if not (conf.alias and registered):
        return "no alias to move"
    name, _, version = registered.rpartition("/")
    client = mlflow.tracking.MlflowClient(tracking_uri(settings), registry_uri=tracking_uri(settings))
    measured = client.get_run(summary.outputs["mlflow_run_id"]).data.metrics
    # The longest horizon this run's validation labels measure (a horizon longer than the
    # validation rows have complete labels for has no AUC).
    horizon = next(
        (h for h in sorted(settings.horizons_days, reverse=True) if f"final_val_auc_{h}d" in measured), max(settings.horizons_days)
    )
    metric = f"final_val_auc_{horizon}d"
    new = measured.get(metric)
    try:
        current = client.get_model_version_by_alias(name, conf.alias)
    except mlflow.exceptions.MlflowException:
        current = None
    old = client.get_run(current.run_id).data.metrics.get(metric) if current is not None else None
    if not force and current is not None and old is not None and (new is None or new < old):
        return f"{conf.alias} stays on version {current.version} ({metric} {old:.4f}; this run's {new if new is None else round(new, 4)})"
    client.set_registered_model_alias(name, conf.alias, version)
    return f"{conf.alias} moved to version {version} ({metric} {new if new is None else round(new, 4)}, was {old if old is None else round(old, 4)})"


@dataclass(frozen=True)
class RunArtifacts:
    """Where one training run's artifacts go in the store. Every process that trains (each
    Horovod rank, or the driver alone) calls :meth:`train` on its copy: checkpoints are restored
    from the store first, the chief uploads new ones and the TensorBoard logs after every epoch,
    and the chief publishes the SavedModel when training ends."""

    storage: Storage
    checkpoints: str
    tensorboard: str
    model: str

    def train(self, body: Callable[..., dict], plan: RunPlan, *args: object) -> dict:
        """Run ``body(plan, *args)`` with the plan's folders local; publish the chief's model."""
        with (
            self.storage.working_folder(self.checkpoints) as checkpoints,
            self.storage.working_folder(self.tensorboard) as tensorboard,
            self.storage.staging_folder(self.model) as model_dir,
        ):

            def after_epoch(epoch: int, logs: dict) -> None:
                checkpoints.sync()
                tensorboard.sync()

            local = replace(
                plan,
                checkpoint_dir=str(checkpoints.local),
                tensorboard_dir=str(tensorboard.local),
                model_dir=str(model_dir),
                on_epoch_end=after_epoch,
            )
            result = body(local, *args)
            if result["rank"] == 0:
                self.storage.publish(model_dir, self.model)
        return result


@dataclass(frozen=True)
class TrainingRows:
    """The rows one training run learns from and validates on, from one version of the view."""

    view_version: int
    validation: str  # what validates: an as-of date, or "users:<share>"
    train: DataFrame  # flat columns (see model.data.flat_columns)
    val: DataFrame
    n_train: int
    n_val: int
    n_available: int  # training rows before train.max_rows_per_as_of


def training_rows(spark: SparkSession, settings: Settings) -> TrainingRows:
    """The view's rows known at ``train.until``, split as ``train.validation`` says."""
    conf, horizons, window_days = settings.train, settings.horizons_days, settings.features.window_days
    view, version = read_view(spark, settings)
    known = censor_at(view, conf.until, horizons, window_days) if conf.until else view
    training, validating, validation = split(known, conf, horizons, window_days)
    # Validation metrics, promotion and the Pareto/NBD weight read these labels: only complete ones.
    validating = complete_labels(validating, horizons)
    # Rows per as-of date: the counts of the run, and what train.max_rows_per_as_of bounds.
    train_per_date, val_per_date = rows_by_date(training), rows_by_date(validating)
    n_available = sum(train_per_date.values())
    limit = conf.max_rows_per_as_of
    if limit is not None and max([*train_per_date.values(), *val_per_date.values(), 0]) > limit:
        training = rows_per_as_of(training, train_per_date, limit, conf.seed)
        validating = rows_per_as_of(validating, val_per_date, limit, conf.seed)
        n_train, n_val = training.count(), validating.count()
        log.info("training on %d of %d rows (train.max_rows_per_as_of %d)", n_train, n_available, limit)
    else:
        n_train, n_val = n_available, sum(val_per_date.values())
    if n_train == 0 or n_val == 0:
        raise ValueError(f"the split by {validation} leaves {n_train} training and {n_val} validation rows")
    train_df = training.selectExpr(*flat_columns(horizons, with_user_id=False))
    val_df = validating.selectExpr(*flat_columns(horizons, with_user_id=False))
    return TrainingRows(version, validation, train_df, val_df, n_train, n_val, n_available)


def btyd_prior(rows: TrainingRows, settings: Settings) -> dict | None:
    """The shop's Pareto/NBD prior fitted on a sample of the training rows (model/btyd.py), or
    None when ``train.btyd_blend`` is off or it does not fit (logged: the network alone)."""
    conf = settings.train
    if conf.btyd_blend == "off":
        return None
    from interest_decay.model.btyd import fit_prior

    static = _sample(rows.train, conf.btyd_fit_rows, rows.n_train, conf.seed).select("static").toPandas()["static"]
    try:
        prior = fit_prior(np.stack(static.to_numpy()) if len(static) else np.zeros((0, len(STATIC_FEATURES))))
    except (RuntimeError, ValueError) as exc:
        log.warning("train: no Pareto/NBD part in the scores, it did not fit: %s", exc)
        return None
    log.info("train: Pareto/NBD prior on %d training rows: %s", len(static), prior.to_dict())
    return prior.to_dict()


def training_plan(
    settings: Settings, rows: TrainingRows, artifacts: RunArtifacts, mlflow_run_id: str, prior: dict | None = None
) -> RunPlan:
    """What every rank needs besides the data: the model's shape and loss, the normalisation
    fitted on a sample of the training rows, the schedule, and where the artifacts go;
    ``prior``, the Pareto/NBD prior the chief weighs against the network."""
    from interest_decay.model.distributed import RunPlan
    from interest_decay.model.network import LossWeights, ModelShape

    conf = settings.train
    sample, _ = view_arrays(_sample(rows.train, conf.normalisation_sample_rows, rows.n_train, conf.seed).toPandas(), settings)
    return RunPlan(
        shape=ModelShape(
            **view_shape(settings),
            window_days=settings.features.window_days,
            horizons_days=tuple(settings.horizons_days),
            hidden_units=conf.hidden_units,
            latent_dim=conf.latent_dim,
            use_vae=conf.use_vae,
            frailty=conf.frailty,
            draws=conf.posterior_draws,
            future_windows=settings.features.future_windows,
        ),
        feature_spec=view_spec(settings.features.n_windows, settings.features.window_days, settings.horizons_days),
        loss_weights=LossWeights(
            step=conf.step_weight,
            count=conf.count_weight,
            count_likelihood=conf.count_likelihood,
            baseline_pooling=conf.baseline_pooling,
            count_row_weights=conf.count_row_weights,
            recon=conf.recon_weight,
            beta=conf.beta,
            kl_warmup_epochs=conf.kl_warmup_epochs,
        ),
        normalisation=fit_normalisation(sample["x"], sample["mask"], sample["static"]),
        epochs=conf.epochs,
        batch_size=conf.batch_size,
        learning_rate=conf.learning_rate,
        patience=conf.patience,
        checkpoint_dir=artifacts.checkpoints,
        model_dir=artifacts.model,
        tensorboard_dir=artifacts.tensorboard,
        mlflow_tracking_uri=tracking_uri(settings),
        mlflow_run_id=mlflow_run_id,
        mixed_precision=conf.mixed_precision,
        seed=conf.seed,
        average_from_epoch=conf.average_from_epoch,
        members=conf.members,
        btyd_prior=prior,
        training_facts={
            # What the model's scores and evaluations are filed under (jobs.common.models.resolve_model).
            "model_version": mlflow_run_id,
            "until": str(conf.until or ""),
            "validation": rows.validation,
            "sequences_version": rows.view_version,
            "members": conf.members,
        },
    )


def fit_everywhere(
    spark: SparkSession, settings: Settings, rows: TrainingRows, artifacts: RunArtifacts, plan: RunPlan, val_sample: tuple[dict, dict]
) -> list[dict]:
    """Train on Horovod ranks or in this process, as ``train.mode`` says; each rank's result, the
    chief's first."""
    from interest_decay.model.distributed import train_in_process, train_on_rank

    if settings.train.mode == "horovod":
        ranks = ranks_for(settings.train.num_proc, spark.sparkContext.defaultParallelism, int(spark.conf.get("spark.task.cpus", "1")))
        return _train_horovod(
            spark,
            ranks,
            artifacts,
            plan,
            splits=(rows.train, rows.val),
            rows=(rows.n_train, rows.n_val),
            val_sample=val_sample,
            rank_body=train_on_rank,
        )
    train, val = view_arrays(rows.train.toPandas(), settings), view_arrays(rows.val.toPandas(), settings)
    return [artifacts.train(train_in_process, plan, train, val, val_sample)]


def _log_to_mlflow(settings: Settings, plan: RunPlan, artifacts: RunArtifacts, chief: dict, recency: dict[int, float]) -> str:
    """The model, its spec and normalisation, and the final metrics in the active MLflow run;
    registers the model when the conf names one (the registered name/version, or "")."""
    conf = settings.train
    run_id = plan.mlflow_run_id
    mlflow.log_artifacts(str(artifacts.storage.fetch(artifacts.model)), artifact_path="model")
    registered = f"{conf.registered_model}/{register(run_id, conf.registered_model)}" if conf.registered_model else ""
    mlflow.log_dict(plan.feature_spec, "feature_spec.json")
    mlflow.log_dict(plan.normalisation.to_dict(), "normalisation.json")
    mlflow.log_metrics(
        {
            **{f"recency_auc_{h}d": v for h, v in recency.items()},
            **{f"final_{k}": v for k, v in chief["fit"]["final_metrics"].items()},
            "btyd_model_weight": float((chief.get("btyd_blend") or {}).get("model_weight", 1.0)),
        }
    )
    return registered


def _summarise(summary: RunSummary, rows: TrainingRows, results: list[dict], recency: dict[int, float]) -> None:
    """Counts and metrics of the run from the ranks' results (the chief's first)."""
    fit = results[0]["fit"]
    history = fit["history"]
    summary.counts = {
        "train_rows": rows.n_train,
        "train_rows_available": rows.n_available,
        "val_rows": rows.n_val,
        "epochs_run": fit["last_epoch"] - fit["first_epoch"],
        "last_epoch": fit["last_epoch"],
        "averaged_epochs": fit["averaged_epochs"],
        "members": max(1, len(fit["member_epochs"])),
    }
    # The saved weights' validation AUCs replace the last epoch's (they differ when averaged).
    final = {**({k: v[-1] for k, v in history.items()} if history else {}), **fit["final_metrics"]}
    samples = rows.n_train * (sum(fit["member_epochs"]) or fit["last_epoch"] - fit["first_epoch"])
    seconds = results[0]["seconds"]
    summary.metrics = {
        **{
            k: round(v, 4)
            for k, v in final.items()
            if k.startswith(
                (
                    "val_auc",
                    "val_returners",
                    "val_decay_nll",
                    "val_survival",
                    "val_count",
                    "val_kl",
                    "val_visits",
                    "loss",
                    "kl",
                    "count_dispersion",
                    "frailty_shape",
                )
            )
        },
        **{f"recency_auc_{h}d": round(v, 4) for h, v in recency.items()},
        "samples_per_second": round(samples / seconds, 1) if seconds else 0.0,
        "processes": results[0]["size"],
    }
    blend = results[0].get("btyd_blend") or {}
    if blend:
        summary.inputs["btyd_blend"] = blend.get("reason", "weight chosen on the validation labels")
    if "model_weight" in blend:
        summary.metrics["btyd_model_weight"] = round(float(blend["model_weight"]), 4)
        summary.metrics.update(
            {f"btyd_val_loglik_w{w.replace('.', '_')}": v for w, v in blend.get("validation_log_likelihood", {}).items()}
        )
    for i, member in enumerate(fit["member_metrics"]):  # how far apart the averaged members were
        summary.metrics.update(
            {f"member{i}_{k}": round(v, 4) for k, v in member.items() if k.startswith(("val_auc", "val_returners", "val_visits"))}
        )
    if len(results) > 1:  # every rank must end with rank 0's weights
        digests = [r["weights_digest"] for r in results]
        summary.metrics["rank_weight_spread"] = float(max(digests) - min(digests))
    summary.inputs["resumed_from_epoch"] = fit["first_epoch"]


def run(spark: SparkSession, settings: Settings, fresh: bool = False, stage: str = "train", force: bool = False) -> RunSummary:
    """Train, save the model as a SavedModel, log it to MLflow, and summarise.

    ``stage`` names the run in ``_runs``: the evaluation's rolling-origin models are recorded as
    ``train_fold``, so they never become the model that scoring picks by default. ``force``
    moves ``train.alias`` to the new model even when it validates worse than the current one.
    """
    conf = settings.train
    inputs = {"sequences": settings.table_path(Table.SEQUENCES), "until": str(conf.until or ""), "mode": conf.mode}
    with stage_run(spark, settings, stage, **inputs) as summary:
        rows = training_rows(spark, settings)
        summary.inputs.update(sequences_version=rows.view_version, validation=rows.validation)
        val_sample = view_arrays(_sample(rows.val, conf.val_sample_rows, rows.n_val, conf.seed).toPandas(), settings)
        prior = btyd_prior(rows, settings)
        fingerprint = _fingerprint(settings, rows.view_version, rows.validation)
        storage = Storage.for_settings(settings)
        checkpoints = storage.uri(Artifact.CHECKPOINTS, fingerprint)
        if fresh:
            storage.remove(checkpoints)
        mlflow.set_tracking_uri(tracking_uri(settings))
        mlflow.set_experiment(conf.experiment)
        with mlflow.start_run(run_name=f"train-{summary.run_id}") as active:
            run_id = active.info.run_id
            artifacts = RunArtifacts(storage, checkpoints, storage.uri(Artifact.TENSORBOARD, run_id), storage.uri(Artifact.MODELS, run_id))
            plan = training_plan(settings, rows, artifacts, run_id, prior)
            params = {"validated_by": rows.validation, "train_rows": rows.n_train, "val_rows": rows.n_val, "fingerprint": fingerprint}
            mlflow.log_params({**conf.model_dump(mode="json"), **params})
            results = fit_everywhere(spark, settings, rows, artifacts, plan, val_sample)
            recency = auc_by_horizon(recency_score(val_sample[0]), val_sample[1], settings.horizons_days)
            registered = _log_to_mlflow(settings, plan, artifacts, results[0], recency)
        _summarise(summary, rows, results, recency)
        summary.inputs["num_proc"] = results[0]["size"]
        summary.outputs = {
            "model": artifacts.model,
            "mlflow_run_id": run_id,
            "registered_model": registered,
            "mlflow_tracking_uri": tracking_uri(settings),
            "checkpoints": str(checkpoints),
        }
    # After the run is recorded: a crash before this leaves the alias where it was.
    log.info("train: %s", promote(settings, summary, force=force))
    return summary


def _train_horovod(
    spark: SparkSession,
    num_proc: int,
    artifacts: RunArtifacts,
    plan: RunPlan,
    *,
    splits: tuple[DataFrame, DataFrame],
    rows: tuple[int, int],
    val_sample: tuple[dict, dict],
    rank_body: Callable[..., dict],
) -> list[dict]:
    """Materialise the (training, validation) ``splits`` with petastorm and run ``rank_body`` on
    ``num_proc`` Horovod ranks; the ranks' results, rank 0 first."""
    import horovod.spark
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    train_df, val_df = splits
    cache = artifacts.storage.uri(Artifact.PETASTORM)
    # petastorm wants a URL with a scheme; the ranks read it with fsspec (s3fs for s3a://).
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache if "://" in cache else f"file://{cache}")
    # Several files per rank, so every shard gets row groups to read.
    train_converter = make_spark_converter(
        train_df.repartition(4 * num_proc), dtype="float32", parquet_row_group_size_bytes=4 * 1024 * 1024
    )
    val_converter = make_spark_converter(val_df.repartition(2 * num_proc), dtype="float32", parquet_row_group_size_bytes=4 * 1024 * 1024)
    try:
        return horovod.spark.run(
            artifacts.train,
            args=(rank_body, plan, train_converter, val_converter, val_sample, *rows),
            num_proc=num_proc,
            verbose=0,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::FutureWarning"},
        )
    finally:
        train_converter.delete()
        val_converter.delete()


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("train")
