"""The zoo's layering (docs/design.md, "Layout"): which packages a package may import.

Every module is parsed with ``ast``, not imported, so an import inside a function counts as much
as one at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("models", "guides", "flows", "datasets", "metrics", "training", "evaluation", "run", "bench", "tests")

# package -> the project's packages it may import (itself always)
ALLOWED = {
    "metrics": set(),            # any Pyro model and guide pair: none of the zoo's models, data or training
    "datasets": set(),
    "flows": set(),
    "models": set(),             # a model never imports a guide
    "guides": {"models", "flows"},
}


def imports_in(source: str, package: str) -> set[str]:
    """The top-level project packages that ``source``, a module of ``package``, imports anywhere in it
    (absolute, dotted or relative imports, at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found & set(PROJECT)


def imported_packages(path: Path) -> set[str]:
    return imports_in(path.read_text(), path.relative_to(ROOT).parts[0])


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    assert modules(package), f"no modules found under {package}/"
    wrong = {str(p.relative_to(ROOT)): sorted(imported_packages(p) - ALLOWED[package] - {package})
             for p in modules(package)}
    assert not {k: v for k, v in wrong.items() if v}, f"{package}/ imports what it may not (docs/design.md, Layout)"


def test_metrics_imports_no_zoo_package():
    """The library for any Pyro model and guide pair imports none of the zoo's models, guides, data,
    training or evaluation (the correctness classifiers live in ``evaluation/correctness.py``)."""
    for path in modules("metrics"):
        banned = imported_packages(path) & {"models", "guides", "datasets", "training", "evaluation"}
        assert not banned, f"{path.relative_to(ROOT)} imports {sorted(banned)}"


def test_plots_are_a_leaf():
    """``training/samples.py`` draws its grids with ``evaluation.plots``, so that module imports
    nothing of the project (no import cycle between training/ and evaluation/)."""
    assert imported_packages(ROOT / "evaluation" / "plots.py") == set()


def test_nothing_imports_the_entry_points():
    for package in ("models", "guides", "flows", "datasets", "metrics", "training", "evaluation"):
        for path in modules(package):
            assert not imported_packages(path) & {"run", "bench", "tests"}, path.relative_to(ROOT)


def test_the_checker_sees_imports():
    source = ("import os\nimport models.vlvae\nfrom . import iwae\nfrom torch import nn\n"
              "def f():\n    from training.config import preset\n    import datasets as d\n")
    assert imports_in(source, "metrics") == {"models", "metrics", "training", "datasets"}
