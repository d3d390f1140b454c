"""The ``interest-decay`` command line: one sub-command per pipeline stage, and ``run`` for all.

Every stage takes ``--conf FILE`` (a YAML profile) and any number of ``--set dotted.key=value``
overrides, and ends by printing one JSON line that summarises the run. The same stages run as
``spark-submit jobs/<stage>.py`` with the same options; the stages and their order are
:mod:`interest_decay.pipeline`'s.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from interest_decay import pipeline
from interest_decay.contract import Table as ContractTable
from interest_decay.jobs.common.config import ConfigError, Settings, load_settings
from interest_decay.jobs.common.runs import RunSummary
from interest_decay.jobs.common.spark import spark_session

log = logging.getLogger("interest_decay")
console = Console(stderr=True)

app = typer.Typer(
    name="interest-decay",
    help="Predict how every user's interest in the shop fades: Spark + Delta Lake pipeline stages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfOption = Annotated[
    Optional[Path],
    typer.Option("--conf", help="YAML profile, e.g. conf/local.yaml; keys it leaves out take their defaults."),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override one conf key, e.g. --set ingest.future_tolerance_hours=48 (repeatable)."),
]


def _settings(conf: Path | None, overrides: list[str] | None, **flags: object) -> Settings:
    """Load the profile; stage flags (``generator.users`` etc.) override like ``--set``."""
    extra = [f"{key}={value}" for key, value in flags.items() if value is not None]
    try:
        settings = load_settings(conf, list(overrides or []) + extra)
    except ConfigError as exc:
        raise _fail(exc) from None
    if settings.log_level == "DEBUG":  # everything, Spark's own log included
        settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"quiet_logs": False})})
    else:  # TensorFlow's start-up notices (oneDNN, CPU instructions), before a stage imports it
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    handler.addFilter(_drop_py4j_retry_notice)
    logging.basicConfig(level=settings.log_level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("py4j", "py4j.clientserver", "py4j.java_gateway", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return settings


def _drop_py4j_retry_notice(record: logging.LogRecord) -> bool:
    # py4j logs a dropped-and-retried connection through the root logger at INFO, with a
    # traceback that looks like a failure; Horovod's and petastorm's short-lived clients cause it.
    return not (record.getMessage() == "Exception while sending command." and "py4j" in record.pathname)


def _fail(exc: Exception, stage: str | None = None) -> typer.Exit:
    """Print one line for a person (the stage, what went wrong and, in our own errors, the fix)
    and return the exit to raise. The traceback goes to the DEBUG log (``--set log_level=DEBUG``)."""
    # A config error is printed whole: it lists every bad key, one per line.
    where, message = (f" in {stage}", one_line_error(exc)) if stage else ("", str(exc))
    console.print(f"[bold red]error{where}:[/] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def one_line_error(exc: BaseException) -> str:
    """An error as one line: our own errors (ValueError, FileNotFoundError) say what to do and are
    printed as they are; Spark's and the JVM's keep their first line and their kind, and point at
    the traceback; anything else is named with its type."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    java = exc.java_exception if isinstance(exc, Py4JJavaError) else None
    if java is not None:
        # "Job aborted due to stage failure" wraps what went wrong; the deepest cause says it.
        while java.getCause() is not None:
            java = java.getCause()
        text = f"{java.getClass().getSimpleName()}: {java.getMessage()}"
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()] or ["(no message)"]
    if isinstance(exc, (ValueError, FileNotFoundError)) and not isinstance(exc, PySparkException):
        return " ".join(lines)
    first = lines[0]
    kind = "Spark" if isinstance(exc, (PySparkException, Py4JJavaError)) else type(exc).__name__
    return f"{kind}: {first} (the full traceback: --set log_level=DEBUG)"


def _run_stage(settings: Settings, name: str, **options: object) -> RunSummary:
    """Run one stage in its own SparkSession; any failure ends as one line and exit code 2."""
    try:
        with spark_session(settings.spark) as spark:
            return pipeline.stage(name).run(spark, settings, **options)
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line and exit code 2
        log.debug("%s failed", name, exc_info=True)
        raise _fail(exc, name) from None


@app.command()
def generate(
    conf: ConfOption = None,
    set_: SetOption = None,
    users: Annotated[Optional[int], typer.Option(help="Number of users (generator.users).")] = None,
    days: Annotated[Optional[int], typer.Option(help="Days of history (generator.days).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; same seed, same data (generator.seed).")] = None,
    output: Annotated[Optional[str], typer.Option(help="Folder for the raw files (generator.output).")] = None,
) -> None:
    """Generate a synthetic shop whose users' interest decays with a known time constant.

    Writes raw event files (CSV or Parquet, generator.format) in the `generator` preset's columns
    to <output>/events and the true per-user parameters to the Delta table <lakehouse>/truth.
    """
    settings = _settings(
        conf, set_, **{"generator.users": users, "generator.days": days, "generator.seed": seed, "generator.output": output}
    )
    _run_stage(settings, "generate")


