"""Run configuration: YAML profiles in conf/ validated into pydantic models.

A profile only lists what differs from the defaults below. Every error names the file and the
dotted key, so a typo such as ``ingest.futur_tolerance_hours`` fails loudly instead of being
ignored.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from interest_decay.contract import GENERATED_EVENTS_FOLDER, SourceMapping, Table
from interest_decay.features.synthetic import ShopProfile


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkSettings(_Strict):
    """How the SparkSession is built when no session exists yet (see jobs.common.spark)."""

    master: str = "local[*]"
    app_name: str = "interest-decay"
    # local: add the Delta jars fetched by setup (spark.jars); provided: the cluster already has
    # Delta (Databricks, spark-submit --packages) and nothing is added.
    delta_jars: Literal["local", "provided"] = "local"
    jars_dir: str | None = None
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # When this process starts the JVM: Spark's own log at WARN without its start-up notices and
    # failed tasks' stack traces (the stage's one-line error says what failed). false, or
    # log_level: DEBUG, keeps Spark's defaults. spark-submit and Databricks keep their own logging either way.
    quiet_logs: bool = True


class GeneratorSettings(ShopProfile):
    """The synthetic shop (its profile: :class:`features.synthetic.ShopProfile`) and where its raw files go."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format: Literal["csv", "parquet"] = "parquet"
    output: str = "./data/generated"
    output_files: int = Field(8, gt=0)

    @property
    def events_path(self) -> str:
        """The folder (or URI) of the generated raw event files: what ``ingest`` reads with the generator preset."""
        return f"{absolute_path(self.output).rstrip('/')}/{GENERATED_EVENTS_FOLDER}"


class IngestSettings(_Strict):
    """Bronze ingest: parsing, validation rules and pseudonymisation."""

    preset: Literal["generator", "rees46", "cdnow"] | None = "generator"
    # Used instead of the preset when preset is null.
    mapping: SourceMapping | None = None
    input: str | None = None
    format: Literal["auto", "csv", "json", "parquet", "text"] = "auto"
    # Columns of a CSV or Parquet file that the mapping does not read: "ignore" (logged), or
    # "keep" them in the quarantine's ``raw`` JSON of the rows that are quarantined.
    extra_columns: Literal["ignore", "keep"] = "ignore"
    future_tolerance_hours: float = Field(24.0, ge=0)
    min_event_time: dt.datetime = dt.datetime(1990, 1, 1)
    # Reference "now" for the future-timestamp rule; null means the time the run starts.
    now: dt.datetime | None = None
    # Above this share of the rows read quarantined (duplicates left out) the stage fails, after
    # writing them: a changed timestamp format or mapping, not a few bad rows.
    max_quarantine_share: float = Field(0.2, ge=0, le=1)
    pseudonymize_user_ids: bool = False
    # Name of the environment variable holding the HMAC key; the key itself never goes in a file.
    pseudonymize_key_env: str = "INTEREST_DECAY_PSEUDONYM_KEY"


class SessionSettings(_Strict):
    """Silver sessions: a gap longer than ``gap_minutes`` between two events starts a new session."""

    gap_minutes: float = Field(30.0, gt=0)


class FeatureSettings(_Strict):
    """Gold features: window length and count, their alignment, and category interest."""

    window_days: int = Field(7, gt=0)
    n_windows: int = Field(12, gt=0)
    # Windows are aligned to this date (a Monday); as-of dates are window boundaries.
    origin: dt.date = dt.date(2024, 1, 1)
    recent_windows: int = Field(4, gt=0)
    top_categories: int = Field(3, gt=0)
    # Windows after each as-of date whose session counts label the view (``future_sessions``):
    # what teaches the decay head how fast each user's visits fade.
    future_windows: int = Field(4, gt=0)


