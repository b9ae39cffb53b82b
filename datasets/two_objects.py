"""Two Objects (VLVAE paper 5.2) and Single Object (paper 5.5): rendered scenes paired with texts.

The paper's CLEVR renders were never published, so scenes are drawn here and ray-cast by
``datasets.render``. Two Objects: two objects, each with a size, colour, material and shape,
and a 9-word text ``size colour material shape relation size colour material shape``.
"O1 ... REL O2 ..." means O1 is REL of O2, CLEVR's rule:

    O1 is REL of O2  <=>  (pos_O1 - pos_O2) . dir_REL > RELATION_THRESHOLD

with dir_REL the camera's right / left / front / behind axes projected on the ground. Of the
true (order, relation) pairs one is picked at random; scenes with none are redrawn.
Single Object: one rubber sphere, small or large, red or blue; text ``size colour``.

Scene i of a split is drawn from ``np.random.default_rng([seed, split_code, i])``: its text and
metadata depend on nothing else (not on the image size). Scenes are rendered in batches of CHUNK
consecutive indices, and a pixel does not depend on the other scenes of its batch (see
``datasets.render``), so sample i is the same bit for bit whatever the number of worker
processes or the size of the split. Generated splits are cached (memory-mapped) under
``root/two_objects/<cache_key(parameters)>``.

Metadata (``dataset.metadata``), one row per sample, k objects per scene:
size, colour, material, shape: int64 [N, k], indices into render.SIZES, COLOURS, MATERIALS, SHAPES
(the full tables, also for Single Object); position: float64 [N, k, 2]; rotation: float64 [N, k];
area: float32 [N, k], pixels each object covers; Two Objects also has first: int64 [N], the
object named first, and relation: int64 [N], an index into RELATIONS.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import render
from .base import ImageTextDataset
from .cache import cache_key, default_root, load_or_build, worker_pool
from .render import COLOURS, MATERIALS, SHAPES, SIZES, Objects
from .vocab import Vocabulary

RENDERER_VERSION = 1  # bump whenever a change alters generated images, texts or metadata
CACHE_FOLDER = "two_objects"
SPLITS = {"train": 0, "val": 1}  # split name -> split_code in the scene seed
RELATIONS = ("right", "left", "front", "behind")
RELATION_THRESHOLD = 0.2  # scene units along the relation's direction
FRAME_MARGIN = 0.02  # each object's image box keeps this fraction of the image from the edges
OBJECT_GAP = 0.01  # and this fraction from the other object's box
PLACEMENT_TRIES = 100  # positions tried per object before the scene is redrawn
CHUNK = 8  # scenes rendered in one batch; chunk c holds indices [c * CHUNK, (c + 1) * CHUNK)

VOCAB = Vocabulary([*SIZES, *COLOURS, *MATERIALS, *SHAPES, *RELATIONS])
SINGLE_COLOURS = ("red", "blue")
SINGLE_VOCAB = Vocabulary([*SIZES, *SINGLE_COLOURS])
_DIRECTIONS = np.stack([render.ground_directions()[r] for r in RELATIONS])  # [4, 2]
_ANY_OBJECT = {"size": range(len(SIZES)), "colour": range(len(COLOURS)),  # attribute -> indices to draw from
               "material": range(len(MATERIALS)), "shape": range(len(SHAPES))}
_SINGLE_OBJECT = {"size": range(len(SIZES)), "colour": [list(COLOURS).index(c) for c in SINGLE_COLOURS],
                  "material": [MATERIALS.index("rubber")], "shape": [SHAPES.index("sphere")]}


def true_relations(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Indices into RELATIONS of every REL such that an object at ``a`` is REL of one at ``b`` (positions (x, y))."""
    return [r for r, along in enumerate(_DIRECTIONS @ (np.asarray(a) - np.asarray(b))) if along > RELATION_THRESHOLD]


def _place(rng: np.random.Generator, choices: dict, boxes: list[np.ndarray]) -> dict | None:
    """An object with attributes drawn from ``choices`` at a position where its image box lies inside
    the frame and clear of ``boxes``; None if PLACEMENT_TRIES positions all fail."""
    obj = {name: int(rng.choice(options)) for name, options in choices.items()}
    for _ in range(PLACEMENT_TRIES):
        obj["position"] = rng.uniform(-render.POSITION_RANGE, render.POSITION_RANGE, 2)
        obj["rotation"] = rng.uniform(0, 2 * math.pi) if obj["shape"] != SHAPES.index("sphere") else 0.0
        box = render.bounding_boxes(Objects(**{k: np.array([[v]]) for k, v in obj.items()}))[0, 0]
        inside = (box[:2] >= FRAME_MARGIN).all() and (box[2:] <= 1 - FRAME_MARGIN).all()
        if inside and all(_apart(box, other) for other in boxes):
            obj["box"] = box
            return obj
    return None


