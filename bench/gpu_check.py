"""GPU check, for a session lent a GPU machine: train the model on the GPU and print samples/second.

    python bench/gpu_check.py --rows 200000 --epochs 3
    python bench/gpu_check.py --rows 256 --epochs 1 --cpu      # the suite's smoke run: the same loop on the CPU

Needs only TensorFlow with CUDA (tensorflow[and-cuda]==2.15.1) and this repository: the data are
synthetic arrays of the view's shape, so no Spark or Delta is involved. It refuses to run when
TensorFlow sees no GPU, trains the full model (GRU + VAE + decay head) with the same loop as
jobs/train.py, once in float32 and once in bfloat16 mixed precision, and prints one JSON line
per run (device, rows, seconds, samples/second, final loss). Results are also appended to
bench/results/gpu_check.jsonl.
"""

from __future__ import annotations

import tempfile
import time
from typing import Annotated

import numpy as np
import tensorflow as tf
import typer
from results_file import record

from interest_decay.model.network import InterestDecayModel, ModelShape, fit_normalisation
from interest_decay.model.training import as_dataset, fit, steps_for


def synthetic_view(rows: int, n_windows: int = 12, n_features: int = 12, seed: int = 0) -> tuple[dict, dict]:
    """Arrays shaped like the sequences view, with a return time that depends on recent activity."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, size=(rows, n_windows, n_features)).astype(np.float32)
    quiet = rng.random(rows) < 0.5
    x[quiet, -3:, :] = 0
    days = np.where(quiet, rng.exponential(30.0, rows), rng.exponential(4.0, rows)).astype(np.float32)
    censored = (days > 40).astype(np.float32)
    targets = {"days_to_next": np.minimum(days, 40), "censored": censored}
    for h in (7, 14, 30):
        targets[f"active_{h}d"] = ((days < h) & (censored == 0)).astype(np.float32)
    inputs = {"x": x, "mask": np.ones((rows, n_windows), np.float32), "static": rng.random((rows, 5)).astype(np.float32)}
    return inputs, targets


def run_once(inputs: dict, targets: dict, epochs: int, batch_size: int, mixed_precision: bool, use_vae: bool = True) -> dict:
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed_precision else "float32")
    shape = ModelShape(
        n_windows=12,
        n_window_features=12,
        n_static=5,
        window_days=7,
        horizons_days=(7, 14, 30),
        hidden_units=64,
        use_vae=use_vae,
        frailty=True,  # as train.frailty's default
    )
    model = InterestDecayModel(shape, fit_normalisation(inputs["x"], inputs["mask"], inputs["static"]))
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(2e-3))
    rows = len(targets["censored"])
    with tempfile.TemporaryDirectory() as checkpoints:
        started = time.perf_counter()
        result = fit(
            model,
            as_dataset(inputs, targets, batch_size),
            epochs=epochs,
            steps_per_epoch=steps_for(rows, batch_size),
            checkpoint_dir=checkpoints,
        )
        seconds = time.perf_counter() - started
    tf.keras.mixed_precision.set_global_policy("float32")
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "bench": "gpu_check",
        "device": tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU",
        "mixed_precision": mixed_precision,
        "use_vae": use_vae,
        "rows": rows,
        "epochs": epochs,
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        "samples_per_second": round(rows * epochs / seconds, 1),
        "final_loss": round(result.history["loss"][-1], 4),
    }


def main(
    rows: Annotated[int, typer.Option(help="Synthetic training rows.")] = 200_000,
    epochs: Annotated[int, typer.Option(help="Epochs per run.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 2048,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU (a smoke run of the same loop; the figures mean nothing).")] = False,
    vae: Annotated[bool, typer.Option(help="With the VAE (train.use_vae), the heavier model.")] = True,
) -> None:
    """Train on the GPU in float32 and bfloat16 and print samples/second."""
    if not cpu and not tf.config.list_physical_devices("GPU"):
        raise typer.BadParameter("TensorFlow sees no GPU here: run this on the lent GPU machine (or --cpu for a smoke run)")
    inputs, targets = synthetic_view(rows)
    for mixed in (False, True):
        result = run_once(inputs, targets, epochs, batch_size, mixed, vae)
        record("gpu_check", result)


if __name__ == "__main__":
    typer.run(main)
