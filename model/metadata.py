"""A saved model's metadata file (feature spec, shape, normalisation, calibration), read without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

from interest_decay.contract import METADATA_FILE


def read_metadata(path: str | Path) -> dict:
    """A saved model's metadata (feature spec, shape, normalisation) without loading TensorFlow."""
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an interest-decay model: {METADATA_FILE} is missing")
    return json.loads(file.read_text())


def write_metadata(path: str | Path, metadata: dict) -> Path:
    """Write ``metadata`` beside the SavedModel in ``path``; returns the file."""
    file = Path(path) / METADATA_FILE
    file.write_text(json.dumps(metadata, indent=2))
    return file
