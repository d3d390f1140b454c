"""Where every benchmark appends its figures: one JSON line per run in bench/results/<name>.jsonl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import typer

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def code_version() -> str:
    """The commit the bench ran, with "+changes" when the code differed from it (the results
    files themselves left out); "" outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=RESULTS_DIR.parent, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return (
        f"{commit}+changes"
        if commit and git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results")
        else commit
    )


def record(name: str, result: dict) -> None:
    """Append ``result``, with the code version it ran, to bench/results/<name>.jsonl and print it."""
    result = {**result, "code": code_version()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f"{name}.jsonl").open("a") as out:
        out.write(json.dumps(result) + "\n")
    typer.echo(json.dumps(result, indent=2))
