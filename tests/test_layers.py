"""The layers import one way: contract <- features, model <- jobs. Read from the source (ast), so
it needs no Spark and fails on the line that breaks a rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("contract", "features", "model", "jobs")


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (annotations only, never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import that runs in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_lines(tree)
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if node.lineno in skipped if hasattr(node, "lineno") else True:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, id(node) in top_level))
    return found


def _modules(layer: str) -> list[Path]:
    return sorted((REPO / layer).glob("*.py"))


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _modules(layer)
        for line, name, _ in imports(path)
        if name.split(".")[0] in forbidden
    ]


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("contract", ("features", "model", "jobs", "pyspark", "tensorflow", "delta")),
        ("features", ("model", "jobs", "tensorflow")),
        ("model", ("features", "jobs", "pyspark", "delta")),
    ],
)
def test_each_layer_imports_only_the_layers_below_it(layer: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(layer, forbidden) == []


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import jobs.config\n\ndef f():\n    from pyspark.sql import functions\n"
    )
    assert imports(source) == [(1, "typing", True), (6, "pyspark.sql", False)]


def test_no_module_level_import_cycles() -> None:
    """Module-level imports between the project's modules form no cycle (a lazy import inside a
    function, kept for start-up time, is allowed)."""
    graph: dict[str, set[str]] = {}
    for layer in LAYERS:
        for path in _modules(layer):
            name = f"{layer}.{path.stem}" if path.stem != "__init__" else layer
            graph[name] = {target for _, target, top in imports(path) if top and target.split(".")[0] in LAYERS}
    graph = {name: {t if t in graph else t.rsplit(".", 1)[0] for t in targets} & set(graph) for name, targets in graph.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    assert [cycle for name in sorted(graph) if (cycle := cycle_from(name))] == []
