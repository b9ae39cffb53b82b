"""The learned aggregate prior q(z) (VLVAE paper, Table 2 and appendix 5.1.1).

A flow fitted to the aggregate of the image posteriors, E_{p_D(x)}[q(z|x)], by the same
loss as q_Agg(z|y) (``guides.objectives.aggregate_loss``); once fitted it replaces N(0, I)
as the VLVAE's prior (``VLVAE.prior_flow``) for sampling and evaluation.
"""
from __future__ import annotations

from flows import AffineCouplingFlow
from guides.base import Guide
from models.vlvae import VLVAEConfig, batch_size_of


class AggregatePrior(Guide):
    """q(z): an unconditional coupling flow on N(0, I); ignores both modalities."""

    def __init__(self, config: VLVAEConfig, num_flows: int = 6, flow_hidden: tuple = (200, 200)):
        super().__init__()
        self.flow = AffineCouplingFlow(config.z_dim, num_flows, flow_hidden)
        self.z_dim = config.z_dim

    def distribution(self, x, y):
        like = next(self.flow.parameters()).new_zeros(batch_size_of(x, y), self.z_dim)
        return self.flow.distribution(like)
