"""Shared test fixtures: a private data root per test session, CUDA skipping, a fake MNIST file."""
import dataclasses
import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (pytest -n, as setup.cfg runs the suite) share the cores: one thread each, for the CLI
    # processes the tests start too. Busy-waiting OpenMP threads of several workers slow every one of them.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_data_root(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's dataset cache."""
    monkeypatch.setenv("MMVAE_DATA_ROOT", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Eight rendered 32x32 Two Objects scenes: (dataset, images float [8, 3, 32, 32], tokens [8, 9])."""
    from mmvae_zoo.datasets.two_objects import TwoObjects

    data = TwoObjects(tmp_path_factory.mktemp("scenes"), "train", image_size=32, num_train=8, num_val=1,
                      progress=False, workers=1)
    return data, torch.from_numpy(np.array(data.images)).float() / 255, torch.from_numpy(np.array(data.tokens))


@pytest.fixture(scope="session")
def tiny_scenes(scenes):
    """The eight scenes' (images, tokens)."""
    return scenes[1:]


@pytest.fixture(scope="session")
def tiny_base_run(tmp_path_factory):
    """A trained (4 steps) tiny VLVAE base run directory."""
    from mmvae_zoo.training.config import preset
    from mmvae_zoo.training.rundir import RunDir
    from mmvae_zoo.training.trainer import train

    root = tmp_path_factory.mktemp("runs")
    config = preset("tiny")
    config.data.root = str(root / "data")
    run = RunDir(root / "base")
    train(config, run, device=torch.device("cpu"), progress=False)
    return run


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """A tiny mnist.pkl.gz (20 train / 6 val / 8 test images) accepted as the real one."""
    from mmvae_zoo.datasets import fetch
    from tests.test_mnist import fake_split

    root = tmp_path_factory.mktemp("mnist_root")
    path = fetch.SOURCES["mnist"].path(root)
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(fake_split(n, seed) for seed, n in enumerate((20, 6, 8))), f)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(fetch.SOURCES, "mnist", dataclasses.replace(fetch.SOURCES["mnist"], sha256=digest))
        yield root
