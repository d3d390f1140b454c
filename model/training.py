"""The training loop shared by the single-process path and every Horovod rank.

``fit`` resumes from the newest checkpoint in ``checkpoint_dir`` (saved by the chief after every
epoch, with the optimizer state and the epoch number), eases the KL term in, stops early on the
validation loss, prints one line per epoch from the chief and, when asked, ends with the mean of
the weights over the last epochs (stochastic weight averaging).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from interest_decay.model import decay
from interest_decay.model.network import InterestDecayModel, KLWarmup, MemberAverage

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a run did, epoch by epoch."""

    history: dict[str, list[float]] = field(default_factory=dict)
    first_epoch: int = 0
    last_epoch: int = 0
    stopped_early: bool = False
    # Epochs whose weights were averaged into the final model (0: the last epoch's weights).
    averaged_epochs: int = 0
    # Validation AUCs of the final weights (on the chief; equal to the last epoch's without averaging).
    final_metrics: dict[str, float] = field(default_factory=dict)
    # With ``train.members`` above 1: the epochs each member ran and each one's own final
    # metrics; the other fields are then the last member's, ``final_metrics`` the average's.
    member_epochs: list[int] = field(default_factory=list)
    member_metrics: list[dict[str, float]] = field(default_factory=list)


def auc_by_horizon(scores: np.ndarray, targets: dict, horizons: tuple[int, ...] | list[int]) -> dict[int, float]:
    """ROC-AUC per horizon, on the rows whose label is known (not -1).

    ``scores`` is [N, len(horizons)], or [N] when one score ranks users for every horizon (the
    recency rule). A horizon whose known labels are all one class has no AUC and is left out.
    """
    result = {}
    for i, h in enumerate(horizons):
        labels = targets.get(f"active_{h}d")
        if labels is None:
            continue
        known = labels >= 0
        if known.sum() and 0 < labels[known].mean() < 1:
            column = scores if scores.ndim == 1 else scores[:, i]
            result[h] = float(roc_auc_score(labels[known], column[known]))
    return result


def validation_auc(model: InterestDecayModel | MemberAverage, inputs: dict, targets: dict) -> dict[str, float]:
    """The model's ``val_auc_<h>d`` for every horizon it predicts, and ``val_returners_ratio_<h>d``:
    the users it expects back (the sum of P(active)) over those who came back, on the rows
    whose label is known (1.0: calibrated in total)."""
    horizons = model.shape_spec.horizons_days
    rows = len(inputs["x"])
    p_active = (
        np.concatenate(
            [
                tf.reduce_mean(
                    decay.p_active_on(model({k: v[i : i + 5_000] for k, v in inputs.items()})["params"], list(horizons)), axis=1
                ).numpy()
                for i in range(0, rows, 5_000)
            ]
        )
        if rows
        else np.zeros((0, len(horizons)), np.float32)
    )
    metrics = {f"val_auc_{h}d": v for h, v in auc_by_horizon(p_active, targets, horizons).items()}
    for i, h in enumerate(horizons):
        labels = targets.get(f"active_{h}d")
        known = labels >= 0 if labels is not None else None
        if known is not None and labels[known].sum() > 0:
            metrics[f"val_returners_ratio_{h}d"] = float(p_active[known, i].sum() / labels[known].sum())
    return metrics


def validation_visits(model: InterestDecayModel | MemberAverage, inputs: dict, targets: dict) -> dict[str, float]:
    """Expected over observed visits in the validation rows' observed future windows (1.0 is
    calibrated in total; the evaluation breaks it down by decile):

    - ``val_visits_predicted_over_observed``: over every row;
    - ``val_visits_predicted_over_observed_latest``: over the rows nearest the end of the
      training data, those whose last future window lies past it: the users as scoring at the
      end of the data sees them (left out when no such row saw a visit).

    Reported, never used to rescale anything: P(active) and the expected visits come from one
    distribution. Empty when no window is observed.
    """
    future = targets.get("future_sessions")
    if future is None or future.shape[1] == 0:
        return {}
    known = future >= 0
    seen = np.where(known, future, 0.0)
    if seen.sum() == 0:
        return {}
    params = model(inputs, training=False)["params"]
    there = decay.window_visits_there(params, future.shape[1], float(model.shape_spec.window_days))
    per_window = tf.reduce_mean(decay.p_alive(params)[..., None] * there, axis=1).numpy()
    expected = per_window * known
    ratios = {"val_visits_predicted_over_observed": float(expected.sum() / seen.sum())}
    latest = known[:, 0] & ~known[:, -1]
    if seen[latest].sum() > 0:
        ratios["val_visits_predicted_over_observed_latest"] = float(expected[latest].sum() / seen[latest].sum())
    return ratios


