"""The README's scale table, from bench/results/pipeline.jsonl: for each size, the latest line of
every stage, with its cost per event and that cost's ratio to the first size's.

    .venv/bin/python bench/scale_table.py                       # every size recorded
    .venv/bin/python bench/scale_table.py --users 200000 --users 1000000
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from results_file import RESULTS_DIR


def latest_by_size(lines: list[dict], sizes: list[int] | None) -> dict[int, dict[str, dict]]:
    """{users: {stage: the last local-mode line recorded for it}} (later lines win)."""
    table: dict[int, dict[str, dict]] = {}
    for line in lines:
        if line.get("master", "local[*]").startswith("local") and (not sizes or line["users"] in sizes):
            table.setdefault(line["users"], {})[line["stage"]] = line
    return dict(sorted(table.items()))


def markdown(table: dict[int, dict[str, dict]]) -> str:
    """One row per stage and size: seconds, microseconds per event, the ratio of that cost to the
    smallest size's, peak RSS and JVM heap."""
    rows = ["| stage | users | events | seconds | µs per event | per event vs smallest | peak RSS (MiB) | peak JVM heap (MiB) |"]
    rows.append("|---|---|---|---|---|---|---|---|")
    smallest = next(iter(table.values()), {})
    # The stages in the order the bench runs them, which is the order it first recorded them.
    stages = dict.fromkeys(stage for by_stage in table.values() for stage in by_stage)
    for stage in stages:
        for users, by_stage in table.items():
            line = by_stage.get(stage)
            if line is None or not line["events"]:
                continue
            cost = 1e6 * line["seconds"] / line["events"]
            first = smallest.get(stage)
            ratio = cost / (1e6 * first["seconds"] / first["events"]) if first and first["events"] else float("nan")
            rows.append(
                f"| {stage} | {users:,} | {line['events']:,} | {line['seconds']:.1f} | {cost:.2f} | {ratio:.2f} | "
                f"{line['peak_rss_mb']:,} | {line['peak_jvm_heap_mb']:,} |"
            )
    return "\n".join(rows)


def main(users: Annotated[list[int], typer.Option(help="Sizes to show (default: every size recorded).")] = []) -> None:  # noqa: B006
    """Print the scale table."""
    lines = [json.loads(text) for text in (RESULTS_DIR / "pipeline.jsonl").read_text().splitlines() if text.strip()]
    typer.echo(markdown(latest_by_size(lines, users)))


if __name__ == "__main__":
    typer.run(main)
