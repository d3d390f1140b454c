"""Which model a stage uses: a folder, an MLflow run or registered alias, or the newest trained;
fetched to a local folder and checked against the view before anything is scored."""

from __future__ import annotations

import json
import re

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Artifact, Table, view_spec
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.runs import tracking_uri
from interest_decay.jobs.common.storage import Storage
from interest_decay.jobs.common.tables import table_exists
from interest_decay.model.metadata import read_metadata
from interest_decay.model.scoring import feature_mismatch

# A model version names a slice of `scores` and `evaluations` and a folder: an MLflow run id or a
# folder name of letters, digits, dots, dashes and underscores, nothing a predicate could misread.
MODEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_version(version: str, where: str) -> str:
    """``version`` when it is a valid model version, else ValueError naming ``where`` it came from."""
    if not isinstance(version, str) or not MODEL_VERSION.fullmatch(version):
        raise ValueError(f"{where}: {version!r} is not a model version (letters, digits, '.', '-' and '_', up to 128)")
    return version


def resolve_model(spark: SparkSession, settings: Settings, model: str | None) -> tuple[str, str]:
    """(model folder or URI, model_version) for a folder, ``runs:/<id>``, ``models:/<name>@<alias>``,
    or the newest trained model. The version is the training's MLflow run id, from the model's
    metadata where it records one (the folder name of an older model), checked to be a plain name.

    A run or an alias resolves to the model the training published in the lakehouse
    (``_models/<run id>``), which every executor reads; MLflow's copy, downloaded to this
    machine only, is the fallback for a model trained elsewhere and only on a local lakehouse."""
    choice = model or settings.score.model
    storage = Storage.for_settings(settings)
    if choice is None:
        runs = settings.table_path(Table.RUNS)
        latest = (
            spark.read.format("delta").load(runs).where(F.col("stage") == "train").orderBy(F.desc("started_at")).select("summary").first()
            if table_exists(spark, runs)
            else None
        )
        if latest is None:
            raise ValueError("no trained model: run `interest-decay train`, or pass --model PATH or runs:/<mlflow run id>")
        outputs = json.loads(latest["summary"])["outputs"]
        return outputs["model"], checked_version(outputs["mlflow_run_id"], f"the newest training in {runs}")
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
        run_id = checked_version(run_id, f"--model {choice}")
        published = storage.uri(Artifact.MODELS, run_id)
        if storage.is_published(published):
            return published, run_id
        if not storage.is_local:
            raise ValueError(f"--model {choice}: no model published at {published}, and MLflow's copy would reach this machine only")
        # The slice is named after the training run, however the model was referred to.
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", tracking_uri=uri), run_id
    if not storage.exists(choice):
        raise ValueError(f"model folder {choice} does not exist")
    recorded = read_metadata(storage.fetch(choice)).get("training", {}).get("model_version")
    return choice, checked_version(recorded or choice.rstrip("/").rsplit("/", 1)[-1], f"the model at {choice}")


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
