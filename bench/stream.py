"""Benchmark: arrival-to-score latency of the streaming job at set event rates.

    .venv/bin/python bench/stream.py                                  # 200, 1,000 and 5,000 events/s
    .venv/bin/python bench/stream.py --rates 1000 --seconds 120 --trigger 10s

A generated shop's first weeks are ingested and a small model is trained on them (or ``--model``
names one whose view settings are conf/local.yaml's); the stream then follows a landing folder
into which a replayer writes the shop's later events, in time order, at ``rate`` events per
second (one Parquet file per ``--file-seconds``). An event's latency is the time from its file
landing to the commit of the micro-batch that scored its user. The replay starts once a warm-up
file (the rate's first second of events, not timed) is scored: the first batch starts Python
workers and loads TensorFlow and the model, which a stream does once, not per batch; the sum of
its ingest, score and merge seconds is recorded as ``warmup_batch_s`` (its model check and first
read of ``scores_live`` left out). ``batches`` counts the timed batches that scored someone;
``batch_seconds`` is their mean time in each part (``score`` includes reading the users' events).
Lines before 2026-12-03 17:00 UTC had no warm-up: their first batch was timed too. Per rate: p50/p95/p99 over every
event, and whether the job kept up (the median latency of the last third of the files no more than
twice that of the first third, and every file scored). One JSON line per rate in
bench/results/stream.jsonl.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from pyspark.sql import SparkSession
from results_file import record

from interest_decay.jobs import features, generate, ingest, stream, train
from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.spark import spark_session

CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"
HISTORY_UNTIL = pd.Timestamp("2026-03-02")  # a window boundary: history before, replay after


def replay(
    events: pd.DataFrame, landing: Path, rate: float, file_seconds: float, seconds: float, arrivals: dict[str, tuple[float, int]]
) -> None:
    """Write ``events`` into ``landing`` at ``rate`` per second, one file per ``file_seconds``,
    for at most ``seconds``; ``arrivals`` gets each file's name and the time it landed."""
    per_file = max(1, round(rate * file_seconds))
    start = time.time()
    for number, first in enumerate(range(0, len(events), per_file)):
        due = start + number * file_seconds
        if due - start >= seconds:
            break
        time.sleep(max(0.0, due - time.time()))
        name = f"replay-{number:06d}.parquet"
        hidden = landing / f".{name}"  # written hidden, then renamed: the stream never sees half a file
        events.iloc[first : first + per_file].to_parquet(hidden, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
        hidden.rename(landing / name)
        arrivals[name] = (time.time(), len(events.iloc[first : first + per_file]))


def latencies(arrivals: dict[str, tuple[float, int]], reports: list[stream.BatchReport]) -> tuple[np.ndarray, list[float], int]:
    """(per-event latencies in seconds, per-file latencies in arrival order, files never scored)."""
    scored = {Path(f).name: r.finished_at for r in reports for f in r.files if r.finished_at is not None}
    per_event, per_file, missing = [], [], 0
    for name, (landed, count) in sorted(arrivals.items()):
        if name not in scored:
            missing += 1
            continue
        per_file.append(scored[name] - landed)
        per_event += [scored[name] - landed] * count
    return np.array(per_event), per_file, missing


def measure(
    spark: SparkSession,
    settings: Settings,
    landing: Path,
    later: pd.DataFrame,
    rate: float,
    seconds: float,
    file_seconds: float,
    trigger: str,
    grace: float,
) -> dict[str, object]:
    """Stream ``settings.stream.landing`` while ``later`` is replayed into it at ``rate``, after a
    warm-up file; the latency figures."""
    needed = int(rate * seconds)
    warmup_events = max(1, round(rate * file_seconds))
    if needed + warmup_events > len(later):
        raise typer.BadParameter(
            f"{rate:g} events/s for {seconds:g} s and a warm-up file need {needed + warmup_events:,} events; there are {len(later):,}"
        )
    warmup = landing / "warmup.parquet"
    later.iloc[:warmup_events].to_parquet(warmup, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    arrivals: dict[str, tuple[float, int]] = {}
    reports: list[stream.BatchReport] = []
    warmups: list[stream.BatchReport] = []
    warmed = threading.Event()

    def on_batch(report: stream.BatchReport) -> None:
        if any(Path(f).name == warmup.name for f in report.files):
            warmups.append(report)
            warmed.set()
        else:
            reports.append(report)

    def replay_when_warm() -> None:
        if warmed.wait(timeout=grace):
            replay(later.iloc[warmup_events : warmup_events + needed], landing, rate, file_seconds, seconds, arrivals)

    replayer = threading.Thread(target=replay_when_warm)
    replayer.start()

    # The stream runs on past the replay until the last file's scores are in (or `grace` more seconds).
    def all_scored() -> bool:
        scored = {Path(f).name for r in reports for f in r.files}
        return not replayer.is_alive() and set(arrivals) <= scored

    stream.run(spark, settings, trigger=trigger, stop_after_seconds=seconds + 2 * grace, on_batch=on_batch, stop_when=all_scored)
    replayer.join()
    if not warmed.is_set():
        raise RuntimeError(f"the warm-up file was not scored within --grace {grace:g} s: nothing was replayed, nothing is recorded")
    per_event, per_file, missing = latencies(arrivals, reports)
    third = max(1, len(per_file) // 3)
    kept_up = bool(missing == 0 and per_file and np.median(per_file[-third:]) <= 2 * max(np.median(per_file[:third]), 1.0))
    return {
        "bench": "stream",
        "rate_events_per_second": rate,
        "seconds": seconds,
        "trigger": trigger,
        "file_seconds": file_seconds,
        "events": int(sum(n for _, n in arrivals.values())),
        "files": len(arrivals),
        "files_not_scored": missing,
        "batches": len(reports),
        # The untimed first batch (Python workers, TensorFlow and the model loaded): its parts' seconds.
        "warmup_batch_s": round(sum(warmups[0].seconds.values()), 2) if warmups else None,
        "latency_p50_s": round(float(np.percentile(per_event, 50)), 2) if per_event.size else None,
        "latency_p95_s": round(float(np.percentile(per_event, 95)), 2) if per_event.size else None,
        "latency_p99_s": round(float(np.percentile(per_event, 99)), 2) if per_event.size else None,
        "kept_up": kept_up,
        # Mean seconds per batch in each part (ingest, score, merge): where a batch's time goes.
        "batch_seconds": {
            part: round(float(np.mean([r.seconds[part] for r in reports if part in r.seconds])), 2)
            for part in ("ingest", "score", "merge")
            if any(part in r.seconds for r in reports)
        },
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(
    rates: Annotated[list[float], typer.Option("--rates", help="Events per second to replay.")] = [200.0, 1000.0, 5000.0],  # noqa: B006
    seconds: Annotated[float, typer.Option(help="How long each rate is replayed.")] = 60.0,
    trigger: Annotated[str, typer.Option(help="The stream's trigger interval.")] = "5s",
    file_seconds: Annotated[float, typer.Option(help="One landing file per this many seconds.")] = 1.0,
    users: Annotated[int, typer.Option(help="Generated users (about 45 events each); enough events for the highest rate.")] = 20000,
    model: Annotated[str | None, typer.Option(help="A trained model (conf/local.yaml's view settings); default: train one.")] = None,
    grace: Annotated[float, typer.Option(help="Seconds the stream may run past the replay to score the last files.")] = 60.0,
    overrides: Annotated[list[str], typer.Option("--set", help="Override a conf key of every run, e.g. spark.conf.<key>=<value>.")] = [],  # noqa: B006
) -> None:
    """Replay events at each rate into a landing folder, stream them, and record the latencies."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        root = Path(scratch)
        base = [
            f"generator.output={root / 'raw'}",
            f"generator.users={users}",
            "generator.days=90",
            "train.epochs=1",
            "train.max_rows_per_as_of=3000",
            "evaluate.folds=0",
            *overrides,
        ]
        settings = load_settings(CONF, [f"lakehouse={root / 'history'}", *base, "train.until=2026-02-23"])
        with spark_session(settings.spark) as spark:
            generated = generate.run(spark, settings)
            raw = pd.read_parquet(generated.outputs["events"]).sort_values("event_time")
            history, later = raw[raw["event_time"] < HISTORY_UNTIL], raw[raw["event_time"] >= HISTORY_UNTIL]
            (root / "history-files").mkdir()
            history.to_parquet(
                root / "history-files" / "history.parquet", index=False, coerce_timestamps="us", allow_truncated_timestamps=True
            )
            if model is None:
                ingest.run(spark, settings, input_path=str(root / "history-files"), preset="generator")
                features.run(spark, settings)
                model = train.run(spark, settings, fresh=True).outputs["model"]
            for rate in rates:
                lake = root / f"lake-{rate:g}"
                landing = root / f"landing-{rate:g}"
                landing.mkdir()
                live = load_settings(CONF, [f"lakehouse={lake}", *base, f"score.model={model}", f"stream.landing={landing}"])
                ingest.run(spark, live, input_path=str(root / "history-files"), preset="generator")
                result = measure(spark, live, landing, later, rate, seconds, file_seconds, trigger, grace)
                record("stream", {**result, "history_events": len(history)})


if __name__ == "__main__":
    typer.run(main)
