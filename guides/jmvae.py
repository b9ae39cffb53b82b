"""JMVAE inference networks (paper sections 3.2-3.3 and 4.2): the joint encoder q(z|x,w) and the
two ways of inferring z from one modality.

- ``JointGuide``: q(z|x,w) = N(mu, diag sigma^2) from the image and text encoder branches, their
  tops concatenated and mapped to z (paper 4.2: "shared the top of each layers").
- JMVAE-zero (3.3): q(z|x) and q(z|w) are the joint encoder with the missing modality's input
  set to zero (``ZeroedGuide``); nothing extra is trained.
- JMVAE-kl (Eq. 4): separate encoders q(z|x) and q(z|w) (``UnimodalGuide``), held with the joint
  encoder by ``KLGuide`` and trained with the model by ``guides.elbos.JMVAEKLELBO``. Built from a
  ``VLVAEConfig`` instead, ``KLGuide`` holds the VLVAE's q(z|x,y), q(z|x) and Gaussian q(z|y): the
  JMVAE objective applied to the VLVAE model (VLVAE paper, section 3).

The text w is the guides' second argument, as it is the model's (``inputs`` "y").
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from mmvae_zoo.guides import encoders
from mmvae_zoo.guides.base import Guide
from mmvae_zoo.guides.text import TextGuide
from mmvae_zoo.models.jmvae import JMVAEConfig, check_inputs, image_branch, one_hot_words, text_branch

MODALITIES = ("x", "w")
INPUTS = {"x": "x", "w": "y"}  # a modality -> the guide argument that carries it


class GaussianOut(nn.Module):
    """A linear map of an encoding to the mean and scale (softplus) of a diagonal Gaussian over z."""

    def __init__(self, in_dim: int, z_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * z_dim)

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = self.linear(h).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + 1e-4).to_event(1)


class JointGuide(Guide):
    """q(z|x,w): the paper's multimodal encoder."""

    def __init__(self, config: JMVAEConfig):
        super().__init__()
        self.config = config
        self.image = image_branch(config)
        self.text = text_branch(config)
        self.head = GaussianOut(2 * config.hidden, config.z_dim)

    def encode(self, x_input: torch.Tensor, w_input: torch.Tensor) -> dist.Distribution:
        """q(z|.) from the network inputs: images [B, C, H, W] and one-hot words [B, L * V] (either may be zeros)."""
        return self.head(torch.cat([self.image(x_input), self.text(w_input)], dim=-1))

    def distribution(self, x, w):
        if x is None or w is None:
            raise ValueError("q(z|x,w) needs both images x and texts w")
        check_inputs(self.config, x, w)
        return self.encode(x, one_hot_words(self.config, w))


class ZeroedGuide(Guide):
    """JMVAE-zero's q(z|x) (``keep="x"``) or q(z|w) (``keep="w"``): the joint encoder with the other
    modality's input set to zero (paper 3.3). Shares the joint encoder's parameters."""

    def __init__(self, joint: JointGuide, keep: str):
        super().__init__()
        if keep not in MODALITIES:
            raise ValueError(f"keep must be one of {MODALITIES}, got {keep!r}")
        self.joint, self.keep = joint, keep
        self.config, self.inputs = joint.config, INPUTS[keep]

    def distribution(self, x, w):
        c = self.joint.config
        if self.keep == "x":
            if x is None:
                raise ValueError("q(z|x) needs images x")
            check_inputs(c, x, None)
            return self.joint.encode(x, x.new_zeros(x.shape[:-3] + (c.text_length * c.num_words,)))
        if w is None:
            raise ValueError("q(z|w) needs texts w")
        check_inputs(c, None, w)
        words = one_hot_words(c, w)
        return self.joint.encode(words.new_zeros(w.shape[:-1] + c.image_shape), words)


class UnimodalGuide(Guide):
    """JMVAE-kl's q(z|x) (``modality="x"``) or q(z|w) (``modality="w"``): its own encoder branch and head."""

    def __init__(self, config: JMVAEConfig, modality: str):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.config, self.modality, self.inputs = config, modality, INPUTS[modality]
        self.branch = image_branch(config) if modality == "x" else text_branch(config)
        self.head = GaussianOut(config.hidden, config.z_dim)

    def distribution(self, x, w):
        given = x if self.modality == "x" else w
        if given is None:
            raise ValueError(f"q(z|{self.modality}) needs {'images x' if self.modality == 'x' else 'texts w'}")
        if self.modality == "x":
            check_inputs(self.config, x, None)
            return self.head(self.branch(x))
        check_inputs(self.config, None, w)
        return self.head(self.branch(one_hot_words(self.config, w)))


def unimodal_guides(config) -> tuple[Guide, Guide]:
    """Gaussian q(z|x) and q(z|w) with encoders of their own, for the JMVAE (``UnimodalGuide``) or, from a
    ``VLVAEConfig``, for the VLVAE (its image guide and its text guide without a flow)."""
    if isinstance(config, JMVAEConfig):
        return UnimodalGuide(config, "x"), UnimodalGuide(config, "w")
    return encoders.ImageGuide(config), TextGuide(config, num_flows=0)


class KLGuide(Guide):
    """JMVAE-kl's inference networks: q(z|x,w) (``joint``, what the guide samples from) with its own q(z|x)
    (``image``) and q(z|w) (``text``). They are submodules so that ``SVI`` and Pyro's ELBO modules train all
    three; ``guides.elbos.JMVAEKLELBO`` reaches the unimodal two through its KL terms (Eq. 4). From a
    ``VLVAEConfig`` the three are the VLVAE's encoders (``unimodal_guides``)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.joint = JointGuide(config) if isinstance(config, JMVAEConfig) else encoders.JointGuide(config)
        self.image, self.text = unimodal_guides(config)

    def distribution(self, x, w):
        return self.joint.distribution(x, w)
