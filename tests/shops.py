"""Generated shops for the tests that need a lakehouse with the sequences view (and a model).

Most of them share one: the session fixture ``shop`` (conftest.py) generates, ingests,
featurises and trains it once for the whole suite; the score, evaluate and train tests read it,
and a test that must change its tables works on a copy (:meth:`TrainedShop.copy`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from interest_decay.jobs import features, generate, ingest, train
from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.runs import RunSummary

LOCAL = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"

# The shared shop: 1,500 users over 120 days, trained in one process until local.yaml's
# train.until and validated on a share of the users (as the identifiable and CDNOW profiles are:
# every as-of date up to `until` trains, so the faded users asked about at the evaluation date
# are in the training and the expected visits are calibrated). The evaluate.* and score.* keys
# only size the evaluation and the scoring batches.
SHOP = (
    "generator.users=1500",
    "train.mode=single",
    "train.epochs=6",
    "train.validation=users",
    "evaluate.folds=1",
    "evaluate.fold_epochs=1",
    "evaluate.bootstrap_rounds=50",
    "evaluate.baseline_rows=5000",
    "score.arrow_batch_size=100",
)


def shop_settings(root: Path, *overrides: str) -> Settings:
    """conf/local.yaml with the lakehouse and the raw files under ``root``, then ``overrides``."""
    return load_settings(
        LOCAL, [f"lakehouse={root / 'lakehouse'}", f"generator.output={root / 'raw'}", "generator.output_files=2", *overrides]
    )


def build_shop(spark: SparkSession, settings: Settings, trained: bool = False) -> RunSummary | None:
    """generate -> ingest -> features (-> train) into ``settings.lakehouse``; the training's summary."""
    generated = generate.run(spark, settings)
    ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
    features.run(spark, settings)
    return train.run(spark, settings) if trained else None


@dataclass(frozen=True)
class TrainedShop:
    """The shared shop: its folder and the summary of the training that made its model."""

    root: Path
    trained: RunSummary

    def settings(self, *overrides: str) -> Settings:
        """The shop's settings, then ``overrides``."""
        return shop_settings(self.root, *SHOP, *overrides)

    def copy(self, root: Path, leave_out: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> Settings:
        """A copy of the shop's lakehouse under ``root``, of the tables and folders in ``only``
        (default: all) but those in ``leave_out``, and its settings. A copied ``_runs`` still
        names the original's models."""

        def ignored(folder: str, names: list[str]) -> list[str]:
            if folder != str(self.root / "lakehouse"):
                return []
            return [n for n in names if n in leave_out or (only is not None and n not in only)]

        shutil.copytree(self.root / "lakehouse", root / "lakehouse", ignore=ignored)
        return shop_settings(root, *SHOP)
