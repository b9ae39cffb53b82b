"""On-disk cache of generated or converted arrays (uint8 images, token ids, metadata).

A cache entry is a folder of ``.npy`` files plus ``manifest.json`` holding each array's
shape, dtype and CRC-32. The folder is written under a temporary name and renamed into
place only when complete, so an interrupted build never looks finished; on load every
file is checked against the manifest and an entry that fails is rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import warnings
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

ENV_VAR = "MMVAE_DATA_ROOT"


def default_root() -> Path:
    """``$MMVAE_DATA_ROOT`` if set, else ``~/.cache/mmvae-zoo`` (or ``$XDG_CACHE_HOME/mmvae-zoo``)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "mmvae-zoo"


def worker_pool(workers: int) -> multiprocessing.pool.Pool:
    """A pool of ``workers`` processes started from a fresh server process ("forkserver"), not forked from
    this one: a process that has already run torch holds OpenMP threads, and a child forked from it can
    hang on their locks (seen once in CI, rendering after training had started in the same process)."""
    return multiprocessing.get_context("forkserver").Pool(workers)


def cache_key(**params) -> str:
    """A short stable hash of every parameter that changes the arrays."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


class CorruptCache(Exception):
    pass


def _load(folder: Path) -> dict[str, np.ndarray]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CorruptCache(f"unreadable manifest ({e})") from e
    arrays = {}
    for name, info in manifest["arrays"].items():
        try:
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise CorruptCache(f"{name}.npy unreadable ({e})") from e
        if list(array.shape) != info["shape"] or str(array.dtype) != info["dtype"] or _crc(array) != info["crc32"]:
            raise CorruptCache(f"{name}.npy does not match its manifest")
        arrays[name] = array
    return arrays


def load_or_build(folder: Path, build: Callable[[], dict[str, np.ndarray]], params: dict) -> dict[str, np.ndarray]:
    """The arrays cached in ``folder``, built with ``build()`` and saved first if absent or corrupt.

    Arrays come back memory-mapped read-only; ``params`` is stored in the manifest for people.
    """
    folder = Path(folder)
    if folder.exists():
        try:
            return _load(folder)
        except CorruptCache as e:
            warnings.warn(f"cache {folder} is corrupt: {e}; rebuilding it", stacklevel=2)
            shutil.rmtree(folder)
    arrays = build()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {"params": params, "arrays": {}}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        np.save(tmp / f"{name}.npy", array)
        manifest["arrays"][name] = {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": _crc(array)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
    return _load(folder)
