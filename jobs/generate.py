"""Generate a synthetic shop: raw event files in the generator preset and the truth table.

spark-submit jobs/generate.py --conf conf/local.yaml --users 100000 --days 120
"""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from interest_decay.contract import Table
from interest_decay.features.events import pseudonymize_user_ids
from interest_decay.features.synthetic import synthetic_events, truth_table, user_truth
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.ingestion import pseudonym_key
from interest_decay.jobs.common.runs import RunSummary, stage_run

log = logging.getLogger(__name__)


def run(spark: SparkSession, settings: Settings) -> RunSummary:
    """Write ``<generator.output>/events`` (CSV or Parquet) and the Delta table ``truth``."""
    params = settings.generator
    inputs = {"users": params.users, "days": params.days, "seed": params.seed, "start_date": str(params.start_date)}
    with stage_run(spark, settings, "generate", rate=("events", "events"), **inputs) as summary:
        output = params.events_path
        truth_path = settings.table_path(Table.TRUTH)
        log.info("generate %d users over %d days (seed %d) -> %s", params.users, params.days, params.seed, output)

        # One partition per output file: the events stream out of each partition without a shuffle.
        users = user_truth(spark.range(params.users, numPartitions=params.output_files), params)
        truth = truth_table(users, params)
        if settings.ingest.pseudonymize_user_ids:
            # The truth is in the lakehouse, where no raw id may be: it gets the pseudonyms that
            # ingest will give the events, so that evaluate still matches every user to it.
            truth = pseudonymize_user_ids(truth, pseudonym_key(settings.ingest))
        truth.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(truth_path)
        writer = synthetic_events(users, params).write.mode("overwrite")
        if params.format == "csv":
            writer.option("header", True).csv(output)
        else:
            writer.parquet(output)

        n_events = spark.read.format(params.format).option("header", True).load(output).count()
        summary.counts = {"users": params.users, "events": n_events}
        summary.outputs = {"events": output, "truth": truth_path}
    return summary


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("generate")
