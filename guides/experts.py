r"""Guides built from one Gaussian expert per modality, for any subset of the modalities present.

- ``ProductOfExperts`` (MVAE, Wu & Goodman 2018): q(z|X) ∝ p(z) prod_{m in X} q̃(z|x_m), the prior
  N(0, I) an expert too. A product of Gaussians is Gaussian with the experts' precisions T_m = 1/s_m^2
  added, T = sum_m T_m, and the precision-weighted mean, mu = sum_m T_m mu_m / T. It is computed from
  log T_m (a softmax over the experts gives T_m / T): no precision is ever formed, so neither a tiny
  nor a huge expert scale overflows.
- ``MixtureOfExperts`` (MMVAE, Shi et al. 2019): q(z|x,y) = 1/2 q(z|x) + 1/2 q(z|y), Pyro's
  ``MixtureOfDiagNormals`` (reparameterised samples, its log density the log-mean of the experts'
  densities); given one modality, that modality's expert. The stratified objective that trains it
  draws from each expert in turn (``guides.elbos.MMVAEELBO``).
- ``GivenOnly``: either guide given one modality only, as a guide of that modality (q(z|x) or
  q(z|y) for the evaluation's bounds and for generation across modalities).

The experts are the zoo's unimodal Gaussian guides (``guides.jmvae.unimodal_guides``): for the VLVAE
its image guide q(z|x) and its text guide q(z|y) without a flow, for the JMVAE its unimodal encoders.
Both guides hold them as ``image`` and ``text``.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch

from mmvae_zoo.guides.base import Guide
from mmvae_zoo.guides.jmvae import unimodal_guides


class _Experts(Guide):
    """A guide of ``image`` and ``text`` experts; subclasses combine the experts of the modalities given."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.image, self.text = unimodal_guides(config)

    def experts(self, x, y) -> dict[str, dist.Distribution]:
        """The Gaussian experts of the modalities given (batch [B], event [z_dim]) by name, "x" before "y"."""
        if x is None and y is None:
            raise ValueError(f"{type(self).__name__} needs images x, texts y or both")
        return {name: expert.distribution(x, y) for name, expert, given in (("x", self.image, x), ("y", self.text, y))
                if given is not None}


class ProductOfExperts(_Experts):
    """MVAE's q(z|X) ∝ p(z) prod_m q̃(z|x_m) for the modalities X given, the prior N(0, I) included."""

    def distribution(self, x, y):
        return product(list(self.experts(x, y).values()))


def product(experts: list[dist.Distribution]) -> dist.Distribution:
    """The normalised product N(0, I) prod_m N(mu_m, s_m^2) of diagonal Gaussians (batch [B], event [z_dim]):
    precision T = 1 + sum_m T_m with T_m = s_m^-2, mean sum_m T_m mu_m / T, from the log precisions."""
    locs = torch.stack([q.base_dist.loc for q in experts])
    log_precisions = torch.stack([-2 * q.base_dist.scale.log() for q in experts])
    log_precisions = torch.cat([log_precisions.new_zeros(log_precisions[:1].shape), log_precisions])  # the prior
    share = log_precisions.softmax(0)  # T_m / T
    loc = (share[1:] * locs).sum(0)
    scale = torch.exp(-0.5 * log_precisions.logsumexp(0))  # T^(-1/2)
    return dist.Normal(loc, scale).to_event(1)


class MixtureOfExperts(_Experts):
    """MMVAE's q(z|x,y) = 1/2 q(z|x) + 1/2 q(z|y); given one modality, its expert alone."""

    def distribution(self, x, y):
        return mixture(list(self.experts(x, y).values()))


class GaussianMixture(dist.MixtureOfDiagNormals):
    """Pyro's mixture of diagonal Gaussians (reparameterised samples) with its mean, sum_m pi_m mu_m."""

    @property
    def mean(self):
        return (self.component_logits.softmax(-1).unsqueeze(-1) * self.locs).sum(-2)


def mixture(experts: list[dist.Distribution]) -> dist.Distribution:
    """The uniform mixture of diagonal Gaussians (batch [B], event [z_dim]); of one, that Gaussian."""
    if len(experts) == 1:
        return experts[0]
    locs = torch.stack([q.base_dist.loc for q in experts], dim=-2)  # [B, M, z_dim]
    scales = torch.stack([q.base_dist.scale for q in experts], dim=-2)
    return GaussianMixture(locs, scales, locs.new_zeros(locs.shape[:-1]))


def components(q: dist.Distribution) -> list[dist.Distribution]:
    """The Gaussians of a ``mixture`` (a Gaussian is its own one component)."""
    if not isinstance(q, dist.MixtureOfDiagNormals):
        return [q]
    return [dist.Normal(q.locs[..., m, :], q.coord_scale[..., m, :]).to_event(1) for m in range(q.locs.shape[-2])]


class GivenOnly(Guide):
    """``guide`` given only the image (``keep="x"``) or only the text (``keep="y"``): q(z|x) or q(z|y) of a
    product or mixture of experts, as a guide of that one modality. Shares the guide's parameters."""

    def __init__(self, guide: _Experts, keep: str):
        super().__init__()
        if keep not in ("x", "y"):
            raise ValueError(f"keep must be 'x' or 'y', got {keep!r}")
        self.combined, self.inputs, self.config = guide, keep, guide.config

    def distribution(self, x, y):
        return self.combined.distribution(x, None) if self.inputs == "x" else self.combined.distribution(None, y)
