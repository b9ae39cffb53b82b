"""Aligned CelebA as image + attribute-text pairs (VLVAE paper 5.2), read from local files.

Expected folder (``root/celeba``, or ``root`` itself if it holds the files)::

    img_align_celeba/000001.jpg ...   ("Align&Cropped Images", img_align_celeba.zip, unzipped)
    list_attr_celeba.txt              (line 1 the count, line 2 the 40 names, then "000001.jpg -1  1 ...")
    list_eval_partition.txt           ("000001.jpg 0"; only needed for partition="official")

Images: rows 48:176 and columns 25:153 of the 218x178 aligned image (128x128), 2x2 average
pooled to uint8 3x64x64. The first load decodes every JPEG once (in parallel, with a progress
bar) into a memory-mapped cache under ``<folder>/cache/``, keyed by the attribute file's SHA-1.

Text: the present attributes among the paper's 19 words (Male split into "Male" and
"Female"), shuffled, at most ``TEXT_LENGTH`` = 9 (a random 9 if more are present), padded with
the blank word "-". The order comes from ``np.random.default_rng(seed)`` drawing one row of
keys per line of the attribute file, so an image's text depends only on (seed, its index in
the file), whatever the split or partition.

Splits: partition "paper": images 1-180000 train, the other 22599 "val" (the paper says
22598). Partition "official": list_eval_partition.txt, 0 = "train", 1 = "val", 2 = "test".
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .base import ImageTextDataset
from .cache import cache_key, default_root, load_or_build, worker_pool
from .vocab import Vocabulary

WORDS = ("Bushy_Eyebrows", "Male", "Female", "Mouth_Slightly_Open", "Smiling", "Bald", "Bangs", "Black_Hair",
         "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Heavy_Makeup", "Mustache", "Pale_Skin",
         "Receding_Hairline", "Straight_Hair", "Wavy_Hair", "Wearing_Hat")
FEMALE = "Female"  # not a CelebA attribute: present when "Male" is -1
BLANK = "-"
TEXT_LENGTH = 9

ATTRIBUTE_VALUES = {"1", "-1"}
IMAGE_FOLDER, ATTR_FILE, PARTITION_FILE = "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"
DOWNLOAD_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
SOURCE_SIZE = (178, 218)  # (width, height) of an aligned image
CROP_ROWS, CROP_COLS, POOL = slice(48, 176), slice(25, 153), 2
IMAGE_SHAPE = (3, 64, 64)

PAPER_TRAIN_SIZE = 180_000
SPLITS = {"paper": ("train", "val"), "official": ("train", "val", "test")}
OFFICIAL_CODES = {"train": 0, "val": 1, "test": 2}

PARALLEL_MIN_IMAGES = 2_000  # fewer images are decoded in this process
CHUNK = 256
CACHE_VERSION = 1


def find_folder(root: Path) -> Path:
    """``root/celeba`` or ``root``, whichever holds the attribute file; else a FileNotFoundError saying what to get."""
    candidates = [root / "celeba", root]
    for folder in candidates:
        if (folder / ATTR_FILE).is_file():
            if not (folder / IMAGE_FOLDER).is_dir():
                raise FileNotFoundError(f"CelebA folder {folder} has no {IMAGE_FOLDER}/: {_download_hint(folder)}")
            return folder
    raise FileNotFoundError(
        f"CelebA not found: no {ATTR_FILE} in {' or '.join(map(str, candidates))}: {_download_hint(candidates[0])}"
    )


def _download_hint(folder: Path) -> str:
    return (f'download "Align&Cropped Images" (img_align_celeba.zip), {ATTR_FILE} and {PARTITION_FILE} '
            f"from {DOWNLOAD_PAGE} and unzip them into {folder}")


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(file names, the 40 attribute names, int8 values +1/-1 [N, 40]) of list_attr_celeba.txt."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        found = repr(lines[0][:40]) if lines else "an empty file"
        raise ValueError(f"{path} line 1 must be the number of images, found {found}")
    names = lines[1].split()
    missing = [w for w in WORDS if w != FEMALE and w not in names]
    if missing:
        raise ValueError(f"{path} line 2 lacks the attribute(s) {' '.join(missing)}")
    numbered = [(lineno, line.split()) for lineno, line in enumerate(lines[2:], start=3) if line.strip()]
    for lineno, r in numbered:
        if len(r) != len(names) + 1 or not set(r[1:]) <= ATTRIBUTE_VALUES:
            raise ValueError(f"{path} line {lineno} is malformed: expected a file name and {len(names)} values of "
                             f"1 or -1, found {' '.join(r)[:80]!r}")
    rows = [r for _, r in numbered]
    files = [r[0] for r in rows]
    if len(rows) != int(lines[0]):
        raise ValueError(f"{path} line 1 says {int(lines[0])} images but the file lists {len(rows)}; download it again")
    values = np.array([r[1:] for r in rows], dtype=np.int8).reshape(len(rows), len(names))
    return files, names, values


def read_partition(path: Path, files: list[str]) -> np.ndarray:
    """The official partition code (0 train, 1 val, 2 test) of each of ``files``, from list_eval_partition.txt."""
    if not path.is_file():
        raise FileNotFoundError(f"partition='official' needs {path}: {_download_hint(path.parent)}")
    codes = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if fields and (len(fields) != 2 or fields[1] not in ("0", "1", "2")):
            raise ValueError(f"{path} line {lineno} is malformed: expected a file name and 0, 1 or 2, found {line!r}")
        if fields:
            codes[fields[0]] = int(fields[1])
    unlisted = [f for f in files if f not in codes]
    if unlisted:
        raise ValueError(f"{path} has no partition for {len(unlisted)} image(s) of {ATTR_FILE}, e.g. {unlisted[0]}")
    return np.array([codes[f] for f in files], dtype=np.int8)


def present_words(names: list[str], attributes: np.ndarray) -> np.ndarray:
    """bool [N, len(WORDS)]: which of the 19 words each image's attributes make true."""
    column = {n: i for i, n in enumerate(names)}
    is_male = attributes[:, column["Male"]] > 0
    return np.stack([~is_male if w == FEMALE else attributes[:, column[w]] > 0 for w in WORDS], axis=1)


