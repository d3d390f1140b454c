"""The names every layer agrees on, and nothing else: no Spark, no TensorFlow, no IO.

``features/`` (Spark transformations), ``model/`` (numpy and TensorFlow) and ``jobs/`` (the
stages) all read these; this package reads none of them. Change a name here and every layer
sees the change; add a feature here and the view, the model's input spec and the scorer's
refusal of a mismatched model follow.
"""

from __future__ import annotations

from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Raw events, after ingest: the canonical columns and the event types they may carry.
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
CANONICAL_COLUMNS = ("event_id", "user_id", "event_time", "event_type", "product_id", "category", "price")
# Without these an event means nothing; every other canonical column may be absent from a source.
REQUIRED_EVENT_COLUMNS = ("user_id", "event_time", "event_type")

# The sequences view: per window, in the order of the view's ``x``.
WINDOW_FEATURES = (
    "sessions",
    "active_days",
    "views",
    "carts",
    "purchases",
    "revenue",
    "cart_to_purchase_rate",
    "mean_session_minutes",
    "category_entropy",
    "top_category_share",
    "days_since_last_event",
    "tenure_days",
)
# Per user at the as-of date, in the order of the view's ``static``: each one's name, and the
# ``user_windows`` column of the as-of date's window it is read from.
STATIC_FEATURE_COLUMNS = {
    "tenure_days": "tenure_days",
    "recency_days": "days_since_last_event",
    "total_sessions": "total_sessions",
    "total_purchases": "total_purchases",
    "total_revenue": "total_revenue",
}
STATIC_FEATURES = tuple(STATIC_FEATURE_COLUMNS)

# A saved model's metadata file, next to its SavedModel.
METADATA_FILE = "interest_decay.json"
# The folder of generated raw event files under generator.output (what ingest reads with the generator preset).
GENERATED_EVENTS_FOLDER = "events"


class Table(StrEnum):
    """The lakehouse's Delta tables, each at ``<lakehouse>/<name>``; the stage that writes it in brackets."""

    EVENTS = "events"  # ingest
    QUARANTINE = "events_quarantine"  # ingest
    SESSIONS = "sessions"  # sessionize
    USER_WINDOWS = "user_windows"  # features
    SEQUENCES = "sequences"  # features: the model's view
    CATEGORY_INTEREST = "category_interest"  # features
    SCORES = "scores"  # score
    SCORES_LIVE = "scores_live"  # stream: one current row per user
    EVALUATIONS = "evaluations"  # evaluate
    TRUTH = "truth"  # generate: the generator's true parameters
    RUNS = "_runs"  # every stage: one row per run


class Artifact(StrEnum):
    """Folders of the lakehouse that hold files other than Delta tables."""

    MODELS = "_models"  # one SavedModel per training run, <lakehouse>/_models/<mlflow run id>
    CHECKPOINTS = "_checkpoints"  # per-epoch training state, keyed by the training settings
    TENSORBOARD = "_tensorboard"  # TensorBoard logs per training run
    REPORTS = "_reports"  # one HTML evaluation report per evaluate run
    PETASTORM = "_petastorm"  # petastorm's materialised training rows (removed after training)
    MLFLOW = "_mlflow"  # MLflow's file store, when no tracking server is named
    STREAMS = "_streams"  # the streaming job's checkpoints, one folder per source


def view_spec(n_windows: int, window_days: int, horizons_days: list[int]) -> dict:
    """What the ``sequences`` view holds: saved with a trained model, checked before scoring."""
    return {
        "window_features": list(WINDOW_FEATURES),
        "static_features": list(STATIC_FEATURES),
        "n_windows": n_windows,
        "window_days": window_days,
        "horizons_days": list(horizons_days),
    }


class SourceMapping(BaseModel):
    """How one raw source maps onto the canonical event columns."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # canonical name -> source column; "a|b" takes a, or b where a is empty. user_id and
    # event_time are required.
    columns: dict[str, str]
    # source event type (lower-cased) -> canonical type; identity for types not listed.
    event_types: dict[str, str] = Field(default_factory=dict)
    # For sources whose every row is one kind of event (CDNOW: purchases).
    constant_event_type: str | None = None
    # Tried in order after ISO-8601; also "epoch_seconds" and "epoch_millis".
    timestamp_formats: list[str] = Field(default_factory=list)
    # "," or another single character, or "whitespace" for fixed-width-ish text (CDNOW_master.txt).
    delimiter: str = ","
    header: bool = True
    # The zone of timestamps written without one (an IANA name): they mean that wall-clock time
    # there, whatever the zone of the machine or the Spark session that reads them.
    time_zone: str = "UTC"

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(f"unknown canonical column(s) {unknown}; expected some of {list(CANONICAL_COLUMNS)}")
        missing = sorted({"user_id", "event_time"} - set(columns))
        if missing:
            raise ValueError(f"the mapping must name a source column for {missing}")
        return columns

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}: use an IANA name such as UTC or Europe/Berlin") from None
        return zone

    @field_validator("event_types")
    @classmethod
    def _known_targets(cls, event_types: dict[str, str]) -> dict[str, str]:
        bad = sorted(v for v in event_types.values() if v not in EVENT_TYPES)
        if bad:
            raise ValueError(f"event types {bad} are not among {list(EVENT_TYPES)}")
        return {k.lower(): v for k, v in event_types.items()}
