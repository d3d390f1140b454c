"""Generated shops for the test modules that need a lakehouse with the sequences view (and a model)."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from jobs import build_features as features
from jobs import generate, ingest, train
from jobs.config import Settings, load_settings

LOCAL = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


def shop_settings(root: Path, *overrides: str) -> Settings:
    """conf/local.yaml with the lakehouse and the raw files under ``root``, then ``overrides``."""
    return load_settings(
        LOCAL, [f"lakehouse={root / 'lakehouse'}", f"generator.output={root / 'raw'}", "generator.output_files=2", *overrides]
    )


def build_shop(spark: SparkSession, settings: Settings, trained: bool = False) -> None:
    """generate -> ingest -> features (-> train) into ``settings.lakehouse``."""
    generated = generate.run(spark, settings)
    ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
    features.run(spark, settings)
    if trained:
        train.run(spark, settings)
