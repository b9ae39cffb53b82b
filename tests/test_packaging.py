"""The zoo coexists with another library's top-level ``datasets`` or ``models`` (docs/design.md, "Layout").

How it is built: a decoy distribution, ``decoy-hub``, whose top-level packages are ``datasets`` and
``models`` (no ``datasets.loader``, so a bare ``import datasets.loader`` fails), is written to a temporary
folder, which is put FIRST on ``PYTHONPATH``. Then

(a) from a checkout, without installing (the checkout after the decoy on the path): ``python run/svi.py
    --help`` works and ``import mmvae_zoo.datasets.loader`` resolves to the checkout's files, while
    ``import datasets`` is the decoy (quick, not slow);
(b) a regular and (c) an editable (PEP 660) install, each into a fresh virtual environment that holds the
    decoy installed too (its ``datasets/`` in the same site-packages): ``mmvae_zoo.*.__file__`` are the
    zoo's installed (b) or checkout (c) files, the five console scripts' ``--help`` work and load the zoo's
    ``run/`` modules, and ``import datasets`` is the decoy;
(d) uninstalling the zoo leaves every file of the decoy as it was, and the decoy importable.

(a) is checked again in the fresh environment before the regular install, where no zoo is installed.

The environments are made with ``python -m venv --without-pip`` plus a ``.pth`` file naming this
interpreter's site-packages (as links, less any install of the zoo), so torch, pyro, pip and setuptools
are reused, not installed; the zoo is installed from a copy of the repository with
``pip install --no-deps --no-build-isolation`` and no index (no network; the build uses this
environment's setuptools, >= 64). About a minute: marked slow.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ("models", "guides", "flows", "datasets", "metrics", "training", "evaluation", "run")
SCRIPTS = {"mmvae-svi": "svi", "mmvae-evaluate": "evaluate", "mmvae-classifier": "classifier",
           "mmvae-figures": "figures", "mmvae-show-data": "show_data"}


def make_decoy(folder: Path) -> Path:
    """A source tree of ``decoy-hub``: top-level ``datasets`` and ``models``, as Hugging Face's would be."""
    for package in ("datasets", "models"):
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text(f'WHO = "decoy {package}"\n')
    (folder / "datasets" / "arrow.py").write_text("ARROW = True\n")
    (folder / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=64"]\n'
                                           'build-backend = "setuptools.build_meta"\n')
    (folder / "setup.cfg").write_text("[metadata]\nname = decoy-hub\nversion = 1.0\n\n"
                                      "[options]\npackages = datasets, models\n")
    return folder