def make_tokens(present: np.ndarray, seed: int, vocab: Vocabulary) -> np.ndarray:
    """int64 [N, TEXT_LENGTH]: the present words in random order, at most TEXT_LENGTH of them, BLANK-padded."""
    keys = np.random.default_rng(seed).random(present.shape)  # row i depends only on (seed, i)
    keys[~present] = np.inf  # absent words sort last
    order = np.argsort(keys, axis=1, kind="stable")[:, :TEXT_LENGTH]
    word_ids = np.array([vocab.ids[w] for w in WORDS], np.int64)
    return np.where(np.take_along_axis(present, order, axis=1), word_ids[order], vocab.ids[BLANK])


def convert_image(path: Path) -> np.ndarray:
    """uint8 [3, 64, 64]: the 128x128 crop of an aligned CelebA JPEG, 2x2 average pooled (rounded)."""
    try:
        with Image.open(path) as image:
            if image.size != SOURCE_SIZE:
                raise ValueError(f"{path} is {image.size[0]}x{image.size[1]}, not an aligned CelebA image "
                                 f"({SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}); use img_align_celeba.zip")
            pixels = np.asarray(image.convert("RGB"))
    except OSError as e:
        raise ValueError(f"cannot decode {path} ({e}); replace it from img_align_celeba.zip") from e
    crop = pixels[CROP_ROWS, CROP_COLS].astype(np.uint16)
    total = sum(crop[i::POOL, j::POOL] for i in range(POOL) for j in range(POOL))
    return ((total + POOL * POOL // 2) // (POOL * POOL)).astype(np.uint8).transpose(2, 0, 1)


def _convert_chunk(paths: list[Path]) -> np.ndarray:
    return np.stack([convert_image(p) for p in paths])


def convert_images(folder: Path, files: list[str], progress: bool = True) -> np.ndarray:
    """uint8 [N, 3, 64, 64] of ``folder/img_align_celeba/<files>``, decoded across processes when many."""
    image_folder = folder / IMAGE_FOLDER
    present = set(os.listdir(image_folder))
    missing = [f for f in files if f not in present]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) listed in {ATTR_FILE} are missing from {image_folder}, "
                                f"e.g. {missing[0]}; unzip img_align_celeba.zip from {DOWNLOAD_PAGE} there again")
    chunks = [[image_folder / f for f in files[i:i + CHUNK]] for i in range(0, len(files), CHUNK)]
    images = np.empty((len(files), *IMAGE_SHAPE), np.uint8)
    workers = min(len(os.sched_getaffinity(0)), len(chunks))
    parallel = len(files) >= PARALLEL_MIN_IMAGES and workers > 1
    bar = tqdm(total=len(files), desc="CelebA: decoding JPEGs once", unit="img", disable=not progress)
    with bar, (worker_pool(workers) if parallel else contextlib.nullcontext()) as pool:
        start = 0
        for block in (pool.imap(_convert_chunk, chunks) if parallel else map(_convert_chunk, chunks)):
            images[start:start + len(block)] = block
            start += len(block)
            bar.update(len(block))
    return images


