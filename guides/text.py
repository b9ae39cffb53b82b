"""Text inference q(z|y) (VLVAE paper, sections 2-3 and appendix 5.1.1).

A GRU text encoding gives a diagonal Gaussian (the shared encoder head); the flow variant,
the paper's choice and the default, pushes that Gaussian through six text-conditioned
coupling flows (Eq. 7-8 with every scale and shift network also seeing the encoding).
Whether q(z|y) approximates the true posterior p(z|y) (Eq. 3) or the aggregate posterior
q^y(z) (Eq. 5) is decided by the loss that trains it (``Trace_ELBO`` on p(z) p(y|z), or
``guides.elbos.AggregateELBO``), not here.
"""
from __future__ import annotations

import pyro.distributions as dist

from mmvae_zoo.flows import ConditionalAffineCouplingFlow
from mmvae_zoo.guides.base import Guide
from mmvae_zoo.guides.encoders import text_encoder
from mmvae_zoo.models.blocks import GaussianHead
from mmvae_zoo.models.vlvae import VLVAEConfig


class TextGuide(Guide):
    """q(z|y): a Gaussian from the text encoder, optionally followed by a conditional flow."""

    inputs = "y"

    def __init__(self, config: VLVAEConfig, num_flows: int = 6, flow_hidden: tuple = (200, 200)):
        super().__init__()
        self.config = config
        self.encoder = text_encoder(config)
        self.head = GaussianHead(config.hidden, config.z_dim, config.hidden)
        self.flow = (ConditionalAffineCouplingFlow(config.z_dim, config.hidden, num_flows, flow_hidden)
                     if num_flows else None)

    def distribution(self, x, y):
        if y is None:
            raise ValueError("q(z|y) needs texts y")
        h = self.encoder(y)
        base = dist.Normal(*self.head(h)).to_event(1)
        return self.flow.distribution(base, h) if self.flow is not None else base
