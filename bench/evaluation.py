"""Evaluation runs: the model against its baselines on one shop, trained once per seed, one JSON
line per run in bench/results/evaluation.jsonl (what docs/results/ is generated from).

    .venv/bin/python bench/evaluation.py --shop cdnow --seeds 3
    .venv/bin/python bench/evaluation.py --shop demo --seeds 3
    .venv/bin/python bench/evaluation.py --shop identifiable --seeds 3
    .venv/bin/python bench/evaluation.py --shop cdnow --seeds 3 --label no-vae --set train.use_vae=false --reuse

The shop's data are prepared once per invocation (generate or the real log, ingest, sessionize,
features) in ``--root/<shop>``; ``--reuse`` starts from what an earlier invocation left there.
Each seed then trains from scratch (``train.seed``) and evaluates out of time with the shop's
profile; the evaluation's own sampling and bootstrap seeds stay fixed, so the seeds differ only
in the model. Runs of one invocation share a ``batch``; a ``label`` names a variant (an
ablation) so its runs are shown beside the default's, never mixed with them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pyspark.sql import functions as F
from results_file import record

from interest_decay import pipeline
from interest_decay.contract import Table
from interest_decay.jobs.common.config import Settings, load_settings
from interest_decay.jobs.common.spark import spark_session
from interest_decay.jobs.common.tables import table_exists

REPO = Path(__file__).resolve().parent.parent
# shop -> (profile, the stages that prepare its data, overrides of the profile)
SHOPS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "demo": ("conf/local.yaml", ("generate", "ingest", "sessionize", "features"), ("generator.users=20000",)),
    "identifiable": ("conf/identifiable.yaml", ("generate", "ingest", "sessionize", "features"), ()),
    "cdnow": ("conf/cdnow.yaml", ("ingest", "sessionize", "features"), ()),
}
# The comparison table's columns kept in the result file.
COMPARISON = [
    "method",
    "horizon_days",
    "status",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
    "lift_top_10",
    "predicted_returners",
    "actual_returners",
    "model_auc_gain",
    "model_auc_gain_low",
    "model_auc_gain_high",
]


def cdnow_log() -> str:
    """CDNOW_master.txt as the lifetimes wheel ships it (never copied into the repository)."""
    import lifetimes.datasets

    return str(Path(lifetimes.datasets.__file__).parent / "CDNOW_master.txt")


def shop_settings(shop: str, root: Path, overrides: list[str]) -> Settings:
    """The shop's profile with its lakehouse, raw files and caches under ``root``."""
    profile, _, shop_overrides = SHOPS[shop]
    where = root.resolve() / shop
    return load_settings(
        REPO / profile,
        [
            f"lakehouse={where / 'lake'}",
            f"generator.output={where / 'raw'}",
            f"storage.cache_dir={where / 'cache'}",
            *shop_overrides,
            *overrides,
        ],
    )


def prepare(spark, settings: Settings, shop: str) -> None:  # noqa: ANN001
    """The shop's data, from raw events to the ``sequences`` view."""
    options = {
        "ingest": {"input_path": cdnow_log(), "preset": "cdnow"} if shop == "cdnow" else {"input_path": settings.generator.events_path}
    }
    for name in SHOPS[shop][1]:
        pipeline.stage(name).run(spark, settings, **options.get(name, {}))


def comparison_rows(spark, settings: Settings, run_id: str) -> list[dict]:  # noqa: ANN001
    """The out-of-time rows the evaluation run ``run_id`` wrote to ``evaluations``."""
    rows = spark.read.format("delta").load(settings.table_path(Table.EVALUATIONS))
    mine = rows.where((F.col("evaluation_run_id") == run_id) & (F.col("fold") == "out_of_time")).toPandas()
    present = [c for c in COMPARISON if c in mine.columns]
    frame = mine[present].astype({"horizon_days": int})
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in frame.to_dict("records")]


def main(
    shop: Annotated[str, typer.Option(help=f"One of {', '.join(SHOPS)}.")],
    seeds: Annotated[int, typer.Option(help="How many training seeds, one run each: 0, 1, ... seeds - 1.")] = 3,
    label: Annotated[str, typer.Option(help="Names a variant (e.g. no-vae) shown beside the default runs.")] = "default",
    overrides: Annotated[list[str], typer.Option("--set", help="KEY=VALUE over the shop's profile, as the CLI's --set.")] = [],  # noqa: B006
    root: Annotated[Path, typer.Option(help="Where each shop's lakehouse and raw files live.")] = REPO / "bench-lakes",
    reuse: Annotated[bool, typer.Option(help="Start from the sequences an earlier run left under --root.")] = False,
) -> None:
    """Train and evaluate the model on one shop for every seed; record each run."""
    if shop not in SHOPS:
        raise typer.BadParameter(f"{shop!r} is not a shop; one of {', '.join(SHOPS)}", param_hint="--shop")
    logging.basicConfig(level=logging.WARNING)
    batch = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
    settings = shop_settings(shop, root, list(overrides))
    with spark_session(settings.spark) as spark:
        if not (reuse and table_exists(spark, settings.table_path(Table.SEQUENCES))):
            prepare(spark, settings, shop)
        for seed in range(seeds):
            seeded = shop_settings(shop, root, [*overrides, f"train.seed={seed}"])
            trained = pipeline.stage("train").run(spark, seeded, fresh=True)
            evaluated = pipeline.stage("evaluate").run(spark, seeded, model=trained.outputs["model"])
            record(
                "evaluation",
                {
                    "bench": "evaluation",
                    "shop": shop,
                    "label": label,
                    "batch": batch,
                    "seed": seed,
                    "overrides": list(overrides),
                    "train_seconds": trained.seconds,
                    "train_metrics": trained.metrics,
                    "evaluate_seconds": evaluated.seconds,
                    "evaluate_inputs": evaluated.inputs,
                    "metrics": evaluated.metrics,
                    "counts": evaluated.counts,
                    "comparison": comparison_rows(spark, seeded, evaluated.run_id),
                    "cores": os.cpu_count(),
                    "host": platform.node(),
                },
            )


if __name__ == "__main__":
    typer.run(main)
