"""Bronze ingest: raw CSV / JSON / Parquet / text files to the ``events`` Delta table.

Every row read ends in exactly one place: ``events`` (new), already in ``events`` from an
earlier run of the same file, or ``events_quarantine`` with its reason. The run summary
reconciles the three: ``read = new + already_ingested + quarantined``.

    spark-submit jobs/ingest.py --conf conf/local.yaml --input data/generated/events --preset generator
"""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from interest_decay.contract import Table
from interest_decay.jobs.common.config import Settings
from interest_decay.jobs.common.ingestion import check_quarantine_share, detect_format, resolve_mapping, validated_events, write_events
from interest_decay.jobs.common.runs import RunSummary, stage_run

log = logging.getLogger(__name__)


def run(spark: SparkSession, settings: Settings, input_path: str | None = None, preset: str | None = None) -> RunSummary:
    """Ingest ``input_path`` (file, folder or glob) into ``events`` and ``events_quarantine``."""
    path = input_path or settings.ingest.input
    if not path:
        raise ValueError("no input: pass --input PATH or set ingest.input")
    preset_name, mapping = resolve_mapping(settings.ingest, preset)
    fmt = detect_format(path, mapping, settings.ingest.format)
    with stage_run(spark, settings, "ingest", rate=("events", "read"), path=path, preset=preset_name, format=fmt) as summary:
        log.info("ingest %s (%s, preset %s)", path, fmt, preset_name)
        now = settings.ingest.now or summary.started_at.replace(tzinfo=None)
        summary.counts = write_events(spark, settings, validated_events(spark, settings, path, mapping, fmt, now), mapping, summary)
        summary.outputs = {"events": settings.table_path(Table.EVENTS), "events_quarantine": settings.table_path(Table.QUARANTINE)}
        if summary.counts["quarantined"]:
            log.warning(
                "ingest: %d of %d rows quarantined (%s)",
                summary.counts["quarantined"],
                summary.counts["read"],
                summary.outputs["events_quarantine"],
            )
        check_quarantine_share(summary.counts, settings.ingest.max_quarantine_share, summary.outputs["events_quarantine"])
    return summary


if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("ingest")