def _take(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]``, as a view (memory map kept) when the index is a contiguous run."""
    if len(index) == 0:
        return array[:0]
    if (np.diff(index) == 1).all():
        return array[index[0]:index[-1] + 1]
    return array[index]


class CelebA(ImageTextDataset):
    """CelebA 64x64 image + attribute-text pairs; ``attributes`` int8 +1/-1 [N, 40] named by ``attribute_names``."""

    vocab = Vocabulary(WORDS + (BLANK,))
    text_length = TEXT_LENGTH
    image_shape = IMAGE_SHAPE

    def __init__(self, root=None, split: str = "train", partition: str = "paper", seed: int = 0, transform=None,
                 progress: bool = True):
        if partition not in SPLITS:
            raise ValueError(f"unknown CelebA partition {partition!r}; choices: {', '.join(SPLITS)}")
        if split not in SPLITS[partition]:
            raise ValueError(f"unknown split {split!r} for partition {partition!r}; "
                             f"choices: {', '.join(SPLITS[partition])}")
        self.folder = find_folder(Path(root).expanduser() if root is not None else default_root())
        self.split, self.partition, self.transform = split, partition, transform
        arrays = self._load_all(progress)
        files, self.attribute_names = arrays["files"].tolist(), arrays["names"].tolist()
        index = self._split_index(files)
        tokens = make_tokens(present_words(self.attribute_names, arrays["attributes"]), seed, self.vocab)
        self.files = [files[i] for i in index]
        self.images, self.attributes = _take(arrays["images"], index), _take(arrays["attributes"], index)
        self.tokens = _take(tokens, index)

    def _load_all(self, progress: bool) -> dict[str, np.ndarray]:
        """images, attributes, files and attribute names of every image, from the cache (built on first use)."""
        attr_path = self.folder / ATTR_FILE
        params = dict(attributes_sha1=hashlib.sha1(attr_path.read_bytes()).hexdigest(), version=CACHE_VERSION,
                      crop=[CROP_ROWS.start, CROP_ROWS.stop, CROP_COLS.start, CROP_COLS.stop], pool=POOL)

        def build():
            files, names, attributes = read_attributes(attr_path)
            return {"images": convert_images(self.folder, files, progress), "attributes": attributes,
                    "files": np.array(files), "names": np.array(names)}

        return load_or_build(self.folder / "cache" / f"celeba64-{cache_key(**params)}", build, params)

    def _split_index(self, files: list[str]) -> np.ndarray:
        """Positions (in the attribute file) of this split's images."""
        if self.partition == "paper":
            everything = np.arange(len(files))
            return everything[:PAPER_TRAIN_SIZE] if self.split == "train" else everything[PAPER_TRAIN_SIZE:]
        codes = read_partition(self.folder / PARTITION_FILE, files)
        return np.flatnonzero(codes == OFFICIAL_CODES[self.split])

