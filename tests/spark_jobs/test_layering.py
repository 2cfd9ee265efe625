"""The layers are peers: data flows between them only through tables, so no layer's code imports
another layer's. What they share (contracts, metrics, errors) lives in modules of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from spark_jobs.target import LAYERS

PACKAGE = Path(__file__).resolve().parents[2] / "spark_jobs"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside a function (``from a import b`` gives
    ``a`` and ``a.b``: ``b`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_import_parser_sees_imports_inside_functions_too():
    assert "spark_jobs.metrics" in imported_modules(PACKAGE / "gold" / "job.py")
    assert "spark_jobs.silver.job" in imported_modules(PACKAGE / "pipeline.py")  # imported inside _silver


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_another_layer(layer):
    others = [other for other in LAYERS if other != layer]
    modules = sorted((PACKAGE / layer).glob("*.py"))
    assert PACKAGE / layer / "job.py" in modules
    offending = {
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules
        for name in imported_modules(path)
        for other in others
        if name == f"spark_jobs.{other}" or name.startswith(f"spark_jobs.{other}.")
    }
    assert not offending, sorted(offending)
