"""The learned aggregate prior q(z) (VLVAE paper, Table 2 and appendix 5.1.1).

A flow fitted to the aggregate of the image posteriors, E_{p_D(x)}[q(z|x)], by the same
objective as q_Agg(z|y) (``guides.elbos.AggregateELBO``). It is the VLVAE's prior by
construction: ``VLVAE(config, prior=q)`` samples and scores z from q in place of N(0, I), and
the ``prior_agg`` scheme trains q as the guide of that model.
"""
from __future__ import annotations

import torch

from mmvae_zoo.flows import AffineCouplingFlow
from mmvae_zoo.guides.base import Guide
from mmvae_zoo.models.vlvae import VLVAEConfig, batch_size_of


class AggregatePrior(Guide):
    """q(z): an unconditional coupling flow on N(0, I); reads neither modality."""

    inputs = ""

    def __init__(self, config: VLVAEConfig, num_flows: int = 6, flow_hidden: tuple = (200, 200)):
        super().__init__()
        self.config = config
        self.flow = AffineCouplingFlow(config.z_dim, num_flows, flow_hidden)

    def batched(self, batch_size: int) -> torch.distributions.Distribution:
        """q(z) with batch shape [batch_size] (as the VLVAE's prior)."""
        like = next(self.flow.parameters()).new_zeros(batch_size, self.config.z_dim)
        return self.flow.distribution(like)

    def distribution(self, x, y):
        return self.batched(batch_size_of(x, y))
