"""The layers import one way, read from the source (ast), so it needs no Spark and fails on the
line that breaks a rule:

    contract  <-  features, model  <-  jobs.common  <-  jobs (the stages)  <-  pipeline, cli

Every import counts: at module level, inside a function (lazy, for start-up time) and under
``if TYPE_CHECKING:`` (a type hint is a dependency too). The one exception is a stage's
``if __name__ == "__main__":`` block, the spark-submit entry point, which the module itself
never runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "interest_decay"
# The folder of each part of the namespace (see pyproject.toml's package-dir).
FOLDERS = {"contract": "contract", "features": "features", "model": "model", "jobs": "jobs", "": "interest_decay"}
# What each layer may import from the project, besides itself.
ALLOWED = {
    "contract": set(),
    "features": {"contract"},
    "model": {"contract"},
    "jobs.common": {"contract", "features", "model"},
    "jobs": {"contract", "features", "model", "jobs.common"},
    "top": {"contract", "features", "model", "jobs.common", "jobs"},
}
# Third-party packages a layer must not touch: contract is names only, model never sees Spark.
FORBIDDEN_LIBRARIES = {"contract": {"pyspark", "tensorflow", "delta"}, "features": {"tensorflow"}, "model": {"pyspark", "delta"}}
# A stage may import another stage only here: evaluate retrains the model at each rolling origin.
STAGE_TO_STAGE = {("interest_decay.jobs.evaluate", "interest_decay.jobs.train")}


def _is_main_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path``, lazy and type-only ones included,
    leaving out the ``if __name__ == "__main__":`` block."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in tree.body:
        if _is_main_block(node):
            skipped.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from interest_decay.jobs import train` imports the module interest_decay.jobs.train.
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def project_modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the installed namespace."""
    modules = {}
    for part, folder in FOLDERS.items():
        root = REPO / folder
        paths = sorted(root.glob("*.py")) if part == "" else sorted(root.rglob("*.py"))
        for path in paths:
            inner = path.relative_to(root).with_suffix("").parts
            name = ".".join(p for p in (PACKAGE, part, *inner) if p)
            modules[name.removesuffix(".__init__")] = path
    return modules


def layer_of(module: str) -> str:
    """The layer a module of the namespace belongs to."""
    inner = module.removeprefix(PACKAGE).lstrip(".")
    if inner.startswith("jobs.common") or inner == "jobs":
        return "jobs.common"
    for layer in ("contract", "features", "model", "jobs"):
        if inner == layer or inner.startswith(f"{layer}."):
            return layer
    return "top"


def resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The project module an import names (``a.b.c`` may be the name c inside module a.b)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}."""
    modules = project_modules()
    edges = {}
    for name, path in modules.items():
        targets = {resolve(t, modules) for _, t in imports(path) if t.split(".")[0] == PACKAGE}
        edges[name] = {t for t in targets if t and t != name and t != PACKAGE}
    return edges


def violations() -> list[str]:
    modules = project_modules()
    found = []
    for name, path in modules.items():
        layer = layer_of(name)
        for line, target in imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if target.split(".")[0] in FORBIDDEN_LIBRARIES.get(layer, set()):
                found.append(where)
            module = resolve(target, modules) if target.split(".")[0] == PACKAGE else None
            if module is None or module == PACKAGE:
                continue
            other = layer_of(module)
            if other != layer and other not in ALLOWED[layer]:
                found.append(f"{where} (layer {layer} may not import {other})")
            elif layer == "jobs" and other == "jobs" and (name, module) not in STAGE_TO_STAGE:
                found.append(f"{where} (a stage imports a stage)")
    return found


def test_each_layer_imports_only_the_layers_below_it() -> None:
    assert violations() == []


def test_the_namespace_has_every_folder_and_only_stages_at_the_top_of_jobs() -> None:
    modules = project_modules()
    stages = sorted(n.rsplit(".", 1)[1] for n in modules if layer_of(n) == "jobs")
    assert stages == ["evaluate", "features", "generate", "ingest", "run", "score", "sessionize", "stream", "train"]
    assert {"interest_decay.cli", "interest_decay.pipeline", "interest_decay.jobs.common.config", "interest_decay.model.network"} <= set(
        modules
    )


def test_the_check_sees_lazy_type_only_and_from_imports_but_not_the_main_block(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import interest_decay.jobs.common.config\n"
        "def f():\n    from interest_decay.jobs import train\n"
        "if __name__ == '__main__':\n    from interest_decay.cli import run_stage_script\n"
    )
    assert imports(source) == [(1, "typing.TYPE_CHECKING"), (3, "interest_decay.jobs.common.config"), (5, "interest_decay.jobs.train")]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("interest_decay.contract", "contract"),
        ("interest_decay.features.windows", "features"),
        ("interest_decay.jobs.common.views", "jobs.common"),
        ("interest_decay.jobs.score", "jobs"),
        ("interest_decay.cli", "top"),
    ],
)
def test_layer_of(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_no_import_cycles() -> None:
    """No circle among the project's modules, counting every import (lazy and type-only ones too)."""
    edges = graph()

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return [*trail, start]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    assert [cycle for name in sorted(edges) if (cycle := cycle_from(name))] == []


def _spelled_names(path: Path, names: set[str]) -> list[str]:
    """Where ``path`` spells a table or artifact folder name in a path: a string that is an
    artifact folder's name, a ``/<name>`` path part, or a literal handed to ``table_path``,
    ``uri``, ``load`` or ``save`` (docstrings are prose and left out)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("table_path", "uri", "load", "save"):
            found += [f"{path.name}:{a.lineno} {a.value!r}" for a in node.args if isinstance(a, ast.Constant) and a.value in names]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            parts = {p for p in text.split("/")[1:]} if "/" in text else set()
            if (text.startswith("_") and text in names) or (parts & names and " " not in text):
                found.append(f"{path.name}:{node.lineno} {text!r}")
    return found


def test_no_table_or_artifact_name_is_spelled_outside_the_contract() -> None:
    from interest_decay.contract import Artifact, Table

    names = {t.value for t in Table} | {a.value for a in Artifact}
    sources = [p for n, p in project_modules().items() if not n.startswith(f"{PACKAGE}.contract")] + sorted((REPO / "bench").glob("*.py"))
    assert [hit for path in sources for hit in _spelled_names(path, names)] == []


def test_the_name_check_catches_a_spelled_table(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text('settings.table_path("scores")\npath = f"{root}/_models/x"\nstorage.uri("_reports")\nkeys = {"scores": 1}\n')
    assert sorted(set(_spelled_names(source, {"scores", "_models", "_reports"}))) == [
        "bad.py:1 'scores'",
        "bad.py:2 '/_models/x'",
        "bad.py:3 '_reports'",
    ]
