"""The zoo's layering (docs/design.md, "Layout"): which packages a package may import.

Every module is parsed with ``ast``, not imported, so an import inside a function counts as much
as one at the top. The zoo's packages are imported as ``mmvae_zoo.<package>`` only (docs/design.md,
"Layout"): a bare ``import datasets`` would find another library's package of that name, and mixing
the two spellings would load each module twice (two copies of every class).
"""
from __future__ import annotations

import ast
import json
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


ZOO = ("models", "guides", "flows", "datasets", "metrics", "training", "evaluation", "run")  # mmvae_zoo.<package>


def _package_of(module: str, names=()) -> set[str]:
    """The project package that an absolute import of ``module`` (``from module import names``) reaches:
    ``mmvae_zoo.models.vlvae`` -> models; ``from mmvae_zoo import models`` -> models; ``tests.helpers`` -> tests."""
    parts = module.split(".")
    if parts[0] != "mmvae_zoo":
        return {parts[0]}
    return {parts[1]} if len(parts) > 1 else set(names)


def imports_in(source: str, package: str) -> set[str]:
    """The project packages that ``source``, a module of ``package``, imports anywhere in it
    (absolute, dotted or relative imports, at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _package_of(alias.name)
        elif isinstance(node, ast.ImportFrom):
            found |= {package} if node.level else _package_of(node.module or "", [a.name for a in node.names])
    return found & set(PROJECT)


def bare_imports_in(source: str) -> list[str]:
    """The absolute imports in ``source`` that name one of the zoo's packages without ``mmvae_zoo.``
    (``import datasets``, ``from models.vlvae import VLVAE``, ``from run import svi``), anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in ZOO]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in ZOO:
            found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def python_sources() -> dict[str, str]:
    """Every Python file of the repository (not a virtual environment, build or cache folder) and the
    code cells of the notebooks (IPython lines, % and !, left out), by path."""
    skip = {".venv", "venv", "build", "dist", "__pycache__", ".git"}
    sources = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if not skip & set(rel.parts[:-1]) and not any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts):
            sources[str(rel)] = path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                sources[f"{path.relative_to(ROOT)} cell {i}"] = "\n".join(
                    "" if line.lstrip().startswith(("%", "!")) else line for line in lines)
    return sources


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
    source = ("import os\nimport mmvae_zoo.models.vlvae\nfrom . import iwae\nfrom torch import nn\n"
              "def f():\n    from mmvae_zoo.training.config import preset\n    from mmvae_zoo import datasets as d\n"
              "    import tests.helpers\n")
    assert imports_in(source, "metrics") == {"models", "metrics", "training", "datasets", "tests"}


def test_no_bare_import_of_the_zoo_anywhere():
    """Every Python file and notebook imports the zoo's packages as ``mmvae_zoo.<package>``: a bare
    ``datasets`` may be another library's, and a module imported under both names is two modules."""
    sources = python_sources()
    assert len(sources) > 80 and "run/svi.py" in sources and "tests/helpers.py" in sources
    bare = {name: found for name, source in sources.items() if (found := bare_imports_in(source))}
    assert not bare, f"import these as mmvae_zoo.<package>: {bare}"


def test_the_bare_import_checker_sees_them():
    source = ("import os, datasets\nimport mmvae_zoo.models\nfrom . import iwae\nfrom tests.helpers import batch\n"
              "def f():\n    from training.config import preset\n    import models.vlvae as v\n"
              "    from run import svi\n    from mmvae_zoo.run import figures\n")
    assert sorted(line.split(":")[0] for line in bare_imports_in(source)) == ["line 1", "line 6", "line 7", "line 8"]
