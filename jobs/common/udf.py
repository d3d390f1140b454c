"""The scoring pandas UDF that ``score`` and ``evaluate`` share: Arrow batches of the view's rows
in, every score out, the model loaded once per Python worker."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark import TaskContext
from pyspark.sql import functions as F

from interest_decay.jobs.common.storage import Storage
from interest_decay.model.scoring import score_batches, score_columns


def score_udf(storage: Storage, model_uri: str, horizons: list[int], explain: bool = True, with_params: bool = False):  # noqa: ANN201
    """The iterator pandas UDF: (x_flat, mask, static) batches in, a struct of scores out
    (:func:`model.scoring.score_columns`). Each executor fetches the model from ``storage`` once
    into its local cache. ``evaluate`` runs the same UDF, with the decay parameters added."""

    @F.pandas_udf(", ".join(f"{name} {kind}" for name, kind in score_columns(horizons, with_params)))
    def score(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        task = TaskContext.get()
        threads = task.cpus() if task is not None else None  # the task's share of the executor's cores
        yield from score_batches(str(storage.fetch(model_uri)), horizons, batches, explain, with_params, threads)

    return score
