"""Typed configuration of a run, with named presets; saved as ``config.json`` in each run."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from models.vlvae import VLVAEConfig


@dataclass
class DataConfig:
    name: str = "two_objects"
    image_size: int = 112
    num_train: int = 90_000
    num_val: int = 10_000
    seed: int = 0
    root: str | None = None  # None: datasets.cache.default_root()


@dataclass
class TrainConfig:
    steps: int = 400_000         # training the VLVAE (guides image, joint)
    guide_steps: int = 50_000    # training a text guide or the learned prior on a frozen VLVAE
    batch_size: int = 20
    lr: float = 4e-4
    warmup_steps: int = 20_000   # KL weight from ~0 to 1 over these steps (appendix 5.3)
    x_weight: float = 0.02       # image likelihood weight (appendix 5.3.1; authors' script)
    y_weight: float = 200.0      # text likelihood weight
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 5_000
    keep_checkpoints: int = 3
    skip_bad_steps: bool = False  # skip (and count) steps with a non-finite loss or gradient instead of stopping
    num_flows: int = 6           # coupling flows in q(z|y) and q(z); 0 makes q(z|y) Gaussian
    text_true_weighted: bool = False  # Eq. 3 with the text likelihood weight y_weight (an option)
    world_size: int = 1          # processes the run was started with (torchrun); batch_size is per process


@dataclass
class RunConfig:
    """Everything a run depends on; ``num_steps`` is what this run's ``guide`` trains for."""

    model: str = "vlvae"
    guide: str = "image"
    preset: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    net: VLVAEConfig = field(default_factory=VLVAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base_run: str | None = None  # the trained VLVAE a text guide or prior is fitted to

    @property
    def num_steps(self) -> int:
        return self.train.steps if self.guide in ("image", "joint") else self.train.guide_steps

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        raw = json.loads(text)
        return cls(**{**raw, "data": DataConfig(**raw["data"]), "net": VLVAEConfig(**raw["net"]),
                      "train": TrainConfig(**raw["train"])})

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        return cls.from_json(Path(path).read_text())


def _paper() -> RunConfig:
    """The paper's setting: 112x112 Two Objects, appendix 5.1 networks, 400k steps of batch 20."""
    return RunConfig(preset="paper")


def _cpu() -> RunConfig:
    """Same architecture shape, sized to train a useful model in minutes on 2 CPU cores:
    64x64 images (attributes stay visible), a strided stem and narrower convolutions."""
    return RunConfig(
        preset="cpu",
        data=DataConfig(image_size=64, num_train=20_000, num_val=2_000),
        net=VLVAEConfig(image_shape=(3, 64, 64), channels=16, num_down=2, stem_kernel=5, stem_stride=2),
        train=TrainConfig(steps=6_000, guide_steps=3_000, batch_size=32, lr=1e-3, warmup_steps=1_500, x_weight=0.25,
                          log_every=50, checkpoint_every=1_000),
    )


def _tiny() -> RunConfig:
    """For tests and smoke runs: 32x32, a few images, a few steps."""
    return RunConfig(
        preset="tiny",
        data=DataConfig(image_size=32, num_train=64, num_val=16),
        net=VLVAEConfig(image_shape=(3, 32, 32), z_dim=8, hidden=32, channels=4, num_down=1,
                        stem_kernel=3, stem_stride=2, grid=4),
        train=TrainConfig(steps=4, guide_steps=4, batch_size=8, lr=1e-3, warmup_steps=2, x_weight=0.25, log_every=1,
                          checkpoint_every=2, num_flows=2),
    )


def resolve(config: RunConfig) -> RunConfig:
    """Fill the network's vocabulary, text length and image shape in from the dataset."""
    from datasets.registry import describe

    vocab, config.net.text_length, config.net.image_shape = describe(config.data)
    config.net.vocab = vocab.to_list()
    return config


PRESETS = {"paper": _paper, "cpu": _cpu, "tiny": _tiny}

# What every preset changes for the other datasets: their fixed image sizes (MNIST's 28 takes
# one downsampling less), and the 2-d latent of the single-object VLVAE (paper Fig. 1, 5.5).
DATASET_CHANGES = {
    "two_objects": {},
    "single_object": {"net.z_dim": 2},
    "celeba": {"data.image_size": 64},
    "mnist": {"data.image_size": 28, "net.num_down": 1},
}


def preset(name: str, dataset: str = "two_objects") -> RunConfig:
    """The named preset for ``dataset``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if dataset not in DATASET_CHANGES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_CHANGES)}")
    config = PRESETS[name]()
    config.data.name = dataset
    for key, value in DATASET_CHANGES[dataset].items():
        section, field_name = key.split(".")
        setattr(getattr(config, section), field_name, value)
    return config
