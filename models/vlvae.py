"""The Vision-Language VAE (Cremer & Kushman, section 2 and appendix 5.1) as a Pyro model.

Generative model p(z) p(x|z) p(y|z): z ~ p(z) (N(0, I), or a learned flow q(z) for Table 2);
a shared decoder maps z to a 200-d vector h, from which the image decoder gives
x ~ Beta(c * alpha, c * (1 - alpha)) per pixel (c = 100, appendix 5.1.2) and the GRU text
decoder gives y word by word. A missing modality is left out of the model, so
``vlvae(x, None)`` is p(z) p(x|z) and ``vlvae(None, y)`` is p(z) p(y|z).

The module is the Pyro model (its ``forward``; ``vlvae.model`` is the module itself), so
``SVI(vlvae, guide, ...)`` and ``Trace_ELBO()(vlvae, guide)`` both see its parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from mmvae_zoo.models.blocks import ImageDecoderNet, ResidualMLP
from mmvae_zoo.models.config import NetConfig
from mmvae_zoo.models.registration import register
from mmvae_zoo.models.text import TextDecoderNet

PIXEL_EPS = 1e-3  # pixels are clamped into (eps, 1 - eps): the Beta density is infinite at 0 and 1
ALPHA_EPS = 1e-4


class MeanBeta(dist.Beta):
    """Beta(c * alpha, c * (1 - alpha)): mean ``alpha``, concentration ``c`` (the pixel likelihood, appendix 5.1.2).

    log p(x) = (c alpha - 1) log x + (c (1 - alpha) - 1) log(1 - x) - lgamma(c alpha) - lgamma(c (1 - alpha))
    + lgamma(c), written out: torch's Beta stacks x with 1 - x and both concentrations and takes lgamma of their
    sum per pixel, which made the same density two and a half times as slow, forward and backward.
    """

    def __init__(self, alpha: torch.Tensor, concentration: float, validate_args=None):
        self.alpha, self.c = alpha, float(concentration)
        super().__init__(self.c * alpha, self.c * (1 - alpha), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return MeanBeta(self.alpha.expand(batch_shape), self.c, validate_args=self._validate_args)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a = self.c * self.alpha
        b = self.c - a
        return ((a - 1) * value.log() + (b - 1) * torch.log1p(-value) - torch.lgamma(a) - torch.lgamma(b)
                + math.lgamma(self.c))


@dataclass
class VLVAEConfig(NetConfig):
    """Network shapes shared by the VLVAE and its guides (defaults: the paper's, appendix 5.1): the
    fields of ``NetConfig`` (``hidden`` is also the shared decoder's output and the GRU states) and
    the text decoder's dropout."""

    dropout: float = 0.5       # text decoder readout


def batch_size_of(x, y) -> int:
    if x is None and y is None:
        raise ValueError("give at least one modality (image x or text y)")
    return (x if x is not None else y).shape[0]


class VLVAE(nn.Module):
    """p(z) p(x|z) p(y|z). ``prior``, when given, is the learned aggregate prior q(z) in place of
    N(0, I) (paper Table 2; ``guides.prior.AggregatePrior``): any module whose ``batched(B)`` is a
    distribution over z with batch shape [B]."""

    def __init__(self, config: VLVAEConfig, prior: nn.Module | None = None):
        super().__init__()
        self.config = config
        c = config
        self.decoder = ResidualMLP(c.z_dim, c.hidden, c.hidden, num_layers=5, num_residual=2)
        self.image_decoder = ImageDecoderNet(c.image_shape, c.channels, c.num_down, c.hidden, c.grid,
                                             c.stem_kernel, c.stem_stride)
        self.text_decoder = TextDecoderNet(len(c.vocab) + 1, c.text_length, c.hidden, c.hidden, dropout=c.dropout)
        self.prior = prior

    @property
    def model(self) -> "VLVAE":
        """The Pyro model: this module, whose ``forward`` it is (a module, so Pyro's ELBO modules see its parameters)."""
        return self

    def likelihood_networks(self) -> nn.ModuleDict:
        """The networks of p(x|z) p(y|z), every part but a learned prior, keyed as in this module's state dict:
        what a learned prior is fitted to, frozen."""
        return nn.ModuleDict({name: m for name, m in self.named_children() if name != "prior"})

    def prior_distribution(self, batch_size: int) -> dist.Distribution:
        """p(z) with batch shape [batch_size]: N(0, I), or the learned q(z)."""
        if self.prior is not None:
            return self.prior.batched(batch_size)
        like = self.decoder.inp.weight.new_zeros(batch_size, self.config.z_dim)
        return dist.Normal(like, 1.0).to_event(1)

    def image_likelihood(self, h: torch.Tensor) -> dist.Distribution:
        """p(x|z) = prod_pixels Beta(c * alpha, c * (1 - alpha)), alpha from the image decoder."""
        alpha = torch.sigmoid(self.image_decoder(h)).clamp(ALPHA_EPS, 1 - ALPHA_EPS)
        return MeanBeta(alpha, self.config.concentration).to_event(3)

    def text_likelihood(self, h: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """p(y|z) = prod_t Cat(y_t | y_<t, h), teacher forced on ``y``; padding is masked out."""
        return dist.Categorical(logits=self.text_decoder(h, y)).mask(y != 0).to_event(1)

    def image_log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) per image ([B]): what semi-amortised inference climbs."""
        target = x.clamp(PIXEL_EPS, 1 - PIXEL_EPS)
        return self.image_likelihood(self.decoder(z)).log_prob(target) + self.prior_distribution(len(z)).log_prob(z)

    def forward(self, x=None, y=None, *, prior: dist.Distribution | None = None, annealing: float = 1.0,
                x_weight: float = 1.0, y_weight: float = 1.0):
        """p(z) p(x|z) p(y|z) (the generative side of Eq. 1), observed on the given modalities.

        ``prior`` replaces p(z) for this call (e.g. q(z|y) for Eq. 6); ``annealing`` scales the z
        site (KL warm-up, as in Pyro's DMM example: the guide's z site gets the same scale),
        ``x_weight`` and ``y_weight`` scale the likelihoods (appendix 5.3.1). All default to the
        true model. The guides take the same arguments.
        """
        register("VLVAE", self)
        batch = batch_size_of(x, y)
        with pyro.plate("data", batch, dim=-1):
            with poutine.scale(scale=annealing):
                z = pyro.sample("z", prior if prior is not None else self.prior_distribution(batch))
            h = self.decoder(z)
            if x is not None:
                with poutine.scale(scale=x_weight):
                    pyro.sample("x", self.image_likelihood(h), obs=x.clamp(PIXEL_EPS, 1 - PIXEL_EPS))
            if y is not None:
                with poutine.scale(scale=y_weight):
                    pyro.sample("y", self.text_likelihood(h, y), obs=y)
        return z

    @torch.no_grad()
    def generate(self, z: torch.Tensor, greedy: bool = True):
        """Images (the Beta means alpha, [..., 3, H, W]) and texts ([..., L]) decoded from ``z``."""
        h = self.decoder(z)
        return torch.sigmoid(self.image_decoder(h)), self.text_decoder.sample(h, greedy=greedy)