class TrainSettings(_Strict):
    """Training: Horovod-on-Spark (or one process), the model's size and the loss weights."""

    mode: Literal["horovod", "single"] = "horovod"
    # Horovod ranks: a number, or "auto" for one per task slot Spark offers (see jobs.train.ranks_for).
    num_proc: Annotated[int, Field(gt=0)] | Literal["auto"] = 2
    epochs: int = Field(8, gt=0)
    batch_size: int = Field(256, gt=0)
    # Per process; Horovod scales it by the number of processes.
    learning_rate: float = Field(2e-3, gt=0)
    patience: int = Field(3, gt=0)
    hidden_units: int = Field(32, gt=0)
    latent_dim: int = Field(8, gt=0)
    # The latent state z, drawn from each user's posterior given their history: a score is the
    # mean over `posterior_draws` draws, its 80% interval their spread (model/network.py).
    # false (the default, chosen on validation users: docs/results): no z, one draw, the scores'
    # intervals from the frailty alone (train.frailty).
    use_vae: bool = False
    # Each user's visit rate times a frailty G ~ Gamma(k, k), k = a shape the network learns for
    # the shop + the user's repeat sessions: how much users with the same history still differ,
    # and the scores' 80% intervals without the VAE (docs/model.md).
    frailty: bool = True
    posterior_draws: int = Field(32, ge=2)
    # Weight of KL(posterior || N(0, I)): an anchor for the latent's scale; the likelihood of the
    # future sets how wide each user's posterior is.
    beta: float = Field(0.01, ge=0)
    kl_warmup_epochs: int = Field(3, ge=1)
    recon_weight: float = Field(0.05, ge=0)
    step_weight: float = Field(0.2, ge=0)
    # Poisson likelihood of the visits in each of the next `features.future_windows` windows:
    # what teaches each user's own decay (0: the survival likelihood alone).
    count_weight: float = Field(1.0, ge=0)
    # The counts' likelihood: "poisson", or "negative_binomial" with one dispersion learned for
    # the shop (visits in bursts, as purchases often are; the run summary gives the dispersion).
    count_likelihood: Literal["poisson", "negative_binomial"] = "poisson"
    # Weight of the spread of the users' log baselines in each batch: a prior that pulls the
    # baseline of a user with little history towards the shop's (0: every baseline free).
    baseline_pooling: float = Field(0.0, ge=0)
    # Each row's weight in the count likelihood: "recent_sessions", 1 / (1 + its sessions per
    # window lately), so the busy users do not set the fit for the fading ones; "none": all 1.
    count_row_weights: Literal["recent_sessions", "none"] = "recent_sessions"
    # Use nothing after this date (labels censored there): an evaluation on it is out of time.
    until: dt.date | None = None
    # How the rows known by `until` are split for early stopping and validation metrics:
    # "as_of_date": one later as-of date validates (`validation_as_of`, default the latest whose
    #   longest horizon is fully observed by `until`); training uses the dates before it, labels
    #   censored there. Suits histories that are long next to the longest horizon.
    # "users": a `validation_users` share of the users (by a hash of user_id) validates; the
    #   others train on every as-of date before `until`, labels censored at `until`. Suits a
    #   short calibration period (CDNOW: 39 weeks to predict the next 39), where the latest
    #   dates carry the long-absent customers that the model is asked about.
    validation: Literal["as_of_date", "users"] = "as_of_date"
    validation_as_of: dt.date | None = None
    validation_users: float = Field(0.1, gt=0, lt=1)
    # Stochastic weight averaging: the saved model is the mean of the weights at the end of
    # every epoch from this one on (null: the last epoch's weights). Steadier long-horizon
    # predictions from one run; early stopping still ends the run.
    average_from_epoch: int | None = Field(None, ge=1)
    # Models trained one after the other, each from its own random start and batch order, and
    # saved as one: a mixture of their draws. Steadier scores from one run, and intervals that
    # span the members' disagreement, at N times the training time.
    members: int = Field(1, ge=1)
    # Training and validation rows kept per as-of date (a seeded sample of users by hash; null:
    # all): bounds an epoch's cost by the number of dates, not users, for shops with millions.
    # The run summary gives the training rows available and kept.
    max_rows_per_as_of: int | None = Field(None, gt=0)
    normalisation_sample_rows: int = Field(200_000, gt=0)
    val_sample_rows: int = Field(50_000, gt=0)
    # Pareto/NBD in every user's scores: "validation" fits it on the training rows and mixes it
    # with the network at the weight (1, 2/3, 1/2, 1/3 or 0 for the network) that gives the
    # validation rows' labels "active within h days" the highest likelihood (model/btyd.py);
    # "off": the network alone.
    btyd_blend: Literal["validation", "off"] = "validation"
    btyd_fit_rows: int = Field(20_000, gt=0)
    mixed_precision: bool = False
    seed: int = 0
    # MLflow experiment. GPU executors are Spark settings (spark.conf in conf/cluster-gpu.yaml).
    experiment: str = "interest-decay"
    # Every trained model becomes a new version of this registered model; `alias` (if set) is
    # moved to it, so `score --model models:/interest-decay@champion` picks it up.
    registered_model: str | None = "interest-decay"
    alias: str | None = "champion"

    @model_validator(mode="after")
    def _one_kind_of_validation(self) -> TrainSettings:
        if self.validation == "users" and self.validation_as_of is not None:
            raise ValueError("validation_as_of goes with validation: as_of_date (with validation: users a share of the users validates)")
        return self


