"""Benchmark: samples/second of Horovod-on-Spark + petastorm against one process on in-memory arrays.

    .venv/bin/python bench/train.py --users 20000 --epochs 3

Generates a shop, builds the sequences view, then trains the same model for the same epochs
twice through jobs.train: train.mode=horovod (train.num_proc ranks) and train.mode=single.
Samples/second counts training rows x epochs over the time inside the training loop; the
ratio per process is (Horovod samples/s / ranks) / (single-process samples/s). Figures are
printed and appended to bench/results/train.jsonl.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from results_file import record

from interest_decay.jobs import features, generate, ingest, train
from interest_decay.jobs.common.config import load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


def main(
    users: Annotated[int, typer.Option(help="Generated users.")] = 20_000,
    epochs: Annotated[int, typer.Option(help="Epochs for both runs (early stopping off).")] = 3,
    num_proc: Annotated[int, typer.Option(help="Horovod processes.")] = 2,
) -> None:
    """Train both ways on the same data and record samples/second."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        settings = load_settings(
            CONF,
            [
                f"lakehouse={scratch}/lake",
                f"generator.output={scratch}/raw",
                f"generator.users={users}",
                f"train.epochs={epochs}",
                f"train.patience={epochs + 1}",
                f"train.num_proc={num_proc}",
            ],
        )
        with spark_session(settings.spark) as spark:
            generated = generate.run(spark, settings)
            ingest.run(spark, settings, input_path=generated.outputs["events"], preset="generator")
            features.run(spark, settings)
            settings.train.mode = "horovod"
            distributed = train.run(spark, settings, fresh=True)
            settings.train.mode = "single"
            single = train.run(spark, settings, fresh=True)
    horovod_sps = distributed.metrics["samples_per_second"]
    single_sps = single.metrics["samples_per_second"]
    result = {
        "bench": "train",
        "users": users,
        "train_rows": distributed.counts["train_rows"],
        "epochs": epochs,
        "processes": num_proc,
        "cores": os.cpu_count(),
        "horovod_samples_per_second": horovod_sps,
        "single_samples_per_second": single_sps,
        "ratio_per_process": round(horovod_sps / num_proc / single_sps, 3),
        "horovod_val_auc_30d": distributed.metrics.get("val_auc_30d"),
        "single_val_auc_30d": single.metrics.get("val_auc_30d"),
        "horovod_stage_seconds": distributed.seconds,
        "single_stage_seconds": single.seconds,
    }
    record("train", result)


if __name__ == "__main__":
    typer.run(main)