def _apart(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether boxes (u0, v0, u1, v1) are at least OBJECT_GAP apart along u or along v."""
    return a[2] + OBJECT_GAP <= b[0] or b[2] + OBJECT_GAP <= a[0] or a[3] + OBJECT_GAP <= b[1] or b[3] + OBJECT_GAP <= a[1]


def _words(obj: dict) -> list[str]:
    return [list(SIZES)[obj["size"]], list(COLOURS)[obj["colour"]], MATERIALS[obj["material"]], SHAPES[obj["shape"]]]


def _scene(objects: list[dict], words: list[str], **extra) -> tuple[dict, list[str]]:
    """(per-scene metadata: object fields as lists over the objects, plus ``extra``; words)."""
    fields = {name: [obj[name] for obj in objects] for name in Objects._fields}
    return {**fields, **extra}, words


class _RenderedScenes(ImageTextDataset):
    """A split of rendered scenes, generated once in ``workers`` processes and cached under ``root``.

    Attributes: ``images`` uint8 [N, 3, H, W], ``tokens`` int64 [N, text_length], ``metadata``
    (see the module docstring), ``image_shape`` (3, H, W); all arrays memory-mapped read-only.
    ``dataset[i]`` is (float32 image [3, H, W] in [0, 1] passed through ``transform``, long tokens).
    Subclasses set ``name``, ``vocab``, ``text_length`` and ``sample_scene(rng) -> (metadata, words)``.
    """
    name: str
    vocab: Vocabulary
    text_length: int

    def __init__(self, root, split, image_size, num_train, num_val, seed, transform, workers, progress):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
        render.check_image_size(image_size)
        for name, value in (("num_train", num_train), ("num_val", num_val)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        workers = os.cpu_count() if workers is None else workers
        if not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be a positive integer (or None for all cores), got {workers!r}")
        count = num_train if split == "train" else num_val
        params = dict(dataset=self.name, split=split, count=int(count), image_size=int(image_size), seed=int(seed),
                      renderer_version=RENDERER_VERSION)
        folder = Path(root if root is not None else default_root()) / CACHE_FOLDER / cache_key(**params)
        build = lambda: generate(type(self), split, count, image_size, seed, workers, progress)
        arrays = dict(load_or_build(folder, build, params))
        self.images, self.tokens, self.metadata = arrays.pop("images"), arrays.pop("tokens"), arrays
        self.image_shape = tuple(self.images.shape[1:])
        self.transform = transform


class TwoObjects(_RenderedScenes):
    """Two objects and a 9-word text (see the module docstring); images uint8 [N, 3, H, W]."""
    name = "two_objects"
    vocab = VOCAB
    text_length = 9

    def __init__(self, root=None, split="train", image_size=112, num_train=90_000, num_val=10_000, seed=0,
                 transform=None, workers=None, progress=True):
        super().__init__(root, split, image_size, num_train, num_val, seed, transform, workers, progress)

    @staticmethod
    def sample_scene(rng):
        """Two objects apart in the frame, named in a random true (order, relation); redrawn until one is true."""
        pairs = []
        while not pairs:
            a = _place(rng, _ANY_OBJECT, [])
            b = _place(rng, _ANY_OBJECT, [a["box"]]) if a else None
            if b:
                pairs = [(first, r) for first, (one, other) in enumerate(((a, b), (b, a)))
                         for r in true_relations(one["position"], other["position"])]
        objects = [a, b]
        first, relation = pairs[rng.integers(len(pairs))]
        words = _words(objects[first]) + [RELATIONS[relation]] + _words(objects[1 - first])
        return _scene(objects, words, first=first, relation=relation)


class SingleObject(_RenderedScenes):
    """One rubber sphere, small or large, red or blue, and its 2-word text ``size colour`` (paper Fig. 1)."""
    name = "single_object"
    vocab = SINGLE_VOCAB
    text_length = 2

    def __init__(self, root=None, split="train", image_size=64, num_train=10_000, num_val=1_000, seed=0,
                 transform=None, workers=None, progress=True):
        super().__init__(root, split, image_size, num_train, num_val, seed, transform, workers, progress)

    @staticmethod
    def sample_scene(rng):
        """One object with the Single Object attributes anywhere in the frame."""
        obj = None
        while obj is None:
            obj = _place(rng, _SINGLE_OBJECT, [])
        return _scene([obj], _words(obj)[:2])


def render_chunk(dataset: type[_RenderedScenes], image_size: int, seed: int, split_code: int,
                 start: int, stop: int) -> dict[str, np.ndarray]:
    """Images, tokens and metadata of scenes ``start`` to ``stop - 1``, rendered as one batch."""
    scenes = [dataset.sample_scene(np.random.default_rng([seed, split_code, i])) for i in range(start, stop)]
    metadata = {key: np.array([fields[key] for fields, _ in scenes]) for key in scenes[0][0]}
    rendering = render.render(Objects(**{f: metadata[f] for f in Objects._fields}), image_size)
    tokens = torch.stack([dataset.vocab.encode(words) for _, words in scenes]).numpy()
    return dict(images=rendering.images, tokens=tokens, area=rendering.areas, **metadata)


def _render_chunk_args(args) -> dict[str, np.ndarray]:
    return render_chunk(*args)


def generate(dataset: type[_RenderedScenes], split: str, count: int, image_size: int, seed: int,
             workers: int, progress: bool) -> dict[str, np.ndarray]:
    """Every array of a split, rendered chunk by chunk in ``workers`` processes (in this one if 1)."""
    jobs = [(dataset, image_size, seed, SPLITS[split], start, min(start + CHUNK, count))
            for start in range(0, count, CHUNK)]
    out = {}
    with tqdm(total=count, desc=f"rendering {dataset.name} {split}", unit="img", disable=not progress) as bar:
        pool = worker_pool(min(workers, len(jobs))) if workers > 1 and len(jobs) > 1 else None
        try:
            parts = pool.imap(_render_chunk_args, jobs) if pool else map(_render_chunk_args, jobs)
            for (*_, start, stop), part in zip(jobs, parts):
                for key, array in part.items():
                    if key not in out:
                        out[key] = np.empty((count, *array.shape[1:]), array.dtype)
                    out[key][start:stop] = array
                bar.update(stop - start)
        finally:
            if pool:
                pool.terminate()
    return out
