"""What can be checked here of the cluster and Databricks deployment: the wheel, the bundle's job
against the bundle schema, and every task's entry point parsing its parameters."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
import yaml
from databricks.bundles.jobs import Job

from interest_decay import pipeline
from interest_decay.cli import app
from interest_decay.jobs.common.config import load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the wheel is made of: setuptools leaves a build/ folder beside the
    # source, and a stale one would carry modules that no longer exist into later wheels.
    source = tmp_path_factory.mktemp("source")
    for part in ("interest_decay", "contract", "features", "model", "jobs"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, source / file)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source)], check=True
    )
    return next(out.glob("interest_decay-*.whl"))


def test_the_wheel_installs_one_namespace_and_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    # Nothing generic at the top level: every module is under interest_decay/.
    assert {n.split("/")[0] for n in names} == {"interest_decay", wheel.name.removesuffix("-py3-none-any.whl") + ".dist-info"}
    stages = {f"interest_decay/jobs/{stage.module}.py" for stage in pipeline.STAGES}
    shared = {"interest_decay/jobs/common/storage.py", "interest_decay/jobs/common/log4j2-quiet.properties"}
    assert stages | shared | {"interest_decay/contract/__init__.py", "interest_decay/features/windows.py", "interest_decay/cli.py"} <= names
    assert "interest-decay = interest_decay.cli:main" in entry_points
    # pyspark only as an extra: a Databricks runtime's own Spark must not be replaced.
    assert re.search(r"^Requires-Dist: pyspark.*extra == \"spark\"", metadata, re.M)


def test_the_wheel_imports_as_interest_decay_and_shadows_nothing(wheel: Path, tmp_path: Path) -> None:
    """Unpacked alone on sys.path (no editable install, no repository, started elsewhere), the
    wheel gives interest_decay and every part of it, and no bare model, features, jobs or contract."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    site_packages = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "pyspark").is_dir())
    probe = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(target)!r}, {str(site_packages)!r}]\n"
        "import interest_decay.cli, interest_decay.jobs.features, interest_decay.jobs.common.views, interest_decay.model.scoring\n"
        "print(interest_decay.cli.__file__)\n"
        "for bare in ('model', 'features', 'jobs', 'contract'):\n"
        "    try:\n"
        "        importlib.import_module(bare)\n"
        "        print('found', bare)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
    )
    # -S: no site-packages processing, so the venv's editable install of this checkout is not seen.
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [str(target / "interest_decay" / "cli.py")]


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
    assert sorted(bundle["resources"]["jobs"]) == ["interest_decay", "interest_decay_stream"]
    job = Job.from_dict(bundle["resources"]["jobs"]["interest_decay"])  # databricks-bundles' typed model: unknown or misspelt keys raise
    tasks = {t.task_key: t for t in job.tasks}
    # The bundle's tasks are the pipeline's production stages, in its order, each after the one
    # before and on the cluster the pipeline names.
    assert list(tasks) == [stage.name for stage in pipeline.PRODUCTION]
    for before, after in zip(pipeline.PRODUCTION, pipeline.PRODUCTION[1:], strict=False):
        assert [d.task_key for d in tasks[after.name].depends_on] == [before.name]
    assert {name: task.job_cluster_key for name, task in tasks.items()} == {stage.name: stage.cluster for stage in pipeline.PRODUCTION}
    clusters = {c.job_cluster_key: c.new_cluster for c in job.job_clusters}
    assert "gpu-ml" in clusters["gpu"].spark_version
    # Python 3.11 (what the wheel requires) and Horovod preinstalled: 15.4 LTS, no other.
    assert all(c.spark_version.startswith("15.4.") for c in clusters.values())
    assert clusters["gpu"].spark_conf["spark.task.resource.gpu.amount"] == "1"
    assert job.schedule.quartz_cron_expression and job.parameters
    # The streaming job: continuous, one task that runs the stream stage with an interval trigger.
    live = Job.from_dict(bundle["resources"]["jobs"]["interest_decay_stream"])
    assert live.continuous is not None and [t.task_key for t in live.tasks] == [pipeline.STREAM.name]
    assert (
        live.tasks[0].python_wheel_task.parameters[:1] == [pipeline.STREAM.name]
        and "--trigger" in live.tasks[0].python_wheel_task.parameters
    )


def _parameters(target: str) -> list[tuple[str, list[str]]]:
    tasks = []
    for spec in _bundle(target)["resources"]["jobs"].values():
        defaults = {p["name"]: p["default"] for p in spec["parameters"]}
        for task in spec["tasks"]:
            wheel_task = task["python_wheel_task"]
            params = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m, d=defaults: d[m.group(1)], p) for p in wheel_task["parameters"]]
            tasks.append((wheel_task["entry_point"], params))
    return tasks


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_task_entry_point_parses_its_parameters(target: str) -> None:
    pyproject = (REPO / "pyproject.toml").read_text()  # the console scripts the wheel declares
    scripts = dict(re.findall(r'^(\S+) = "([\w.:]+)"$', pyproject.split("[project.scripts]")[1], re.M))
    cli = typer.main.get_command(app)
    for entry_point, params in _parameters(target):
        assert scripts.get(entry_point) == "interest_decay.cli:main"
        group_ctx = cli.make_context(entry_point, list(params))
        stage = cli.get_command(group_ctx, params[0])
        assert stage is not None, f"no stage {params[0]}"
        ctx = stage.make_context(params[0], params[1:], parent=group_ctx)  # raises on an unknown or malformed option
        # The profile the job points at is conf/databricks.yaml, and it loads with the task's overrides.
        assert Path(ctx.params["conf"]).name == "databricks.yaml"
        settings = load_settings(REPO / "conf" / "databricks.yaml", ctx.params["set_"])
        assert settings.lakehouse.startswith("/Volumes/") and settings.spark.delta_jars == "provided"
