"""What can be checked here of the cluster and Databricks deployment: the wheel, the bundle's job
against the bundle schema, and every task's entry point parsing its parameters."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
import yaml
from databricks.bundles.jobs import Job

from jobs.cli import STAGE_MODULES, app
from jobs.config import load_settings

REPO = Path(__file__).resolve().parent.parent
STAGES = ["ingest", "sessionize", "features", "train", "score", "evaluate"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(REPO)], check=True
    )
    return next(out.glob("interest_decay-*.whl"))


def test_the_wheel_holds_every_package_and_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    modules = {f"jobs/{STAGE_MODULES.get(s, s)}.py" for s in STAGES}
    assert modules | {"contract/__init__.py", "jobs/storage.py", "features/windows.py", "model/baselines.py"} <= names
    assert "interest-decay = jobs.cli:main" in entry_points
    # pyspark only as an extra: a Databricks runtime's own Spark must not be replaced.
    assert re.search(r"^Requires-Dist: pyspark.*extra == \"spark\"", metadata, re.M)


def _bundle(target: str) -> dict:
    """databricks.yml with its included resources and the target's variables filled in."""
    bundle = yaml.safe_load((REPO / "databricks.yml").read_text())
    for pattern in bundle["include"]:
        for path in sorted(REPO.glob(pattern)):
            for kind, resources in yaml.safe_load(path.read_text())["resources"].items():
                bundle.setdefault("resources", {}).setdefault(kind, {}).update(resources)
    variables = {k: v["default"] for k, v in bundle["variables"].items()} | bundle["targets"][target].get("variables", {})
    text = yaml.safe_dump(bundle["resources"])
    missing = set(re.findall(r"\$\{var\.(\w+)\}", text)) - set(variables)
    assert not missing, f"undefined bundle variables: {missing}"
    for name, value in variables.items():
        text = text.replace(f"${{var.{name}}}", str(value))
    return {**bundle, "resources": yaml.safe_load(text)}


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_the_bundle_job_validates_against_the_bundle_schema(target: str) -> None:
    bundle = _bundle(target)
    assert bundle["targets"]["dev"]["mode"] == "development" and bundle["targets"]["prod"]["mode"] == "production"
    ((name, spec),) = bundle["resources"]["jobs"].items()
    job = Job.from_dict(spec)  # databricks-bundles' typed model: unknown or misspelt keys raise
    tasks = {t.task_key: t for t in job.tasks}
    assert list(tasks) == STAGES
    for before, after in zip(STAGES, STAGES[1:], strict=False):
        assert [d.task_key for d in tasks[after].depends_on] == [before]
    clusters = {c.job_cluster_key: c.new_cluster for c in job.job_clusters}
    assert tasks["train"].job_cluster_key == "gpu" and "gpu-ml" in clusters["gpu"].spark_version
    # Python 3.11 (what the wheel requires) and Horovod preinstalled: 15.4 LTS, no other.
    assert all(c.spark_version.startswith("15.4.") for c in clusters.values())
    assert clusters["gpu"].spark_conf["spark.task.resource.gpu.amount"] == "1"
    assert job.schedule.quartz_cron_expression and job.parameters


def _parameters(target: str) -> list[tuple[str, list[str]]]:
    spec = next(iter(_bundle(target)["resources"]["jobs"].values()))
    defaults = {p["name"]: p["default"] for p in spec["parameters"]}
    tasks = []
    for task in spec["tasks"]:
        wheel_task = task["python_wheel_task"]
        params = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: defaults[m.group(1)], p) for p in wheel_task["parameters"]]
        tasks.append((wheel_task["entry_point"], params))
    return tasks


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_task_entry_point_parses_its_parameters(target: str) -> None:
    pyproject = (REPO / "pyproject.toml").read_text()  # the console scripts the wheel declares
    scripts = dict(re.findall(r'^(\S+) = "([\w.:]+)"$', pyproject.split("[project.scripts]")[1], re.M))
    cli = typer.main.get_command(app)
    for entry_point, params in _parameters(target):
        assert scripts.get(entry_point) == "jobs.cli:main"
        group_ctx = cli.make_context(entry_point, list(params))
        stage = cli.get_command(group_ctx, params[0])
        assert stage is not None, f"no stage {params[0]}"
        ctx = stage.make_context(params[0], params[1:], parent=group_ctx)  # raises on an unknown or malformed option
        # The profile the job points at is conf/databricks.yaml, and it loads with the task's overrides.
        assert Path(ctx.params["conf"]).name == "databricks.yaml"
        settings = load_settings(REPO / "conf" / "databricks.yaml", ctx.params["set_"])
        assert settings.lakehouse.startswith("/Volumes/") and settings.spark.delta_jars == "provided"
