"""The pipeline's shape, in one place: its stages in order, the module that runs each, what each
reads and writes, and where it runs on Databricks.

``interest-decay run``, every ``interest-decay <stage>`` command, ``bench/pipeline.py`` and the
Databricks bundle (``resources/interest_decay_job.yml``, checked against this by a test) all read
it, so adding a stage is one entry here and one module in ``jobs/``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from interest_decay.contract import Artifact, Table
from interest_decay.jobs.common.runs import RunSummary

RAW_EVENTS = "raw event files"


@dataclass(frozen=True)
class Stage:
    """One stage: ``interest_decay.jobs.<module>.run(spark, settings, **options)``."""

    name: str
    module: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    # The Databricks job cluster its task runs on ("gpu": the ML runtime with Horovod); None for a
    # stage that is not part of the scheduled job (generate makes sample data).
    cluster: str | None = "etl"

    @property
    def run(self) -> Callable[..., RunSummary]:
        """The stage's ``run`` function, imported on first use (TensorFlow and MLflow take seconds
        to import, and most stages need neither)."""
        return importlib.import_module(f"interest_decay.jobs.{self.module}").run


STAGES: tuple[Stage, ...] = (
    Stage("generate", "generate", reads=(), writes=(RAW_EVENTS, Table.TRUTH), cluster=None),
    Stage("ingest", "ingest", reads=(RAW_EVENTS,), writes=(Table.EVENTS, Table.QUARANTINE)),
    Stage("sessionize", "sessionize", reads=(Table.EVENTS,), writes=(Table.SESSIONS,)),
    Stage("features", "features", reads=(Table.EVENTS,), writes=(Table.USER_WINDOWS, Table.SEQUENCES, Table.CATEGORY_INTEREST)),
    Stage("train", "train", reads=(Table.SEQUENCES,), writes=(Artifact.MODELS, Artifact.CHECKPOINTS, Artifact.MLFLOW), cluster="gpu"),
    Stage("score", "score", reads=(Table.SEQUENCES, Table.CATEGORY_INTEREST, Artifact.MODELS), writes=(Table.SCORES,)),
    Stage("evaluate", "evaluate", reads=(Table.SEQUENCES, Table.SESSIONS, Artifact.MODELS), writes=(Table.EVALUATIONS, Artifact.REPORTS)),
)
NAMES = tuple(stage.name for stage in STAGES)
# The always-on job beside the batch stages (never part of `run`): new files or events in, each
# touched user's current score out (its own Databricks job in the bundle).
STREAM = Stage(
    "stream",
    "stream",
    reads=(RAW_EVENTS, Table.EVENTS, Artifact.MODELS),
    writes=(Table.EVENTS, Table.QUARANTINE, Table.SCORES_LIVE, Artifact.STREAMS),
)
# The stages of the scheduled production job, in order: every stage that runs on real data.
PRODUCTION = tuple(stage for stage in STAGES if stage.cluster is not None)


def stage(name: str) -> Stage:
    """The stage called ``name``; ValueError naming the stages when there is none."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a stage name, got {type(name).__name__}")
    for candidate in (*STAGES, STREAM):
        if candidate.name == name:
            return candidate
    raise ValueError(f"{name!r} is not a stage; one of {', '.join((*NAMES, STREAM.name))}")


def between(first: str, last: str) -> tuple[Stage, ...]:
    """The stages from ``first`` to ``last``, both included, in pipeline order."""
    start, end = NAMES.index(stage(first).name), NAMES.index(stage(last).name)
    if start > end:
        raise ValueError(f"{first} comes after {last} in the pipeline")
    return STAGES[start : end + 1]
