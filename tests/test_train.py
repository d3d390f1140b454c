"""Training on the shared shop: what one process learns, and resuming. Horovod with two ranks on
executors: tests/test_cluster.py."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from pyspark.sql import SparkSession

from interest_decay.contract import Table
from interest_decay.jobs import train
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.runs import RunSummary, tracking_uri
from interest_decay.model.scorer import Scorer

from shops import SHOP, TrainedShop, shop_settings


def test_auto_ranks_are_the_task_slots_spark_offers() -> None:
    assert train.ranks_for("auto", parallelism=16, cpus_per_task=1) == 16
    assert train.ranks_for("auto", parallelism=16, cpus_per_task=4) == 4
    assert train.ranks_for("auto", parallelism=1, cpus_per_task=4) == 1
    assert train.ranks_for(3, parallelism=16) == 3
    with pytest.raises(ValueError, match="num_proc"):
        train.ranks_for(0, parallelism=16)


def _settings(shop: TrainedShop, root: Path, *overrides: str) -> Settings:
    """A copy of the shared shop's view under ``root`` (so these runs never become the model the
    score and evaluate tests pick), its settings with ``overrides``."""
    shop.copy(root, only=("sequences",))
    return shop_settings(root, *SHOP, "train.batch_size=128", "train.hidden_units=16", *overrides)


def test_the_model_learns_the_decay_better_than_recency(shop: TrainedShop) -> None:
    """The shared shop's training (one process, six epochs, validated on a fifth of the users)."""
    summary = shop.trained
    metrics = summary.metrics
    assert summary.counts["epochs_run"] >= 2
    for h in (7, 30):
        assert metrics[f"val_auc_{h}d"] > metrics[f"recency_auc_{h}d"] + 0.01, metrics
    run = mlflow.tracking.MlflowClient(summary.outputs["mlflow_tracking_uri"]).get_run(summary.outputs["mlflow_run_id"])
    assert run.data.params["mode"] == "single"
    assert run.data.metrics["val_auc_30d"] == pytest.approx(metrics["val_auc_30d"], abs=1e-4)
    # The validation users' visits in their observed future windows: expected over seen, in total.
    assert metrics["val_visits_predicted_over_observed"] == pytest.approx(1.0, abs=0.3)
    assert run.data.metrics["final_val_visits_predicted_over_observed"] == pytest.approx(
        metrics["val_visits_predicted_over_observed"], abs=1e-4
    )
    scorer = Scorer(summary.outputs["model"])
    assert scorer.feature_spec["n_windows"] == 12
    assert (Path(summary.outputs["model"]).parent.parent / "_tensorboard").is_dir()


@pytest.mark.slow
def test_training_again_resumes_from_the_last_epoch(spark: SparkSession, shop: TrainedShop, tmp_path: Path) -> None:
    """Validated by a share of the users, with weight averaging carried over the resume, a
    bounded number of training rows per as-of date, and two members, each resuming its own
    checkpoints and saved as one mixture of both members' draws."""
    settings = _settings(
        shop,
        tmp_path,
        "train.mode=single",
        "train.experiment=resume",
        "train.seed=5",
        "train.epochs=1",
        "train.validation=users",
        "train.validation_users=0.2",
        "train.average_from_epoch=1",
        "train.until=2026-03-02",
        "train.batch_size=512",
        "train.max_rows_per_as_of=600",
        "train.members=2",
    )
    first = train.run(spark, settings, fresh=True)
    assert first.counts["members"] == 2
    assert sorted(p.name for p in Path(first.outputs["checkpoints"]).iterdir()) == ["member-0", "member-1"]
    members = [{k.split("_", 1)[1]: v for k, v in first.metrics.items() if k.startswith(f"member{i}_")} for i in (0, 1)]
    assert "val_auc_30d" in members[0] and members[0] != members[1]  # two starts, two models
    draws = settings.train.posterior_draws if settings.train.use_vae else 1
    assert Scorer(first.outputs["model"]).metadata["model_shape"]["draws"] == 2 * draws  # one mixture of both
    assert (first.inputs["resumed_from_epoch"], first.counts["last_epoch"], first.counts["averaged_epochs"]) == (0, 1, 1)
    assert first.inputs["validation"] == "users:0.2"
    # Users split: every as-of date before `until` trains or validates, about a fifth validates.
    view = spark.read.format("delta").load(settings.table_path(Table.SEQUENCES)).where(f"as_of_date < '{settings.train.until}'")
    assert first.counts["train_rows_available"] + first.counts["val_rows"] == view.count()
    assert 0.15 < first.counts["val_rows"] / view.count() < 0.25
    # At most about 600 training rows of each date (train.max_rows_per_as_of) are kept.
    per_date = view.groupBy("as_of_date").count().collect()
    assert first.counts["train_rows"] < first.counts["train_rows_available"]
    assert first.counts["train_rows"] < 1.1 * sum(min(0.8 * r["count"], 600) for r in per_date)
    settings.train.epochs = 2
    more = train.run(spark, settings)
    assert (more.inputs["resumed_from_epoch"], more.counts["epochs_run"], more.counts["last_epoch"]) == (1, 1, 2)
    assert more.counts["averaged_epochs"] == 2


def test_the_champion_moves_only_to_a_model_not_worse_on_validation_unless_forced(tmp_path: Path) -> None:
    """promote() on a real MLflow registry (the lakehouse's file store): the alias follows a
    better validation AUC, stays on a worse one, and moves anyway with force."""
    settings = shop_settings(tmp_path, "train.alias=champion")
    client = mlflow.tracking.MlflowClient(tracking_uri(settings), registry_uri=tracking_uri(settings))
    experiment = client.create_experiment("promote")
    name = settings.train.registered_model
    client.create_registered_model(name)
    metric = f"final_val_auc_{max(settings.horizons_days)}d"

    def trained(auc: float) -> RunSummary:
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, metric, auc)
        version = client.create_model_version(name, str(tmp_path / run.info.run_id), run.info.run_id).version
        return RunSummary("train", outputs={"registered_model": f"{name}/{version}", "mlflow_run_id": run.info.run_id})

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, "champion").version)

    first, better, worse = trained(0.70), trained(0.72), trained(0.71)
    assert train.promote(settings, first).startswith("champion moved to version 1") and champion() == "1"
    assert train.promote(settings, better).startswith("champion moved to version 2") and champion() == "2"
    assert train.promote(settings, worse).startswith("champion stays on version 2") and champion() == "2"
    assert train.promote(settings, worse, force=True).startswith("champion moved to version 3") and champion() == "3"
