"""The Joint Multimodal VAE (Suzuki, Nakayama & Matsuo, section 3.2 and 4.2) as a Pyro model.

Generative model (paper Eq. 3's p(x, w, z)): z ~ p(z) = N(0, I); image and text are decoded
from z independently, p(x, w | z) = p(x|z) p(w|z). A missing modality is left out of the
model, so ``jmvae(x, None)`` is p(z) p(x|z) and ``jmvae(None, w)`` is p(z) p(w|z). The module is the
Pyro model (its ``forward``; ``jmvae.model`` is the module itself), as for the VLVAE.

The text w is a sequence of word ids [..., L] (0 = padding) and every word is decoded
independently from z: p(w|z) = prod_t Cat(w_t | softmax_t(z)), padding masked out. For
MNIST (L = 1) this is the paper's categorical label distribution.

Network families (``JMVAEConfig.family``):
- ``"mlp"``, the paper's MNIST networks (4.2): per-modality encoder branches of two dense
  layers of 512 with leaky ReLU whose tops are joined and mapped to z (z = 64); decoders of
  three dense layers of 512; p(x|z) Bernoulli per pixel.
- ``"conv"``, for the image data sets: the VLVAE's image encoder and decoder blocks
  (``models.blocks``), the dense text branch above, and p(x|z) the VLVAE's Beta likelihood.

The encoder branches live here because both the model's family and the guides'
(``guides.jmvae``) encoders follow from one config; a model never uses them itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

from mmvae_zoo.models.blocks import Block, ImageDecoderNet, ImageEncoderNet
from mmvae_zoo.models.config import NetConfig
from mmvae_zoo.models.registration import register
from mmvae_zoo.models.vlvae import ALPHA_EPS, PIXEL_EPS, MeanBeta, batch_size_of

FAMILIES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "beta")


@dataclass
class JMVAEConfig(NetConfig):
    """Network shapes of the JMVAE and its guides (defaults: the paper's MNIST networks, 4.2): the
    fields of ``NetConfig`` (``channels`` to ``grid`` used by the conv family only, ``concentration``
    by the Beta likelihood only), the network family and the image likelihood."""

    image_shape: tuple = (1, 28, 28)
    text_length: int = 1
    z_dim: int = 64
    hidden: int = 512           # width of every dense layer and of each modality's encoding
    family: str = "mlp"         # "mlp" (paper's MNIST MLPs) or "conv" (VLVAE image blocks)
    likelihood: str = "bernoulli"  # p(x|z): "bernoulli" (binary images) or "beta" (grey levels)

    def __post_init__(self):
        super().__post_init__()
        if self.family not in FAMILIES:
            raise ValueError(f"unknown JMVAE network family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown image likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")

    @property
    def num_words(self) -> int:
        return len(self.vocab)


class Bernoulli(dist.Bernoulli):
    """Bernoulli(sigmoid(logits)) with log p(x) = x * logits - softplus(logits), torch's -BCE(logits, x)
    computed in one temporary instead of several: on the K x B images of an importance-weighted bound
    it is a sixth faster and spares the page faults of the larger allocations."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return F.softplus(logits).neg_().addcmul_(logits, value)


class MLP(Block, nn.Sequential):
    """Dense layers ``sizes[0] -> ... -> sizes[-1]`` with leaky ReLU after every hidden layer."""

    def __init__(self, sizes: list[int]):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


def check_inputs(c: JMVAEConfig, x, w) -> None:
    """A clear ValueError for images of the wrong shape and texts of the wrong length or word ids."""
    if x is not None and tuple(x.shape[-3:]) != c.image_shape:
        raise ValueError(f"expected images of shape {list(c.image_shape)}, got {list(x.shape[-3:])}")
    if w is not None:
        if w.shape[-1] != c.text_length:
            raise ValueError(f"expected texts of {c.text_length} word ids, got {w.shape[-1]}")
        if w.numel() and (w.min() < 0 or w.max() > c.num_words):
            raise ValueError(f"word ids must lie in 0..{c.num_words} (0 = padding), got {w.min().item()}.."
                             f"{w.max().item()}")


def one_hot_words(c: JMVAEConfig, w: torch.Tensor) -> torch.Tensor:
    """Texts [..., L] as concatenated one-hot words [..., L * V]; padding is an all-zero word."""
    return F.one_hot(w, c.num_words + 1)[..., 1:].flatten(-2).float()


def image_branch(c: JMVAEConfig) -> nn.Module:
    """The image's encoder branch, x [..., C, H, W] -> encoding [..., hidden]."""
    if c.family == "mlp":
        pixels = c.image_shape[0] * c.image_shape[1] * c.image_shape[2]
        return nn.Sequential(nn.Flatten(-3), MLP([pixels, c.hidden, c.hidden]), nn.LeakyReLU(0.2))
    return nn.Sequential(ImageEncoderNet(c.image_shape, c.channels, c.num_down, c.hidden, c.stem_kernel,
                                         c.stem_stride), nn.LeakyReLU(0.2))


def text_branch(c: JMVAEConfig) -> nn.Module:
    """The text's encoder branch, one-hot words [..., L * V] -> encoding [..., hidden]."""
    return nn.Sequential(MLP([c.text_length * c.num_words, c.hidden, c.hidden]), nn.LeakyReLU(0.2))


class JMVAE(nn.Module):
    def __init__(self, config: JMVAEConfig):
        super().__init__()
        self.config = c = config
        if c.family == "mlp":
            pixels = c.image_shape[0] * c.image_shape[1] * c.image_shape[2]
            self.image_decoder = nn.Sequential(MLP([c.z_dim, c.hidden, c.hidden, c.hidden, pixels]),
                                               nn.Unflatten(-1, c.image_shape))
        else:
            self.image_decoder = ImageDecoderNet(c.image_shape, c.channels, c.num_down, c.z_dim, c.grid,
                                                 c.stem_kernel, c.stem_stride)
        self.text_decoder = nn.Sequential(MLP([c.z_dim, c.hidden, c.hidden, c.hidden, c.text_length * c.num_words]),
                                          nn.Unflatten(-1, (c.text_length, c.num_words)))

    @property
    def model(self) -> "JMVAE":
        """The Pyro model: this module, whose ``forward`` it is (see ``models.vlvae.VLVAE.model``)."""
        return self

    def prior_distribution(self, batch_size: int) -> dist.Distribution:
        """p(z) = N(0, I) with batch shape [batch_size]."""
        like = self.text_decoder[0][0].weight.new_zeros(batch_size, self.config.z_dim)
        return dist.Normal(like, 1.0).to_event(1)

    def image_likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z): Bernoulli(sigmoid(logits)) per pixel, or the VLVAE's Beta(c * alpha, c * (1 - alpha))."""
        logits = self.image_decoder(z)
        if self.config.likelihood == "bernoulli":
            return Bernoulli(logits=logits).to_event(3)
        alpha = torch.sigmoid(logits).clamp(ALPHA_EPS, 1 - ALPHA_EPS)
        return MeanBeta(alpha, self.config.concentration).to_event(3)

    def text_likelihood(self, z: torch.Tensor, w: torch.Tensor) -> dist.Distribution:
        """p(w|z) = prod_t Cat(w_t | softmax(logits_t(z))) over the words; padding is masked out.

        Its classes are ``w - 1`` (word ids 1..V are classes 0..V-1); ``model`` scores padding as class 0,
        masked out.
        """
        return dist.Categorical(logits=self.text_decoder(z)).mask(w != 0).to_event(1)

    def forward(self, x=None, w=None, *, prior: dist.Distribution | None = None, annealing: float = 1.0,
                x_weight: float = 1.0, y_weight: float = 1.0):
        """p(z) p(x|z) p(w|z) (Eq. 3's generative side), observed on the given modalities.

        ``prior`` replaces p(z) (q(z|w) for the single conditional bound, Eq. 9); ``annealing``
        scales the z site (KL warm-up; the guide's z site gets the same scale); ``x_weight`` and
        ``y_weight`` scale the likelihoods (1 in the paper). Sites: "z", "x", "y" (the text).
        """
        register("JMVAE", self)
        check_inputs(self.config, x, w)
        batch = batch_size_of(x, w)
        with pyro.plate("data", batch, dim=-1):
            with poutine.scale(scale=annealing):
                z = pyro.sample("z", prior if prior is not None else self.prior_distribution(batch))
            if x is not None:
                obs = x if self.config.likelihood == "bernoulli" else x.clamp(PIXEL_EPS, 1 - PIXEL_EPS)
                with poutine.scale(scale=x_weight):
                    pyro.sample("x", self.image_likelihood(z), obs=obs)
            if w is not None:
                with poutine.scale(scale=y_weight):
                    pyro.sample("y", self.text_likelihood(z, w), obs=(w - 1).clamp(min=0))
        return z

    @torch.no_grad()
    def generate(self, z: torch.Tensor, greedy: bool = True):
        """Images (the likelihood's means, [..., C, H, W]) and texts (word ids [..., L]) decoded from ``z``."""
        logits = self.text_decoder(z)
        words = logits.argmax(-1) if greedy else dist.Categorical(logits=logits).sample()
        return torch.sigmoid(self.image_decoder(z)), words + 1
