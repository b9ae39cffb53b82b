"""Correctness classifiers and the correctness of image-text pairs (VLVAE paper, 5.4).

An independent classifier, nearly the image encoder (the convolutions of
``models.blocks.ImageEncoderNet`` and an MLP head like the shared encoder), predicts the text of
an image; correctness measures how far
a text agrees with it. Table 1 scores images decoded from z ~ q(z|y) against the given real
text, Table 2 images and texts decoded from the same prior sample; the functions here take any
images and texts and leave that choice to the caller.

- Two Objects: the text's object order and relation word are ambiguous, so the classifier also
  reads the relation word; given it, the order is determined (relations are antisymmetric) and
  the targets are the dataset's own tokens. Interface: ``classifier(images [N, 3, H, W],
  relation [N] index into RELATIONS) -> logits [N, 8, len(VOCAB)]`` for the 8 object slots
  (size, colour, material, shape of the first object, then of the second). Correctness: the
  fraction of the 8 object words predicted.
- CelebA: word order is random, so the classifier scores each of the 19 words independently.
  Interface: ``classifier(images) -> logits [N, 19]`` (column j for ``celeba.WORDS[j]``, sigmoid
  for its probability). Correctness: the fraction of the text's words given probability > 0.5.

The relation word enters after the convolutions (it chooses attention maps), not as constant
input channels: the encoder's instance norm subtracts each channel's spatial mean, which erases a
constant plane (and whatever a convolution makes of it) completely.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mmvae_zoo.datasets.celeba import WORDS as CELEBA_WORDS
from mmvae_zoo.datasets.celeba import CelebA, present_words
from mmvae_zoo.datasets.loader import BatchLoader
from mmvae_zoo.datasets.registry import make_dataset
from mmvae_zoo.datasets.two_objects import COLOURS, MATERIALS, RELATIONS, SHAPES, SIZES, VOCAB
from mmvae_zoo.models.blocks import ImageEncoderNet, ResidualMLP
from mmvae_zoo.training.config import DataConfig
from mmvae_zoo.training.rundir import RunError, atomic_save, atomic_write_text, load_file

RELATION_SLOT = 4
OBJECT_SLOTS = (0, 1, 2, 3, 5, 6, 7, 8)
_SLOT_WORDS = {"size": list(SIZES), "colour": list(COLOURS), "material": list(MATERIALS), "shape": list(SHAPES)}
SLOT_NAMES = tuple(f"{kind} {obj}" for obj in (1, 2) for kind in _SLOT_WORDS)
# _SLOT_MASK[s, w]: word id w is of object slot s's kind; _RELATION_INDEX[w]: index into RELATIONS or -1
_SLOT_MASK = torch.tensor([[w in words for w in VOCAB.words] for words in list(_SLOT_WORDS.values()) * 2])
_RELATION_INDEX = torch.tensor([RELATIONS.index(w) if w in RELATIONS else -1 for w in VOCAB.words])
# _CELEBA_COLUMN[w]: the classifier column of CelebA word id w, -1 for the blank and padding
_CELEBA_COLUMN = torch.tensor([CELEBA_WORDS.index(w) if w in CELEBA_WORDS else -1 for w in CelebA.vocab.words])

CONFIG_FILE, WEIGHTS_FILE = "classifier.json", "weights.pt"
EVAL_BATCH = 256


@dataclass
class ClassifierConfig:
    """Architecture (of ``ImageEncoderNet`` and the head) and training settings of a classifier."""
    channels: int = 16      # stem channels, doubled by each downsampling
    num_down: int = 1
    stem_kernel: int = 5
    stem_stride: int = 2
    hidden: int = 200       # width of the heads (and of the CelebA encoder output)
    steps: int = 3_000
    batch_size: int = 64
    lr: float = 1e-3        # Adam, cosine-annealed to 0
    seed: int = 0
    blur: float = 0.0       # > 0: each training image blurred by a Gaussian of sigma ~ U(0, blur) pixels,
                            # so blurry reconstructions are read by shape, not sharpness; 0: real images only (paper)


class _Classifier(nn.Module):
    """``record`` holds what training produced (data settings, accuracy, losses, seconds)."""
    kind: str
    slot_names: tuple[str, ...]

    def __init__(self, image_size: int, config: ClassifierConfig):
        super().__init__()
        self.image_size, self.config, self.record = image_size, config, {}

    def _encoder(self, out_dim: int) -> ImageEncoderNet:
        c = self.config
        return ImageEncoderNet((3, self.image_size, self.image_size), c.channels, c.num_down, out_dim,
                               c.stem_kernel, c.stem_stride)


class TwoObjectsClassifier(_Classifier):
    """Image and relation word -> the 8 object words of the Two Objects text (paper 5.4).

    The image encoder's convolutional trunk, with each grid cell's (u, v) coordinates appended,
    gives a feature map; the relation word selects two attention maps over it, which pick out
    the object named first (the one that is REL of the other) and the one named second; one MLP
    head names each picked object's size, colour, material and shape. (The encoder's flattening
    layer is left out: it ties every feature to a position, and such a classifier memorised its
    training images, 59% word accuracy on validation at 32x32 against 98% with attention.)"""
    kind = "two_objects"
    slot_names = SLOT_NAMES

    def __init__(self, image_size: int, config: ClassifierConfig = ClassifierConfig()):
        super().__init__(image_size, config)
        self.trunk = self._encoder(out_dim=1).conv
        grid = torch.linspace(-1, 1, image_size // (config.stem_stride * 2**config.num_down))
        self.register_buffer("coords", torch.stack(torch.meshgrid(grid, grid, indexing="xy")), persistent=False)
        features = config.channels * 2**config.num_down + 2
        self.attend = nn.Sequential(nn.Conv2d(features, config.hidden, 1), nn.ReLU(),
                                    nn.Conv2d(config.hidden, 2 * len(RELATIONS), 1))
        self.head = ResidualMLP(features, config.hidden, len(_SLOT_WORDS) * len(VOCAB), num_layers=3, num_residual=1)
        self.register_buffer("slot_mask", _SLOT_MASK.clone(), persistent=False)

    def forward(self, images: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """logits [N, 8, len(VOCAB)] of each object slot's word; words of another kind get -inf."""
        if tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images [N, 3, {self.image_size}, {self.image_size}], got {list(images.shape)}")
        f = self.trunk(images)
        f = torch.cat([f, self.coords.expand(len(f), -1, -1, -1)], 1)  # [N, C, h, w]
        maps = self.attend(f).unflatten(1, (len(RELATIONS), 2))[torch.arange(len(f), device=f.device), relation]
        picked = torch.einsum("nkl,ncl->nkc", maps.flatten(2).softmax(-1), f.flatten(2))  # [N, 2 objects, C]
        logits = self.head(picked).unflatten(-1, (len(_SLOT_WORDS), len(VOCAB))).flatten(1, 2)
        return logits.masked_fill(~self.slot_mask, float("-inf"))

    @staticmethod
    def targets(dataset) -> np.ndarray:
        return dataset.tokens

    def loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = self(images, _RELATION_INDEX.to(tokens.device)[tokens[:, RELATION_SLOT]])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, OBJECT_SLOTS].flatten())

    def hits(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return two_objects_hits(self, images, tokens)


class CelebAClassifier(_Classifier):
    """Image -> one logit per CelebA word (19, Male and Female separate; paper 5.4)."""
    kind = "celeba"
    slot_names = CELEBA_WORDS

    def __init__(self, image_size: int = 64, config: ClassifierConfig = ClassifierConfig()):
        super().__init__(image_size, config)
        self.encoder = self._encoder(config.hidden)
        self.head = ResidualMLP(config.hidden, config.hidden, len(CELEBA_WORDS), num_layers=3, num_residual=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """logits [N, 19], column j for WORDS[j]."""
        return self.head(self.encoder(images))

    @staticmethod
    def targets(dataset) -> np.ndarray:
        """float [N, 19]: which words the image's attributes make true (all of them, not only the <= 9 in its text)."""
        return present_words(dataset.attribute_names, dataset.attributes).astype(np.float32)

    def loss(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(images), present)

    def hits(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return (self(images) > 0) == (present > 0.5)


CLASSIFIERS = {cls.kind: cls for cls in (TwoObjectsClassifier, CelebAClassifier)}


def _evaluate(fn: Callable, classifier, batches: Iterable) -> torch.Tensor:
    """``fn(images, texts)`` concatenated over ``batches``, without gradients; a module runs in eval
    mode (its mode is restored afterwards)."""
    module = classifier if isinstance(classifier, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            return torch.cat([fn(x, y) for x, y in batches])
    finally:
        if was_training:
            module.train()


def _slices(images: torch.Tensor, texts: torch.Tensor, batch_size: int):
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts")
    return ((images[i:i + batch_size], texts[i:i + batch_size]) for i in range(0, len(images), batch_size))


def two_objects_hits(classifier, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """bool [N, 8]: whether the classifier, given each image and its text's relation word, predicts
    the text's word in each object slot. Generated texts can be malformed: every slot of a text
    whose relation slot holds no relation word is wrong, and so is a slot holding a word of another
    kind (a colour where a size belongs, a relation, padding)."""
    relation = _RELATION_INDEX.to(texts.device)[texts[:, RELATION_SLOT]]
    words = texts[:, OBJECT_SLOTS]
    predicted = classifier(images, relation.clamp(min=0)).argmax(-1)
    right_kind = _SLOT_MASK.to(texts.device)[torch.arange(len(OBJECT_SLOTS), device=texts.device), words]
    return (predicted == words) & right_kind & (relation >= 0).unsqueeze(-1)


def two_objects_text_hits(texts: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """bool [N, 8]: whether ``decoded`` names each object word of the real ``texts`` (slots as in
    ``two_objects_hits``), with no classifier: the decoded text's two objects are matched to the
    real ones in the order that agrees on more words, as one scene has two texts (either object
    first, the relation reversed). The relation word is not scored."""
    real, named = texts[:, OBJECT_SLOTS], decoded[:, OBJECT_SLOTS]
    same, swapped = named == real, named.roll(len(OBJECT_SLOTS) // 2, dims=1) == real
    return torch.where(same.sum(-1, keepdim=True) >= swapped.sum(-1, keepdim=True), same, swapped)


def two_objects_correctness(classifier, images: torch.Tensor, texts: torch.Tensor,
                            batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """float [N]: the fraction of the 8 object words of each text that the classifier, fed the image
    and the text's relation word, predicts (paper 5.4); malformed texts as in ``two_objects_hits``."""
    hits = lambda x, y: two_objects_hits(classifier, x, y).float().mean(-1)
    return _evaluate(hits, classifier, _slices(images, texts, batch_size))


def celeba_correctness(classifier, images: torch.Tensor, texts: torch.Tensor,
                       batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """float [N]: the fraction of each text's words (blank and padding ignored, a repeated word counted
    each time) that the classifier gives probability > 0.5 for the image (paper 5.4). A text with no
    word scores 0: it names nothing the image shows (every real text names Male or Female)."""
    def agreement(x, y):
        column = _CELEBA_COLUMN.to(y.device)[y]
        named = column >= 0
        agrees = torch.sigmoid(classifier(x)).gather(1, column.clamp(min=0)) > 0.5
        return (agrees & named).sum(-1) / named.sum(-1).clamp(min=1)
    return _evaluate(agreement, classifier, _slices(images, texts, batch_size))


CORRECTNESS = {"two_objects": two_objects_correctness, "celeba": celeba_correctness}


def correctness(classifier, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """float [N] correctness of image-text pairs under the rule of ``classifier.kind``."""
    return CORRECTNESS[classifier.kind](classifier, images, texts)


class _Labelled:
    """A dataset's images with per-image targets in place of its tokens, for ``BatchLoader``."""

    def __init__(self, dataset, targets: np.ndarray):
        self.images, self.tokens = dataset.images, targets

    def __len__(self) -> int:
        return len(self.images)


def _classifier_class(name: str) -> type[_Classifier]:
    if name not in CLASSIFIERS:
        raise ValueError(f"correctness classifiers exist for {' and '.join(CLASSIFIERS)}, not {name!r}")
    return CLASSIFIERS[name]


def validation_accuracy(classifier: _Classifier, dataset, device) -> dict[str, float]:
    """Accuracy of each slot (object word or CelebA word) on ``dataset``, their mean ("word") and the
    fraction of images with every slot right ("all")."""
    loader = BatchLoader(_Labelled(dataset, classifier.targets(dataset)), min(EVAL_BATCH, len(dataset)), device,
                         shuffle=False)
    hits = _evaluate(classifier.hits, classifier, loader).float()
    return {**dict(zip(classifier.slot_names, hits.mean(0).tolist())),
            "word": hits.mean().item(), "all": hits.all(-1).float().mean().item()}


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``images`` [N, C, H, W], each blurred by a Gaussian of standard deviation ``sigma[n]`` pixels
    (0 leaves it unchanged), edges replicated."""
    n, c, h, w = images.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    r = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-r**2 / (2 * sigma.to(images).clamp(min=1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(-1, keepdim=True)).repeat_interleave(c, 0)  # [N * C, 2 radius + 1]
    x = F.pad(images.reshape(1, n * c, h, w), (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w)


def train_classifier(data: DataConfig, config: ClassifierConfig = ClassifierConfig(), device="cpu",
                     progress: bool = True) -> _Classifier:
    """A classifier of ``data``'s kind trained on its real training images, blurred as ``config.blur``
    says (cross-entropy; Adam with cosine-annealed learning rate), in eval mode; ``record`` holds the
    validation accuracy (on unblurred images), the mean loss of each tenth of training and the seconds taken."""
    cls = _classifier_class(data.name)
    train_set, val_set = make_dataset(data, "train", progress), make_dataset(data, "val", progress)
    torch.manual_seed(config.seed)
    classifier = cls(data.image_size, config).to(device)
    loader = BatchLoader(_Labelled(train_set, cls.targets(train_set)), config.batch_size, device, config.seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.steps, 1))
    losses, started = [], time.time()
    bar = tqdm(range(config.steps), desc=f"classifier {data.name}", disable=not progress)
    for step in bar:
        images, targets = loader.batch(step)
        if config.blur:
            images = gaussian_blur(images, config.blur * torch.rand(len(images), device=images.device))
        loss = classifier.loss(images, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    classifier.eval()
    classifier.record = {"data": dataclasses.asdict(data), "accuracy": validation_accuracy(classifier, val_set, device),
                         "losses": [float(np.mean(part)) for part in np.array_split(losses, 10) if len(part)],
                         "seconds": round(time.time() - started, 1)}
    return classifier


def default_classifier_dir(data: DataConfig) -> Path:
    return Path("runs") / f"classifier-{data.name}-{data.image_size}"


def save_classifier(classifier: _Classifier, path) -> None:
    """Write ``path/weights.pt`` (the state_dict) then ``path/classifier.json`` (kind, image size,
    config and record), each atomically; the JSON's presence marks a complete folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_save(classifier.state_dict(), path / WEIGHTS_FILE)
    info = {"kind": classifier.kind, "image_size": classifier.image_size,
            "config": dataclasses.asdict(classifier.config), **classifier.record}
    atomic_write_text(path / CONFIG_FILE, json.dumps(info, indent=2))


def load_classifier(path, device="cpu") -> _Classifier:
    """The classifier saved in folder ``path``, on ``device``, in eval mode; RunError if it is missing or corrupt."""
    path = Path(path)
    try:
        info = json.loads((path / CONFIG_FILE).read_text())
        classifier = CLASSIFIERS[info["kind"]](info["image_size"], ClassifierConfig(**info["config"]))
    except FileNotFoundError:
        raise RunError(f"{path} holds no classifier (no {CONFIG_FILE}); train one with run/classifier.py") from None
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"{path / CONFIG_FILE} is not a valid classifier description ({type(e).__name__}: {e}); "
                       f"delete {path} and train again") from None
    try:
        classifier.load_state_dict(load_file(path / WEIGHTS_FILE, "classifier weights"))
    except (RuntimeError, AttributeError, TypeError) as e:
        raise RunError(f"{path / WEIGHTS_FILE} does not fit the classifier described in {CONFIG_FILE} "
                       f"({type(e).__name__}); delete {path} and train again") from None
    classifier.record = {k: v for k, v in info.items() if k not in ("kind", "image_size", "config")}
    return classifier.to(device).eval()


def get_or_train_classifier(data: DataConfig, path=None, device="cpu", progress: bool = True,
                            config: ClassifierConfig = ClassifierConfig()) -> _Classifier:
    """The classifier in ``path`` (default ``default_classifier_dir(data)``), trained with ``config`` and
    saved there first if the folder holds none; RunError if it was trained on another dataset or size."""
    path = Path(path) if path is not None else default_classifier_dir(data)
    if (path / CONFIG_FILE).exists():
        classifier = load_classifier(path, device)
        trained_on = classifier.record.get("data", {}).get("name"), classifier.image_size
        if trained_on != (data.name, data.image_size):
            raise RunError(f"the classifier in {path} was trained on {trained_on[0]} at {trained_on[1]}x{trained_on[1]}, "
                           f"not {data.name} at {data.image_size}x{data.image_size}; pass another classifier path")
        return classifier
    print(f"no correctness classifier in {path}: training one on {data.name} at {data.image_size}x{data.image_size} "
          f"({config.steps} steps; run/classifier.py trains one with other settings)")
    classifier = train_classifier(data, config, device, progress)
    save_classifier(classifier, path)
    print(f"classifier saved in {path}: validation word accuracy {classifier.record['accuracy']['word']:.2%}")
    return classifier