class ScoreSettings(_Strict):
    """Scoring: which model, Arrow batch size, risk tiers and the rules that pick an action."""

    # A model folder, "runs:/<mlflow run id>", "models:/<name>@<alias>", or null for the newest
    # model `train` produced.
    model: str | None = None
    # Users per Arrow batch the scoring UDF sees: each batch's curves hold users x draws x days.
    arrow_batch_size: int = Field(2_000, gt=0)
    # Risk tiers from P(active within the longest horizon). "quantile": from this shop's own
    # distribution, the `high_risk_share` least likely to come back are high risk and the next
    # `medium_risk_share` medium; "fixed": below the probabilities `high_risk_below` and
    # `medium_risk_below`.
    tiers: Literal["quantile", "fixed"] = "quantile"
    high_risk_share: float = Field(0.2, gt=0, lt=1)
    medium_risk_share: float = Field(0.3, gt=0, lt=1)
    high_risk_below: float = Field(0.4, gt=0, lt=1)
    medium_risk_below: float = Field(0.6, gt=0, lt=1)
    # Per user, the three features that lower P(active) most (17 more light passes of the model).
    drivers: bool = True
    # A category is decaying when its recent share is at least this far below its earlier share.
    decaying_share_drop: float = Field(0.15, gt=0, le=1)
    # A low-risk user whose silence half-life is shorter than this gets a reminder now: their
    # visit rate will have halved within these days of silence.
    fading_fast_days: float = Field(7.0, gt=0)

    @model_validator(mode="after")
    def _tiers_in_order(self) -> ScoreSettings:
        if self.high_risk_share + self.medium_risk_share >= 1:
            raise ValueError("high_risk_share + medium_risk_share must leave some users in the low tier (sum below 1)")
        if self.high_risk_below >= self.medium_risk_below:
            raise ValueError("high_risk_below must be below medium_risk_below")
        return self

    def thresholds(self, quantiles) -> tuple[float, float]:  # noqa: ANN001
        """(high risk below, medium risk below) for these settings; ``quantiles(probabilities)``
        gives the quantiles of this run's P(active) (used in quantile mode)."""
        from interest_decay.model.scoring import tier_thresholds

        shares, fixed = (self.high_risk_share, self.medium_risk_share), (self.high_risk_below, self.medium_risk_below)
        return tier_thresholds(self.tiers, shares, fixed, quantiles)


class EvaluateSettings(_Strict):
    """Evaluation: the date, horizons, baselines' data, rolling origins, bootstrap and explanations."""

    # Evaluation as-of date (default: the `train.until` of the model, else the latest date whose
    # horizons are fully observed).
    as_of: dt.date | None = None
    # Horizons to judge P(active within h) on (default: horizons_days); any length works, the
    # model's decay curve gives every horizon.
    horizons_days: list[int] | None = None
    # Users of the evaluation date evaluated on the driver (a seeded sample above this): every
    # method, label and metric; the report states the sample. 50,000 users give a model AUC to
    # about +-0.004 (two standard errors at AUC 0.75) and bound the driver's memory whatever the shop's size.
    max_users: int = Field(50_000, gt=0)
    # History rows (before the evaluation date, labels censored there) the hazard baselines learn from.
    baseline_rows: int = Field(50_000, gt=0)
    # Rolling-origin cross-validation: this many earlier origins, each `fold_step_days` apart,
    # where the model is retrained (one process) and every baseline refitted. The fold's model
    # learns from every as-of date before its origin, as the baselines do (a share of the users
    # validates), for `fold_epochs` (null: train.epochs).
    folds: int = Field(2, ge=0)
    fold_step_days: int | None = Field(None, gt=0)
    fold_epochs: int | None = Field(None, gt=0)
    # Each rolling origin retrains the model on the whole view up to it: with more users than
    # this at the evaluation date they are left out (the report says so); raise it to keep them.
    folds_max_users: int = Field(100_000, gt=0)
    bootstrap_rounds: int = Field(300, gt=10)
    # The paired bootstrap resamples a seeded sample of this many evaluated users (its interval
    # is then that of a sample this size: wider, never narrower, than the whole population's).
    bootstrap_users: int = Field(100_000, gt=0)
    # BG/NBD and Pareto/NBD (four population parameters each) are fitted on a seeded sample of
    # this many evaluated users, then score every one: their fit is one optimiser pass over all
    # the users it is given per step (Pareto/NBD: 17.5 s on 10,000, 7.9 s on 5,000, the same AUC
    # to 0.0001 on a 200,000-user shop).
    btyd_fit_users: int = Field(5_000, gt=0)
    # Users explained one by one in the report (the most at risk).
    explain_users: int = Field(10, ge=0)
    seed: int = 0


