"""The training function that runs on each Horovod rank (``horovod.spark.run``), and its twin
for one process. Both build the same model and call the same :func:`model.training.fit`.

Horovod parts: ``hvd.init``, one GPU per rank by local rank (when there are GPUs), the learning
rate scaled by the number of ranks, ``DistributedOptimizer``, broadcast of rank 0's initial
state, metric averaging (so early stopping agrees on every rank), and checkpoints, TensorBoard
and MLflow only on rank 0.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from interest_decay.model.network import LossWeights, ModelShape, Normalisation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """Everything a rank needs besides the data; plain values, so it pickles to executors."""

    shape: ModelShape
    feature_spec: dict
    loss_weights: LossWeights
    normalisation: Normalisation
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    checkpoint_dir: str
    model_dir: str
    tensorboard_dir: str
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    mixed_precision: bool = False
    seed: int = 0
    average_from_epoch: int | None = None
    # Models trained one after the other, each from its own random start, and saved as one
    # mixture of their draws (model.network.MemberAverage).
    members: int = 1
    # Facts about the training run kept in the model's metadata (until, validation, view version).
    training_facts: dict = field(default_factory=dict)
    # Called by the chief after each epoch's checkpoint (epoch, logs): uploads checkpoints and logs.
    on_epoch_end: Callable[[int, dict], None] | None = None
    # The shop's Pareto/NBD prior (model.btyd.ParetoNBDPrior as a dict): the chief weighs it
    # against the network on the validation rows and saves the blend (None: the network alone).
    btyd_prior: dict | None = None


def build_model(plan: RunPlan, learning_rate: float, optimizer_wrapper=None):  # noqa: ANN001, ANN201
    """The compiled model of ``plan``; ``optimizer_wrapper`` is Horovod's DistributedOptimizer."""
    import tensorflow as tf

    from interest_decay.model.network import InterestDecayModel

    if plan.mixed_precision:
        # bfloat16 needs no loss scaling; the decay head computes in float32 (see network.py).
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = InterestDecayModel(plan.shape, plan.normalisation, plan.loss_weights)
    optimizer = tf.keras.optimizers.legacy.Adam(learning_rate)
    model.compile(optimizer=optimizer_wrapper(optimizer) if optimizer_wrapper else optimizer)
    return model


def member_checkpoints(plan: RunPlan, member: int) -> str:
    """Where member ``member`` keeps its checkpoints: the run's folder itself for a single model
    (as before members existed), ``member-<i>`` in it otherwise; so a crashed run resumes the
    member it was training and keeps the ones it finished."""
    return plan.checkpoint_dir if plan.members == 1 else os.path.join(plan.checkpoint_dir, f"member-{member}")


def member_seed(plan: RunPlan, member: int) -> int:
    """The random seed of member ``member``: each starts from its own weights and batch order."""
    return plan.seed + 1000 * member


def member_listeners(plan: RunPlan, member: int, listeners: list[Callable[[int, dict], None]]) -> list[Callable[[int, dict], None]]:
    """``listeners`` as member ``member`` calls them: its epochs numbered on from the members
    before it, and a ``member`` entry in the logs, so MLflow draws one line through all of them."""
    if plan.members == 1:
        return listeners
    offset = member * plan.epochs
    return [lambda epoch, logs, listener=listener: listener(offset + epoch, {**logs, "member": member}) for listener in listeners]


def _mlflow_listener(plan: RunPlan):  # noqa: ANN202
    if not plan.mlflow_tracking_uri or not plan.mlflow_run_id:
        return None
    import mlflow

    client = mlflow.tracking.MlflowClient(plan.mlflow_tracking_uri)

    def log_epoch(epoch: int, logs: dict) -> None:
        stamp = int(time.time() * 1000)
        metrics = [mlflow.entities.Metric(k, float(v), stamp, epoch) for k, v in logs.items()]
        client.log_batch(plan.mlflow_run_id, metrics=metrics)

    return log_epoch


def _batch_reader(n_windows: int, n_features: int, n_static: int):  # noqa: ANN202
    """Maps a petastorm batch (named tuple of flat columns) to the model's (inputs, targets)."""
    import tensorflow as tf

    def to_model(batch):  # noqa: ANN001, ANN202
        fields = batch._asdict()
        fields.pop("user_id", None)
        inputs = {
            "x": tf.reshape(fields.pop("x_flat"), [-1, n_windows, n_features]),
            "mask": tf.reshape(fields.pop("mask"), [-1, n_windows]),
            "static": tf.reshape(fields.pop("static"), [-1, n_static]),
        }
        return inputs, fields

    return to_model


class _Blended:
    """``model`` with its draws mixed as the saved model serves them: what validation metrics read."""

    def __init__(self, model, mixer) -> None:  # noqa: ANN001
        self.model, self.mixer, self.shape_spec = model, mixer, model.shape_spec

    def __call__(self, inputs: dict, training: bool = False) -> dict:
        return {"params": self.mixer(self.model(inputs, training=training)["params"], inputs["static"])}