@app.command()
def ingest(
    conf: ConfOption = None,
    set_: SetOption = None,
    input_path: Annotated[Optional[str], typer.Option("--input", help="A file, a folder or a glob (ingest.input).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Column preset: generator, rees46 or cdnow (ingest.preset).")] = None,
) -> None:
    """Load raw events (CSV, JSON, Parquet, whitespace text) into the bronze Delta table `events`.

    Every row that cannot be kept goes to `events_quarantine` with its reason (malformed line,
    missing user id, bad or out-of-range timestamp, unknown event type, bad price, duplicate).
    Re-running on the same files adds nothing.
    """
    settings = _settings(conf, set_)
    _run_stage(settings, "ingest", input_path=input_path, preset=preset)


@app.command()
def sessionize(
    conf: ConfOption = None,
    set_: SetOption = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every session instead of only what new events touch.")] = False,
) -> None:
    """Group events into sessions (silver Delta table `sessions`), incrementally.

    A gap longer than sessions.gap_minutes (default 30) between two events of a user starts a
    new session. Only users with events added since the last run are re-sessionized, and the
    result equals a full recompute; a re-run with no new events changes nothing.
    """
    settings = _settings(conf, set_)
    _run_stage(settings, "sessionize", full=full)


@app.command()
def features(
    conf: ConfOption = None,
    set_: SetOption = None,
    as_of: Annotated[
        Optional[datetime], typer.Option("--as-of", formats=["%Y-%m-%d"], help="Build the view for this date only (YYYY-MM-DD).")
    ] = None,
) -> None:
    """Build the gold tables: `user_windows`, the model's view `sequences`, `category_interest`.

    Without --as-of, the view holds every rolling as-of date (window boundaries), each with
    the last features.n_windows windows and labels for every horizon; that is what training
    reads. With --as-of, just that date, for scoring. As-of dates are window boundaries.
    """
    settings = _settings(conf, set_)
    _run_stage(settings, "features", as_of=as_of.date() if as_of else None)


@app.command()
def train(
    conf: ConfOption = None,
    set_: SetOption = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from scratch instead of resuming from checkpoints.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Move train.alias to the new model even if it validates worse than the current one.")
    ] = False,
) -> None:
    """Train the interest model (GRU + VAE + decay head) on the `sequences` view.

    train.mode horovod (default): petastorm feeds horovod.spark.run with train.num_proc
    processes; single: one process on in-memory arrays. One line per epoch with the loss parts
    and validation AUCs; the model is a SavedModel logged to MLflow. Re-running the same
    training after a crash resumes from the last finished epoch.
    """
    settings = _settings(conf, set_)
    _run_stage(settings, "train", fresh=fresh, force=force)


