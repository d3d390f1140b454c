"""Which model a stage uses: a folder, an MLflow run or registered alias, or the newest trained;
fetched to a local folder and checked against the view before anything is scored."""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Table, view_spec
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.runs import tracking_uri
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.tables import table_exists
from interest_decay.model.scoring import feature_mismatch


def resolve_model(spark: SparkSession, settings: Settings, model: str | None) -> tuple[str, str]:
    """(local model folder, model_version) for a folder, ``runs:/<id>``, ``models:/<name>@<alias>``,
    or the newest trained model; model_version is the MLflow run id (the folder name for a folder)."""
    choice = model or settings.score.model
    if choice is None:
        runs = settings.table_path(Table.RUNS)
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
