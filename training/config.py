"""Typed configuration of a run, with named presets; saved as ``config.json`` in each run."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmvae_zoo.models.blocks import PRECISIONS
from mmvae_zoo.models.jmvae import JMVAEConfig
from mmvae_zoo.models.vlvae import VLVAEConfig


# The datasets read from files: their splits are the files' own, not a number of images to render.
FILE_DATASETS = ("celeba", "mnist")


@dataclass
class DataConfig:
    name: str = "two_objects"
    image_size: int = 112
    num_train: int | None = 90_000  # images rendered (Two Objects, single object); None: the files' own split
    num_val: int | None = 10_000
    seed: int = 0
    root: str | None = None  # None: datasets.cache.default_root()

    def __post_init__(self):
        # a dataset read from files has no image counts (configs saved before 2026-12-07 carry Two Objects' here)
        if self.name in FILE_DATASETS:
            self.num_train = self.num_val = None


@dataclass
class TrainConfig:
    steps: int = 400_000         # training the VLVAE (guides image, joint)
    guide_steps: int = 50_000    # training a text guide or the learned prior on a frozen VLVAE
    batch_size: int = 20
    lr: float = 4e-4
    lr_decay: str = "constant"   # "cosine": annealed from lr to 0 over the run; "step": lr / 10 for its last 10%
    warmup_steps: int = 20_000   # KL weight from ~0 to 1 over these steps (appendix 5.3)
    x_weight: float = 0.02       # image likelihood weight (appendix 5.3.1; authors' script)
    y_weight: float = 200.0      # text likelihood weight
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 5_000
    keep_checkpoints: int = 3    # the latest checkpoints kept in the run directory; 0 keeps every one
    skip_bad_steps: bool = False  # skip (and count) steps with a non-finite loss or gradient instead of stopping
    compile: bool = False        # torch.compile the networks' blocks (models.blocks.compile_blocks) before training
    precision: str = "fp32"      # what the networks' blocks compute in (models.blocks.PRECISIONS); the rest is fp32
    clip_grad_norm: float | None = None  # rescale the gradient to at most this norm before each step (None: never)
    num_flows: int = 6           # coupling flows in q(z|y) and q(z); 0 makes q(z|y) Gaussian
    text_true_weighted: bool = False  # Eq. 3 with the text likelihood weight y_weight (an option)
    alpha: float = 0.1           # JMVAE-kl: weight of the two KL terms of Eq. 4 (paper: 0.01, 0.1, 1)
    particles: int = 1           # MMVAE: draws from each expert in its importance-weighted objective (K)
    world_size: int = 1          # processes the run was started with (torchrun); batch_size is per process


LR_DECAYS = ("constant", "cosine", "step")


def check_train(t: TrainConfig) -> None:
    """Refuse settings no run can train with (a weight of 0 would also break Pyro's ``poutine.scale``)."""
    for name in ("steps", "guide_steps", "checkpoint_every", "batch_size", "lr", "x_weight", "y_weight", "particles"):
        if not getattr(t, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(t, name)}; pass --{name.replace('_', '-')} > 0")
    for name in ("warmup_steps", "num_flows", "alpha", "keep_checkpoints"):
        if getattr(t, name) < 0:
            raise ValueError(f"{name} must not be negative, got {getattr(t, name)}; pass "
                             f"--{name.replace('_', '-')} >= 0")
    if t.lr_decay not in LR_DECAYS:
        raise ValueError(f"unknown lr_decay {t.lr_decay!r}; choose one of {', '.join(LR_DECAYS)}")
    if t.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {t.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if t.clip_grad_norm is not None and not t.clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive, got {t.clip_grad_norm}; pass --clip-grad-norm > 0")


# The guides that fit a frozen, already trained model (for ``guide_steps``); all others train the model.
FROZEN_MODEL_GUIDES = ("text_true", "text_agg", "prior_agg")


@dataclass
class RunConfig:
    """Everything a run depends on; ``num_steps`` is what this run's ``guide`` trains for."""

    model: str = "vlvae"
    guide: str = "image"
    preset: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    net: VLVAEConfig | JMVAEConfig = field(default_factory=VLVAEConfig)  # NETS[model]
    train: TrainConfig = field(default_factory=TrainConfig)
    base_run: str | None = None  # the trained VLVAE a text guide or prior is fitted to

    @property
    def num_steps(self) -> int:
        return self.train.guide_steps if self.guide in FROZEN_MODEL_GUIDES else self.train.steps

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        raw = json.loads(text)
        net = NETS[raw.get("model", "vlvae")]
        return cls(**{**raw, "data": DataConfig(**raw["data"]), "net": net(**raw["net"]),
                      "train": TrainConfig(**raw["train"])})

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        return cls.from_json(Path(path).read_text())


def _paper() -> RunConfig:
    """The paper's setting: 112x112 Two Objects, appendix 5.1 networks, 400k steps of batch 20."""
    return RunConfig(preset="paper")


def _cpu() -> RunConfig:
    """Same architecture shape, sized for 2 CPU cores (the base VLVAE about 95 minutes, q_Agg about
    7): 64x64 images (attributes stay visible), a strided stem, narrower
    convolutions and one stride-2 layer (a 16x16 grid: shapes and colours come through sooner than
    at 8x8), batches of 128 (more of each attribute than batches of 32 for the same images seen),
    11k steps with the rate cut tenfold for the last 10% (worth 2-3 points of the ceiling): about
    92% of the object words from the mean of q(z|x), 96-97% with it refined per image
    (``guides.semi_amortised``). q_Agg needs its 6k steps: at 2k it was only 2 points above q_True
    in correctness, at 6k 16 (docs/reproduction.md)."""
    return RunConfig(
        preset="cpu",
        data=DataConfig(image_size=64, num_train=20_000, num_val=2_000),
        net=VLVAEConfig(image_shape=(3, 64, 64), channels=16, num_down=1, stem_kernel=5, stem_stride=2),
        train=TrainConfig(steps=11_000, guide_steps=6_000, batch_size=128, lr=1e-3, lr_decay="step",
                          warmup_steps=1_500, x_weight=0.25, log_every=50, checkpoint_every=1_000),
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
    from mmvae_zoo.datasets.registry import describe

    vocab, config.net.text_length, config.net.image_shape = describe(config.data)
    config.net.vocab = vocab.to_list()
    return config


PRESETS = {"paper": _paper, "cpu": _cpu, "tiny": _tiny}


def _jmvae(name: str, dataset: str) -> RunConfig:
    """JMVAE presets. MNIST: the paper's networks (4.2), Bernoulli pixels, batch 100, Adam 1e-3;
    ``paper`` 100 epochs (50k steps, warm-up over the first 20), ``cpu`` 8 epochs (4k steps, about
    5 minutes on one core), ``tiny`` a few steps of narrow networks. Other data sets: the VLVAE
    preset's data sizes, conv shapes, steps and schedule, with the conv family, Beta pixels and
    unit likelihood weights (the paper's JMVAE has none; --x-weight and --y-weight set them)."""
    if dataset == "mnist":
        data = DataConfig(name="mnist", image_size=28)
        net = JMVAEConfig()
        train = {"paper": TrainConfig(steps=50_000, batch_size=100, lr=1e-3, warmup_steps=10_000, x_weight=1.0,
                                      y_weight=1.0, checkpoint_every=5_000),
                 "cpu": TrainConfig(steps=4_000, batch_size=100, lr=1e-3, warmup_steps=1_000, x_weight=1.0,
                                    y_weight=1.0, log_every=50, checkpoint_every=1_000),
                 "tiny": TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, x_weight=1.0, y_weight=1.0,
                                     log_every=1, checkpoint_every=2)}[name]
        if name == "tiny":
            net = JMVAEConfig(z_dim=4, hidden=16)
        return RunConfig(model="jmvae", guide="kl", preset=name, data=data, net=net, train=train)
    base = _vlvae_preset(name, dataset)
    v = base.net
    net = JMVAEConfig(image_shape=v.image_shape, z_dim=v.z_dim, hidden=v.hidden, family="conv", likelihood="beta",
                      concentration=v.concentration, channels=v.channels, num_down=v.num_down,
                      stem_kernel=v.stem_kernel, stem_stride=v.stem_stride, grid=v.grid)
    base.train.x_weight = base.train.y_weight = 1.0
    return RunConfig(model="jmvae", guide="kl", preset=name, data=base.data, net=net, train=base.train)


# What every preset changes for the other datasets: their fixed image sizes (MNIST's 28 takes
# one downsampling less), and the 2-d latent of the single-object VLVAE (paper Fig. 1, 5.5).
DATASET_CHANGES = {
    "two_objects": {},
    "single_object": {"net.z_dim": 2},
    "celeba": {"data.image_size": 64},
    "mnist": {"data.image_size": 28, "net.num_down": 1},
}


NETS = {"vlvae": VLVAEConfig, "jmvae": JMVAEConfig}  # the network config of each model


def preset(name: str, dataset: str = "two_objects", model: str = "vlvae") -> RunConfig:
    """The named preset of ``model`` for ``dataset``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if dataset not in DATASET_CHANGES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_CHANGES)}")
    if model not in NETS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(NETS)}")
    return _jmvae(name, dataset) if model == "jmvae" else _vlvae_preset(name, dataset)


def _vlvae_preset(name: str, dataset: str) -> RunConfig:
    config = PRESETS[name]()
    config.data = dataclasses.replace(config.data, name=dataset)  # its __post_init__ sees the dataset
    for key, value in DATASET_CHANGES[dataset].items():
        section, field_name = key.split(".")
        setattr(getattr(config, section), field_name, value)
    return config