@app.command()
def score(
    conf: ConfOption = None,
    set_: SetOption = None,
    as_of: Annotated[
        Optional[datetime], typer.Option("--as-of", formats=["%Y-%m-%d"], help="As-of date to score (default: the view's latest).")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Model folder or runs:/<mlflow run id> (default: the newest trained).")] = None,
) -> None:
    """Score every user into the Delta table `scores` with a pandas UDF.

    Per user: P(active) for each horizon, the decay curve, the half-life, a risk tier, the
    suggested action, fading categories, the latent z and the reconstruction error. Each run
    replaces its (as_of_date, model_version) slice in one commit. A model whose features do not
    match the view is refused before anything is scored.
    """
    settings = _settings(conf, set_)
    _run_stage(settings, "score", as_of=as_of.date() if as_of else None, model=model)


@app.command()
def evaluate(
    conf: ConfOption = None,
    set_: SetOption = None,
    as_of: Annotated[
        Optional[datetime],
        typer.Option(
            "--as-of", formats=["%Y-%m-%d"], help="Evaluation date (default: the model's train.until, else the latest fully observed)."
        ),
    ] = None,
    model: Annotated[
        Optional[str], typer.Option(help="Model folder, runs:/<id> or models:/<name>@<alias> (default: the newest trained).")
    ] = None,
) -> None:
    """Judge the model against the recency rule, logistic RFM, BG/NBD, Pareto/NBD and LightGBM.

    Out of time on one date plus rolling-origin cross-validation (evaluate.folds); ROC-AUC,
    PR-AUC, Brier, calibration, precision/recall at the top, lift, predicted vs actual returners.
    Writes the Delta table `evaluations`, an HTML report with PNGs (its path is printed) and an MLflow run.
    """
    settings = _settings(conf, set_)
    summary = _run_stage(settings, "evaluate", as_of=as_of.date() if as_of else None, model=model)
    console.print(f"report: {summary.outputs['report']}")


@app.command()
def stream(
    conf: ConfOption = None,
    set_: SetOption = None,
    landing: Annotated[
        Optional[str], typer.Option(help="Folder or prefix where new raw files land (stream.landing); none: follow `events`.")
    ] = None,
    preset: Annotated[Optional[str], typer.Option(help="Column mapping preset of the landing files (as ingest's --preset).")] = None,
    trigger: Annotated[
        Optional[str], typer.Option(help="'available-now' (what has arrived, then stop) or an interval such as 5s (stream.trigger).")
    ] = None,
    stop_after: Annotated[Optional[float], typer.Option(help="Stop an interval-triggered stream after these seconds.")] = None,
) -> None:
    """Keep every user's score current: rescore the users of each micro-batch into `scores_live`.

    New files in the landing folder are ingested exactly as `ingest` would (same mapping,
    quarantine, no duplicates); without one, the rows batch `ingest` appends to `events` are
    followed. Each touched user is scored with the windows ending at the batch's moment, by the
    model `score` would use (a new champion is picked up at the next batch). A checkpoint under
    <lakehouse>/_streams lets a stopped or killed job resume where it was; one line per batch.
    """
    settings = _settings(conf, set_)
    _run_stage(settings, "stream", trigger=trigger, landing=landing, preset=preset, stop_after_seconds=stop_after)


@app.command("run")
def run_pipeline(
    conf: ConfOption = None,
    set_: SetOption = None,
    users: Annotated[Optional[int], typer.Option(help="Number of generated users (generator.users).")] = None,
    first: Annotated[
        str,
        typer.Option("--from", help="The first stage to run, e.g. ingest for your own data, or train after changing the model's settings."),
    ] = pipeline.NAMES[0],
    last: Annotated[str, typer.Option("--to", help="The last stage to run.")] = pipeline.NAMES[-1],
    input_path: Annotated[
        Optional[str], typer.Option("--input", help="Raw events for ingest (default: the generated files, or ingest.input).")
    ] = None,
    preset: Annotated[Optional[str], typer.Option(help="Column preset for --input: generator, rees46 or cdnow (ingest.preset).")] = None,
) -> None:
    """Run the pipeline, by default on generated sample data: generate -> ingest -> sessionize -> features -> train -> score -> evaluate.

    --from and --to run a part of it on the lakehouse the earlier stages left, in one Spark
    application; `--from ingest --input PATH --preset NAME` runs it on your own events.
    """
    settings = _settings(conf, set_, **{"generator.users": users})
    try:
        stages = pipeline.between(first, last)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--from/--to") from None
    if input_path is None and (stages[0].name == "generate" or settings.ingest.input is None):
        input_path, preset = settings.generator.events_path, "generator"
    options: dict[str, dict[str, object]] = {"ingest": {"input_path": input_path, "preset": preset}}
    timings = Table(title="interest-decay run", show_lines=False)
    for column in ("stage", "seconds", "rows"):
        timings.add_column(column)
    name, report = "run", None
    try:
        with spark_session(settings.spark) as spark:
            for number, stage in enumerate(stages, start=1):
                name = stage.name
                console.rule(f"[{number}/{len(stages)}] {name}")
                started = time.perf_counter()
                summary = stage.run(spark, settings, **options.get(name, {}))
                elapsed = time.perf_counter() - started
                console.print(f"[green]done[/] {name} in {elapsed:.1f} s")
                timings.add_row(name, f"{elapsed:.1f}", ", ".join(f"{k}={v}" for k, v in summary.counts.items() if "." not in k))
                report = summary.outputs.get("report", report)
    except Exception as exc:  # noqa: BLE001 - as in _run_stage
        log.debug("%s failed", name, exc_info=True)
        raise _fail(exc, name) from None
    console.print(timings)
    written = sorted({str(w) for stage in stages for w in stage.writes if w != pipeline.RAW_EVENTS} | {str(ContractTable.RUNS)})
    console.print(f"results under {settings.lakehouse}: {', '.join(written)}; the scores are in {ContractTable.SCORES}, one row per user")
    if report:
        console.print(f"evaluation report: {report}")


def run_stage_script(stage: str) -> None:
    """Entry point of ``spark-submit jobs/<module>.py ...``: the CLI stage with the same options."""
    app(args=[stage, *sys.argv[1:]], prog_name=f"jobs/{stage}.py")


def main() -> None:
    """Console script ``interest-decay``."""
    app()