def validation_metrics(model: InterestDecayModel | MemberAverage, val_sample: tuple[dict, dict]) -> dict[str, float]:
    """What the saved weights do on the validation sample: :func:`validation_auc` and
    :func:`validation_visits` together."""
    return {**validation_auc(model, *val_sample), **validation_visits(model, *val_sample)}


class WeightAverage(tf.keras.callbacks.Callback):
    """Running mean of the trainable weights at the end of every epoch from ``first_epoch`` (1-based) on.

    The mean and its count are variables, so the training checkpoint carries them and a resumed
    run continues the same mean. :meth:`apply` puts the mean into the model.
    """

    def __init__(self, model: InterestDecayModel, first_epoch: int) -> None:
        super().__init__()
        if first_epoch < 1:
            raise ValueError(f"first_epoch must be 1 or more, got {first_epoch}")
        self.first_epoch = first_epoch
        # Zeros, not the current weights: the first epoch then enters exactly (0 + (w - 0) * 1 = w),
        # so Horovod ranks, whose initial weights differ before the broadcast, end bit-identical.
        self.mean = [tf.Variable(tf.zeros_like(w), trainable=False, name="average") for w in model.trainable_weights]
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="averaged_epochs")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 < self.first_epoch:
            return
        self.count.assign_add(1)
        share = 1.0 / float(self.count.numpy())
        for mean, weight in zip(self.mean, self.model.trainable_weights, strict=False):
            mean.assign_add((weight - mean) * share)

    def apply(self, model: InterestDecayModel) -> int:
        """Set ``model``'s weights to the mean; the number of epochs in it (0 changes nothing)."""
        count = int(self.count.numpy())
        if count:
            for mean, weight in zip(self.mean, model.trainable_weights, strict=False):
                weight.assign(mean)
        return count


