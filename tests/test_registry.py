"""One registry: every dataset trains the VLVAE through the same path as run/svi.py."""
import json

import numpy as np
import pytest
import torch

from mmvae_zoo.datasets import celeba, mnist
from mmvae_zoo.datasets.registry import describe, make_dataset
from mmvae_zoo.training.config import RunConfig, preset
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.trainer import train
from tests.test_celeba import make_celeba
from tests.test_mnist import write_idx


def _mnist_root(root, monkeypatch):
    monkeypatch.setattr(mnist, "VAL_SIZE", 4)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 24), ("t10k", 10)):
        write_idx(raw / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{part}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def _celeba_root(root, monkeypatch):
    monkeypatch.setattr(celeba, "PAPER_TRAIN_SIZE", 9)
    make_celeba(root / "celeba")


@pytest.mark.parametrize("name, shape, vocab_size, length", [
    ("two_objects", (3, 32, 32), 19, 9),
    ("single_object", (3, 32, 32), 4, 2),
    ("celeba", (3, 64, 64), 20, 9),
    ("mnist", (1, 28, 28), 10, 1),
])
def test_every_dataset_trains_the_vlvae(tmp_path, monkeypatch, name, shape, vocab_size, length):
    if name == "mnist":
        _mnist_root(tmp_path, monkeypatch)
    if name == "celeba":
        _celeba_root(tmp_path, monkeypatch)
    config = preset("tiny", name)
    config.data.root = str(tmp_path)
    config.train.batch_size = 4
    vocab, text_length, image_shape = describe(config.data)
    assert (image_shape, len(vocab.to_list()), text_length) == (shape, vocab_size, length)
    item = make_dataset(config.data, "train", progress=False)[0]
    assert item[0].shape == shape and item[0].dtype == torch.float32 and item[1].shape == (length,)
    run = RunDir(tmp_path / "run")
    train(config, run, device=torch.device("cpu"), progress=False)
    assert np.isfinite(run.metrics()[-1]["loss"])


def test_fixed_size_datasets_refuse_other_sizes():
    config = preset("tiny", "mnist")
    config.data.image_size = 32
    with pytest.raises(ValueError, match="dataset mnist has 28x28 images; use --image-size 28"):
        describe(config.data)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        preset("tiny", "cifar")


@pytest.mark.parametrize("model", ["vlvae", "jmvae"])
@pytest.mark.parametrize("dataset", ["mnist", "celeba"])
def test_datasets_read_from_files_record_no_image_counts(model, dataset):
    """Their splits are the files' own: a config records no number of images to render, and one saved
    with Two Objects' counts (before 2026-12-07) loads without them, so resuming it changes nothing."""
    config = preset("cpu", dataset, model)
    assert config.data.num_train is None and config.data.num_val is None
    old = json.loads(config.to_json())
    old["data"].update(num_train=90_000, num_val=10_000)
    assert RunConfig.from_json(json.dumps(old)) == config
