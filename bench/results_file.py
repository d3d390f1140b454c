"""Where every benchmark appends its figures: one JSON line per run in bench/results/<name>.jsonl."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parent.parent
# A smoke run of a bench (the test suite's) sends its figures elsewhere, never into bench/results/.
RESULTS_DIR = Path(os.environ.get("INTEREST_DECAY_BENCH_RESULTS") or REPO / "bench" / "results")


def code_version() -> str:
    """The commit the bench ran, with "+changes" when the code differed from it (the results
    files themselves left out); "" outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return (
        f"{commit}+changes"
        if commit and git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results")
        else commit
    )


def command_line() -> str:
    """The command that produced a result, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if REPO in script.parents else script
    return shlex.join([".venv/bin/python", str(shown), *sys.argv[1:]])


def record(name: str, result: dict) -> None:
    """Append ``result`` to bench/results/<name>.jsonl (or $INTEREST_DECAY_BENCH_RESULTS/<name>.jsonl)
    with the code version it ran, the UTC date and the command, and print it."""
    result = {**result, "code": code_version(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": command_line()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f"{name}.jsonl").open("a") as out:
        out.write(json.dumps(result) + "\n")
    typer.echo(json.dumps(result, indent=2))
