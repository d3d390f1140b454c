"""Where every benchmark appends its figures: one JSON line per run in bench/results/<name>.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import typer

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def record(name: str, result: dict) -> None:
    """Append ``result`` to bench/results/<name>.jsonl and print it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f"{name}.jsonl").open("a") as out:
        out.write(json.dumps(result) + "\n")
    typer.echo(json.dumps(result, indent=2))