def env_with(decoy: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    return {**env, "PYTHONPATH": str(decoy), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1",
            "PIP_NO_CACHE_DIR": "1", "MMVAE_DATA_ROOT": str(decoy.parent / "data")}


def run(command, cwd, env, timeout=300) -> str:
    out = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{command}: {out.stdout}\n{out.stderr}"
    return out.stdout


# prints, one a line: where datasets (the decoy) and each mmvae_zoo package come from
WHERE = ("import datasets, importlib; print(datasets.WHO); print(datasets.__file__); "
         + "; ".join(f"print(importlib.import_module('mmvae_zoo.{p}').__file__)" for p in ZOO)
         + "; import mmvae_zoo.datasets.loader as l; print(l.__file__)")


def test_from_a_checkout_the_zoo_beats_a_decoy_first_on_the_path(tmp_path):
    """(a): no install; the decoy first on PYTHONPATH; run/svi.py and mmvae_zoo.* are the checkout's."""
    decoy = make_decoy(tmp_path / "decoy")
    env = env_with(decoy)
    # the checkout after the decoy on the path: where the old layout's ``import datasets.loader`` failed
    out = run([sys.executable, "-c", WHERE], tmp_path, {**env, "PYTHONPATH": os.pathsep.join([str(decoy), str(ROOT)])})
    lines = out.splitlines()
    assert lines[0] == "decoy datasets" and Path(lines[1]) == decoy / "datasets" / "__init__.py"
    assert [Path(f) for f in lines[2:]] == [ROOT / p / "__init__.py" for p in ZOO] + [ROOT / "datasets" / "loader.py"]
    help_text = run([sys.executable, ROOT / "run" / "svi.py", "--help"], tmp_path, env)
    assert help_text.startswith("usage: svi.py") and "--guide" in help_text
    bare = subprocess.run([sys.executable, "-c", "import datasets.loader"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'datasets.loader'" in bare.stderr  # the decoy's, not ours


def fresh_venv(path: Path, env: dict) -> Path:
    """A venv without pip whose .pth reaches this interpreter's site-packages (torch, pyro, pip, setuptools)."""
    run([sys.executable, "-m", "venv", "--without-pip", path], path.parent, env)
    python = path / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path.parent,
                    env).strip())
    # this interpreter's packages as links in one folder, less any install of the zoo (or a datasets/models)
    reuse = path.parent / "reused-site-packages"
    reuse.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if not ("mmvae" in name or name.startswith(("__editable__", "datasets", "models")) or name.endswith(".pth")):
            (reuse / entry.name).symlink_to(entry)
    (site / "zz_reuse_parent.pth").write_text(f"{reuse}\n")
    return python


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def copy_of_the_repository(to: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "runs",
                                    "results", "data", ".pytest_cache")
    shutil.copytree(ROOT, to, ignore=ignore)
    return to


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_an_installed_zoo_coexists_with_a_decoy_datasets_and_models(editable, tmp_path):
    """(b) regular or (c) editable install next to the installed decoy; (d) uninstalling the zoo."""
    decoy_src = make_decoy(tmp_path / "decoy")
    env = env_with(decoy_src)
    python = fresh_venv(tmp_path / "venv", env)
    site = python.parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    run(pip + [decoy_src], tmp_path, env)
    decoy_files = {p: files_of(site / p) for p in ("datasets", "models")}
    assert "arrow.py" in decoy_files["datasets"]

    checkout = copy_of_the_repository(tmp_path / "checkout")
    if not editable:  # (a) again, where nothing of the zoo is installed at all
        lines = run([python, "-c", WHERE], tmp_path, {**env, "PYTHONPATH": f"{decoy_src}{os.pathsep}{checkout}"})
        assert lines.splitlines()[0] == "decoy datasets"
        assert [Path(f) for f in lines.splitlines()[2:]] == ([checkout / p / "__init__.py" for p in ZOO]
                                                             + [checkout / "datasets" / "loader.py"])
        assert run([python, checkout / "run" / "svi.py", "--help"], tmp_path, env).startswith("usage: svi.py")
    run(pip + (["-e", checkout] if editable else [checkout]), tmp_path, env)
    assert {p: files_of(site / p) for p in ("datasets", "models")} == decoy_files  # nothing of ours in them

    for decoy_first in (True, False):  # the decoy's source first on PYTHONPATH, then the installed decoy alone
        lines = run([python, "-c", WHERE], tmp_path, env if decoy_first else {**env, "PYTHONPATH": ""}).splitlines()
        assert lines[0] == "decoy datasets"
        assert Path(lines[1]) == (decoy_src if decoy_first else site) / "datasets" / "__init__.py"
        where = checkout if editable else site / "mmvae_zoo"
        assert [Path(f) for f in lines[2:]] == [where / p / "__init__.py" for p in ZOO] + [where / "datasets" / "loader.py"]

    for script, module in SCRIPTS.items():
        help_text = run([python.parent / script, "--help"], tmp_path, env)
        assert help_text.startswith(f"usage: {script}"), help_text[:200]
    loaded = run([python, "-c", "from importlib.metadata import entry_points; "
                  "[print(e.name, e.load().__module__, __import__(e.module, fromlist=['_']).__file__) "
                  "for e in entry_points(group='console_scripts') if e.name.startswith('mmvae-')]"],
                 tmp_path, env).splitlines()
    where = checkout / "run" if editable else site / "mmvae_zoo" / "run"
    assert sorted(loaded) == sorted(f"{s} mmvae_zoo.run.{m} {where / (m + '.py')}" for s, m in SCRIPTS.items())

    run([python, "-m", "pip", "uninstall", "-q", "-y", "mmvae-zoo"], tmp_path, env)  # (d)
    assert {p: files_of(site / p) for p in ("datasets", "models")} == decoy_files
    assert not (site / "mmvae_zoo").exists() and not list(site.glob("mmvae_zoo*")) and not list(site.glob("*mmvae*"))
    out = run([python, "-c", "import datasets, datasets.arrow, models; print(datasets.WHO, models.WHO); "
               "import importlib.util; print(importlib.util.find_spec('mmvae_zoo'))"],
              tmp_path, {**env, "PYTHONPATH": ""})
    assert out.split("\n")[:2] == ["decoy datasets decoy models", "None"]