class StreamSettings(_Strict):
    """The streaming job: where new files land, how often it runs, how much each batch takes."""

    # Folder or object-store prefix where new raw files arrive (read with ingest's preset and
    # mapping); empty: follow the `events` table instead (rows appended by batch `ingest`).
    landing: str = ""
    # "available-now": process what has arrived, then stop (a scheduled job); or an interval such
    # as "5s" or "1 minute": run until stopped, one micro-batch per interval.
    trigger: str = "available-now"
    # At most this many new files per micro-batch (bounds a batch after a backlog).
    max_files_per_trigger: int = Field(100, gt=0)
    # The query's checkpoint (what it has read; a restart resumes there); empty:
    # <lakehouse>/_streams/<landing or events>.
    checkpoint: str = ""

    @field_validator("trigger")
    @classmethod
    def _known_trigger(cls, trigger: str) -> str:
        if trigger != "available-now" and not re.fullmatch(r"\d+(\.\d+)?\s*(s|seconds?|minutes?|ms|milliseconds?)", trigger.strip()):
            raise ValueError(f"trigger must be 'available-now' or an interval such as '5s' or '1 minute', got {trigger!r}")
        return trigger.strip()


class StorageSettings(_Strict):
    """How artifacts other than Delta tables reach the lakehouse (see jobs.common.storage)."""

    # Local folder for staged uploads and fetched copies of models; empty: $INTEREST_DECAY_CACHE
    # /artifacts or ~/.cache/interest-decay/artifacts.
    cache_dir: str = ""
    # Options for the lakehouse's fsspec filesystem, e.g. {client_kwargs: {endpoint_url: ...}} for
    # s3fs. Credentials and an S3 endpoint are better left to the environment (AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), which Spark and Python then share.
    options: dict[str, Any] = Field(default_factory=dict)
    # A lakehouse on S3 (s3a://) needs Delta's DynamoDB log store for concurrent writers: S3 has
    # no "put if absent", so two drivers committing the same version would both succeed and one
    # commit would be lost. true: this lakehouse has one writer at a time, and stages run on it
    # without that log store (docs/deployment.md).
    single_writer: bool = False


class Settings(_Strict):
    """Everything one run of any stage needs."""

    lakehouse: str = "./lakehouse"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    horizons_days: list[int] = Field(default_factory=lambda: [7, 14, 30], min_length=1)

    @field_validator("horizons_days")
    @classmethod
    def _positive_sorted(cls, horizons: list[int]) -> list[int]:
        if any(h <= 0 for h in horizons):
            raise ValueError(f"horizons must be positive numbers of days, got {horizons}")
        return sorted(set(horizons))

    def table_path(self, table: Table) -> str:
        """Absolute path (or URI) of the Delta table ``table`` inside the lakehouse."""
        if not isinstance(table, Table):
            raise TypeError(f"table must be one of contract.Table, got {table!r}")
        return f"{absolute_path(self.lakehouse).rstrip('/')}/{table.value}"


def absolute_path(path: str) -> str:
    """A local path made absolute; a ``file:`` URI becomes the local path it names (so Spark,
    Delta and the local artifacts all see one spelling of it); other URIs (``s3a://``,
    ``dbfs:/``, ``abfss://``) are left as they are."""
    if path.startswith("file:"):
        parsed = urlparse(path)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"a file: URI names no host (file:///absolute/path), got {path!r}")
        return str(Path(unquote(parsed.path)).resolve())
    if re.match(r"^[A-Za-z][\w+.-]*:", path):
        return path
    return str(Path(path).resolve())


def load_settings(path: str | Path | None = None, overrides: list[str] | None = None) -> Settings:
    """Load a YAML profile, apply ``dotted.key=value`` overrides and validate.

    ``path=None`` gives the defaults. Override values are parsed as YAML, so ``3``, ``true``
    and ``[7, 14]`` arrive as a number, a boolean and a list.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of keys, not {type(loaded).__name__}")
        raw = loaded
    for override in overrides or []:
        _apply_override(raw, override)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected dotted.key=value")
    parts = key.strip().split(".")
    # Spark property names contain dots themselves: everything after "spark.conf." is one key.
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        parts = parts[:2] + [".".join(parts[2:])]
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(value)


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)