def save_with_blend(model, plan: RunPlan, val_sample: tuple[dict, dict] | None, result) -> dict:  # noqa: ANN001
    """Weigh the Pareto/NBD prior against the trained ``model`` on the validation rows, save the
    model with the chosen blend (model/btyd.py), and return what the choice rests on. The
    ``result``'s validation metrics become the blend's (the network's own are kept in the facts)."""
    import tensorflow as tf

    from interest_decay.model.btyd import Mixer, blend_on_validation
    from interest_decay.model.export import save_model
    from interest_decay.model.training import validation_metrics

    def network(inputs: dict) -> tf.Tensor:
        return model(inputs, training=False)["params"]

    blend, facts = blend_on_validation(network, val_sample, plan.btyd_prior, list(plan.shape.horizons_days))
    log.info(
        "blend with Pareto/NBD: the network's weight %.3f (%s)", facts["model_weight"], facts.get("reason", "chosen on validation rows")
    )
    if blend is not None and val_sample is not None:
        facts["network_metrics"] = {k: round(v, 4) for k, v in result.final_metrics.items()}
        result.final_metrics = validation_metrics(_Blended(model, Mixer(blend)), val_sample)
    save_model(model, plan.model_dir, plan.normalisation, plan.feature_spec, {**plan.training_facts, "btyd_blend": facts}, blend=blend)
    return facts


def train_on_rank(plan: RunPlan, train_converter, val_converter, val_sample: tuple[dict, dict], n_train_rows: int, n_val_rows: int) -> dict:  # noqa: ANN001
    """Horovod rank body: train from petastorm converters; rank 0 saves the model."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from interest_decay.model.training import average_members, fit, steps_for

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    # TensorFlow sizes its thread pools to every core of the host; with several ranks on one host
    # each would, and they would take turns on the cores. A share each instead, and as many
    # petastorm reader threads (they decode Parquet while the model trains).
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    to_model = _batch_reader(plan.shape.n_windows, plan.shape.n_window_features, plan.shape.n_static)
    chief = hvd.rank() == 0
    listeners = [fn for fn in (_mlflow_listener(plan), plan.on_epoch_end) if fn] if chief else []
    models, results = [], []
    started = time.perf_counter()
    with (
        train_converter.make_tf_dataset(
            batch_size=plan.batch_size, num_epochs=None, cur_shard=hvd.rank(), shard_count=hvd.size(), workers_count=threads
        ) as train_data,
        val_converter.make_tf_dataset(
            batch_size=plan.batch_size, num_epochs=None, cur_shard=hvd.rank(), shard_count=hvd.size(), workers_count=1
        ) as val_data,
    ):
        for member in range(plan.members):
            if plan.members > 1 and chief:
                log.info("member %d of %d", member + 1, plan.members)
            tf.random.set_seed(member_seed(plan, member) + hvd.rank())
            model = build_model(plan, plan.learning_rate * hvd.size(), hvd.DistributedOptimizer)
            results.append(
                fit(
                    model,
                    train_data.map(to_model),
                    epochs=plan.epochs,
                    steps_per_epoch=steps_for(n_train_rows, plan.batch_size, hvd.size()),
                    checkpoint_dir=member_checkpoints(plan, member),
                    validation_data=val_data.map(to_model),
                    validation_steps=steps_for(n_val_rows, plan.batch_size, hvd.size()),
                    val_sample=val_sample if chief else None,
                    patience=plan.patience,
                    is_chief=chief,
                    first_callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback()],
                    epoch_listeners=member_listeners(plan, member, listeners),
                    tensorboard_dir=plan.tensorboard_dir if chief else None,
                    average_from_epoch=plan.average_from_epoch,
                )
            )
            models.append(model)
    seconds = time.perf_counter() - started
    # The learned parameters only: loss trackers are per-rank running means and may differ.
    weights_digest = float(sum(float(np.abs(w.numpy()).sum()) for model in models for w in model.trainable_weights))
    model, result = average_members(models, results, val_sample if chief else None)
    blend = {}
    if chief:
        blend = save_with_blend(model, plan, val_sample, result)
    return {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "fit": asdict(result),
        "seconds": seconds,
        "weights_digest": weights_digest,
        "btyd_blend": blend,
    }


def train_in_process(plan: RunPlan, train: tuple[dict, dict], val: tuple[dict, dict], val_sample: tuple[dict, dict]) -> dict:
    """The single-process path: the same model and loop on in-memory arrays."""
    import tensorflow as tf

    from interest_decay.model.training import as_dataset, average_members, fit, steps_for

    listeners = [fn for fn in (_mlflow_listener(plan), plan.on_epoch_end) if fn]
    n_rows = len(train[1]["censored"])
    models, results = [], []
    started = time.perf_counter()
    for member in range(plan.members):
        if plan.members > 1:
            log.info("member %d of %d", member + 1, plan.members)
        seed = member_seed(plan, member)
        tf.random.set_seed(seed)
        model = build_model(plan, plan.learning_rate)
        results.append(
            fit(
                model,
                as_dataset(*train, plan.batch_size, shuffle_seed=seed),
                epochs=plan.epochs,
                steps_per_epoch=steps_for(n_rows, plan.batch_size),
                checkpoint_dir=member_checkpoints(plan, member),
                validation_data=tf.data.Dataset.from_tensor_slices(val).batch(plan.batch_size * 4),
                val_sample=val_sample,
                patience=plan.patience,
                epoch_listeners=member_listeners(plan, member, listeners),
                tensorboard_dir=plan.tensorboard_dir,
                average_from_epoch=plan.average_from_epoch,
            )
        )
        models.append(model)
    seconds = time.perf_counter() - started
    model, result = average_members(models, results, val_sample)
    blend = save_with_blend(model, plan, val_sample, result)
    return {"rank": 0, "size": 1, "fit": asdict(result), "seconds": seconds, "btyd_blend": blend}
