"""One registry of the zoo's datasets, so ``run/svi.py --dataset NAME`` works with every model
that fits the data. Each dataset class states its ``vocab``, ``text_length`` and
``image_shape``; ``make_dataset`` maps the run's data settings onto its constructor."""
from __future__ import annotations

from mmvae_zoo.datasets.celeba import CelebA
from mmvae_zoo.datasets.mnist import MNIST
from mmvae_zoo.datasets.two_objects import SingleObject, TwoObjects

DATASETS = {
    "two_objects": "procedural two-object scenes with 9-word texts (rendered on first use, any size >= 32)",
    "single_object": "one red/blue, small/large object with 2-word texts (paper Fig. 1)",
    "celeba": "aligned CelebA faces, 64x64, attributes as shuffled words (bring the files)",
    "mnist": "MNIST digits with the label as a one-word text (python -m mmvae_zoo.datasets.fetch mnist)",
}


CLASSES = {"two_objects": TwoObjects, "single_object": SingleObject, "celeba": CelebA, "mnist": MNIST}
FIXED_SIZES = {"celeba": 64, "mnist": 28}


def _class(name: str):
    if name not in CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return CLASSES[name]


def describe(data) -> tuple:
    """(vocab, text_length, image_shape) of the dataset ``data`` describes, without loading it."""
    cls = _class(data.name)
    if data.name in FIXED_SIZES:
        _fixed_size(data.name, data.image_size, FIXED_SIZES[data.name])
    channels = 1 if cls is MNIST else 3
    return cls.vocab, cls.text_length, (channels, data.image_size, data.image_size)


def make_dataset(data, split: str, progress: bool = True):
    """The ``split`` ("train" or "val") of the dataset that ``data`` (a DataConfig) describes."""
    name, cls = data.name, _class(data.name)
    if name in FIXED_SIZES:
        _fixed_size(name, data.image_size, FIXED_SIZES[name])
    if name in ("two_objects", "single_object"):
        return cls(data.root, split, image_size=data.image_size, num_train=data.num_train, num_val=data.num_val,
                   seed=data.seed, progress=progress)
    if name == "celeba":
        return CelebA(data.root, split, seed=data.seed, progress=progress)
    return MNIST(data.root, "test" if split == "val" else split, seed=data.seed)


def _fixed_size(name: str, asked: int, size: int) -> None:
    if asked != size:
        raise ValueError(f"dataset {name} has {size}x{size} images; use --image-size {size}")
