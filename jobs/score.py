"""Score every user of the view for one as-of date into the Delta table ``scores``.

A pandas UDF in iterator form scores Arrow batches in parallel on the executors; the model is
loaded once per Python worker. Each run replaces exactly its slice (as_of_date, model_version)
in one Delta commit, so there is one row per user per slice, a re-run changes nothing, and a
run killed part-way leaves the table as it was.

    spark-submit jobs/score.py --conf conf/local.yaml --as-of 2026-04-27 [--model runs:/<id>]
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from interest_decay.contract import Table
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.models import check_model_fits, local_model, resolve_model
from interest_decay.jobs.common.runs import RunSummary, stage_run
from interest_decay.jobs.common.scoring import TIERS, scores_frame
from interest_decay.jobs.common.tables import slice_predicate, write_slice
from interest_decay.jobs.common.views import read_view
from interest_decay.model.metadata import read_metadata

log = logging.getLogger(__name__)


def run(spark: SparkSession, settings: Settings, as_of: dt.date | None = None, model: str | None = None) -> RunSummary:
    """Score every user of ``sequences`` at ``as_of`` (default: its latest as-of date)."""
    view, _ = read_view(spark, settings)
    as_of = as_of or view.agg(F.max("as_of_date")).first()[0]
    rows = view.where(F.col("as_of_date") == F.lit(as_of))
    model_uri, model_version = resolve_model(spark, settings, model)
    metadata = read_metadata(local_model(settings, model_uri))
    check_model_fits(settings, metadata, model_version)
    inputs = {"as_of_date": str(as_of), "model_version": model_version, "model": model_uri}
    with stage_run(spark, settings, "score", rate=("users", "scored"), **inputs) as summary:
        log.info("scoring %s with model %s", as_of, model_version)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.score.arrow_batch_size))
        model_scores, final, thresholds = scores_frame(spark, settings, rows, as_of, (model_uri, model_version), summary.started_at)
        scores_path = settings.table_path(Table.SCORES)
        predicate = slice_predicate(as_of, model_version)
        try:
            # mergeSchema: a newer version may add score columns to a table older runs wrote.
            write_slice(spark, final, scores_path, predicate, merge_schema=True)
        finally:
            model_scores.unpersist()

        written = (
            spark.read.format("delta")
            .load(scores_path)
            .where((F.col("as_of_date") == F.lit(as_of)) & (F.col("model_version") == model_version))
        )
        tiers = {r["risk_tier"]: r["count"] for r in written.groupBy("risk_tier").count().collect()}
        summary.counts = {"users": rows.count(), "scored": sum(tiers.values()), **{f"tier.{t}": tiers.get(t, 0) for t in TIERS}}
        summary.outputs = {"scores": scores_path, "decay_curve_days": ",".join(str(d) for d in metadata["decay_curve_days"])}
        summary.inputs["risk_tiers"] = f"{settings.score.tiers}: high below {thresholds[0]:.4f}, medium below {thresholds[1]:.4f}"
    return summary


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("score")