class _EpochEnd(tf.keras.callbacks.Callback):
    """On the chief: add validation AUCs to the logs, checkpoint, print a line, tell listeners."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch_var: tf.Variable, val_sample: tuple | None, listeners: list) -> None:
        super().__init__()
        self.manager, self.epoch_var, self.val_sample, self.listeners = manager, epoch_var, val_sample, listeners

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.val_sample is not None:
            logs.update(validation_auc(self.model, *self.val_sample))
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        parts = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        log.info("epoch %d: %s", epoch + 1, parts)
        for listener in self.listeners:
            listener(epoch + 1, dict(logs))


def fit(
    model: InterestDecayModel,
    train_data: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    checkpoint_dir: str,
    validation_data: tf.data.Dataset | None = None,
    validation_steps: int | None = None,
    val_sample: tuple[dict, dict] | None = None,
    patience: int = 3,
    is_chief: bool = True,
    first_callbacks: list | None = None,
    epoch_listeners: list[Callable[[int, dict], None]] | None = None,
    tensorboard_dir: str | None = None,
    average_from_epoch: int | None = None,
) -> FitResult:
    """Train ``model`` (compiled) up to ``epochs``, resuming from ``checkpoint_dir`` if it holds one.

    ``first_callbacks`` run before the others: Horovod's broadcast and metric averaging go there,
    so early stopping sees the same averaged numbers on every rank. With ``average_from_epoch``
    the model ends with the mean of its weights at the end of that epoch and every later one.
    """
    model.build_with_zeros()  # every weight exists before a checkpoint is restored into it
    # The optimizer's slots too: created inside the first training step they make tf.function
    # trace that step a second time (about 3 s per model on 2 cores).
    model.optimizer._create_all_weights(model.trainable_variables)  # noqa: SLF001 -- legacy Adam has no public build
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    averager = WeightAverage(model, average_from_epoch) if average_from_epoch else None
    tracked = {"average": averager.mean, "averaged_epochs": averager.count} if averager else {}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var, **tracked)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        log.info("resuming from %s (epoch %d)", manager.latest_checkpoint, int(epoch_var.numpy()))
    first_epoch = int(epoch_var.numpy())
    result = FitResult(first_epoch=first_epoch, last_epoch=first_epoch)
    if first_epoch >= epochs:
        return _finish(model, result, averager, val_sample)

    # The mean is updated before the chief's checkpoint of the same epoch is written.
    callbacks = list(first_callbacks or []) + [KLWarmup()] + ([averager] if averager else [])
    if is_chief:
        callbacks.append(_EpochEnd(manager, epoch_var, val_sample, list(epoch_listeners or [])))
        if tensorboard_dir:
            callbacks.append(tf.keras.callbacks.TensorBoard(tensorboard_dir, profile_batch=0))
    stopper = None
    if validation_data is not None:
        # The whole decay likelihood, counts included: the time to the next visit alone stops
        # improving within a few epochs, long before the time constants have been learned.
        stopper = tf.keras.callbacks.EarlyStopping(monitor="val_decay_nll", patience=patience, mode="min")
        callbacks.append(stopper)
    history = model.fit(
        train_data,
        epochs=epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        validation_steps=validation_steps,
        callbacks=callbacks,
        verbose=0,
    )
    result.history = {k: [float(v) for v in values] for k, values in history.history.items()}
    result.last_epoch = first_epoch + len(history.epoch)
    result.stopped_early = bool(stopper and stopper.stopped_epoch)
    return _finish(model, result, averager, val_sample)


def _finish(model: InterestDecayModel, result: FitResult, averager: WeightAverage | None, val_sample: tuple | None) -> FitResult:
    """Put the averaged weights in (if any) and measure what will be saved."""
    if averager is not None:
        result.averaged_epochs = averager.apply(model)
        log.info("final weights: the mean of %d epochs from epoch %d", result.averaged_epochs, averager.first_epoch)
    if val_sample is not None:
        result.final_metrics = validation_metrics(model, val_sample)
    for name, value in (("count_dispersion", model.count_dispersion()), ("frailty_shape", model.frailty_shape())):
        if value is not None:
            result.final_metrics[name] = float(value.numpy())
    return result


def average_members(
    models: list[InterestDecayModel], results: list[FitResult], val_sample: tuple[dict, dict] | None
) -> tuple[InterestDecayModel | MemberAverage, FitResult]:
    """One model and result from the ``train.members`` trained: the only one as it is, or their
    :class:`MemberAverage` with its validation metrics measured again (on the chief)."""
    if len(models) != len(results) or not models:
        raise ValueError(f"got {len(models)} models and {len(results)} results: pass one result per trained model")
    if len(models) == 1:
        return models[0], results[0]
    average = MemberAverage(models)
    result = replace(
        results[-1],
        final_metrics={},
        member_epochs=[r.last_epoch - r.first_epoch for r in results],
        member_metrics=[r.final_metrics for r in results],
    )
    if val_sample is not None:
        result.final_metrics = validation_metrics(average, val_sample)
    for name in ("count_dispersion", "frailty_shape"):
        values = [r.final_metrics[name] for r in results if name in r.final_metrics]
        if values:
            result.final_metrics[name] = float(np.mean(values))
    log.info(
        "the saved model is the mixture of %d members' draws; validation AUCs of the members: %s, of the mixture: %s",
        len(models),
        [{k: round(v, 4) for k, v in r.final_metrics.items() if k.startswith("val_auc")} for r in results],
        {k: round(v, 4) for k, v in result.final_metrics.items() if k.startswith("val_auc")},
    )
    return average, result


def as_dataset(inputs: dict, targets: dict, batch_size: int, shuffle_seed: int | None = 0) -> tf.data.Dataset:
    """An endless, shuffled, batched dataset of in-memory arrays (the single-process path)."""
    data = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle_seed is not None:
        data = data.shuffle(min(len(targets["censored"]), 100_000), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).repeat()


def steps_for(n_rows: int, batch_size: int, n_workers: int = 1) -> int:
    """Batches per epoch so that every row is seen about once across all workers."""
    return max(1, int(np.ceil(n_rows / (batch_size * n_workers))))
