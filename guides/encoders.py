"""Gaussian encoders: q(z|x) from the image (trains the VLVAE, Eq. 1) and q(z|x,y) from both.

Paper appendix 5.1: a modality's encoding (CycleGAN-like ResNet for images, GRU for text,
200-d each) is concatenated and passed to the shared encoder network, which outputs the
mean and scale of a diagonal Gaussian.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch

from mmvae_zoo.guides.base import Guide
from mmvae_zoo.models.blocks import GaussianHead, ImageEncoderNet, TextEncoderNet
from mmvae_zoo.models.vlvae import VLVAEConfig


def image_encoder(c: VLVAEConfig) -> ImageEncoderNet:
    return ImageEncoderNet(c.image_shape, c.channels, c.num_down, c.hidden, c.stem_kernel, c.stem_stride)


def text_encoder(c: VLVAEConfig) -> TextEncoderNet:
    return TextEncoderNet(len(c.vocab) + 1, c.hidden)


class ImageGuide(Guide):
    """q(z|x): marginal inference from the image only."""

    inputs = "x"

    def __init__(self, config: VLVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = image_encoder(config)
        self.head = GaussianHead(config.hidden, config.z_dim, config.hidden)

    def distribution(self, x, y=None):
        if x is None:
            raise ValueError("q(z|x) needs images x")
        return dist.Normal(*self.head(self.encoder(x))).to_event(1)


class JointGuide(Guide):
    """q(z|x,y): joint inference, image and text encodings concatenated (paper Fig. 7)."""

    def __init__(self, config: VLVAEConfig):
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder(config)
        self.text_encoder = text_encoder(config)
        self.head = GaussianHead(2 * config.hidden, config.z_dim, config.hidden)

    def distribution(self, x, y):
        if x is None or y is None:
            raise ValueError("q(z|x,y) needs both images x and texts y")
        h = torch.cat([self.image_encoder(x), self.text_encoder(y)], dim=-1)
        return dist.Normal(*self.head(h)).to_event(1)
