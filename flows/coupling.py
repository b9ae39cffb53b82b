r"""RealNVP-style affine coupling flows (Cremer & Kushman, appendix 5.1.1, Eq. 7-8).

z in R^D is split into z1 = z[:D//2] and z2 = z[D//2:]; one flow is

    z1' = z1 * s1(z2) + m1(z2)                      (Eq. 7)
    z2' = z2 * s2(z1') + m2(z1')                    (Eq. 8)

with log|det dz'/dz| = sum_i log s1(z2)_i + sum_j log s2(z1')_j.  Six flows are chained
and pushed forward from a base density, so  log q(z) = log p_base(x) - sum log|det|
with x = T^{-1}(z).  In the text-conditioned variant every s and m also sees a context c.

Each half-step is Pyro's (Conditional)AffineCoupling, which keeps the first `split_dim`
coordinates and transforms the rest; a parameter-free `_Swap` moves the half to be
transformed to the back.  The networks output log s, clipped to [LOG_SCALE_MIN,
LOG_SCALE_MAX] (gradients pass through the clip), and their last layer starts at zero,
so a fresh flow is the identity.
"""
from typing import Sequence

import torch
from torch import nn
from torch.distributions import Transform, constraints

import pyro.distributions as dist
from pyro.distributions.transforms import AffineCoupling, ConditionalAffineCoupling
from pyro.nn import ConditionalDenseNN, DenseNN

# Per half-step scale in [e^-3, e^3] ~ [0.05, 20]; each coordinate passes through
# `num_flows` half-steps, so with six flows its total scale lies in e^(+-18).
LOG_SCALE_MIN = -3.0
LOG_SCALE_MAX = 3.0


class _Swap(Transform):
    """Bijection [x[:k], x[k:]] -> [x[k:], x[:k]] on the last dim; log|det| = 0."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def _call(self, x):
        return torch.cat([x[..., self.k :], x[..., : self.k]], dim=-1)

    def _inverse(self, y):
        k = y.size(-1) - self.k
        return torch.cat([y[..., k:], y[..., :k]], dim=-1)

    def log_abs_det_jacobian(self, x, y):
        return x.new_zeros(x.shape[:-1])


def _halves(dim: int):
    if dim < 2:
        raise ValueError(f"a coupling flow needs dim >= 2, got {dim}")
    return dim // 2, dim - dim // 2


def _couplings(dim: int, num_flows: int, hypernet, coupling) -> nn.ModuleList:
    """Per flow two couplings: Eq. 7 (keeps z2, moves z1), then Eq. 8 (keeps z1', moves z2).

    hypernet(keep, param_dims) builds the s/m network; its last layer starts at zero."""
    n1, n2 = _halves(dim)
    layers = nn.ModuleList()
    for _ in range(num_flows):
        for keep, move in ((n2, n1), (n1, n2)):
            net = hypernet(keep, [move, move])
            nn.init.zeros_(net.layers[-1].weight)
            nn.init.zeros_(net.layers[-1].bias)
            clip = dict(log_scale_min_clip=LOG_SCALE_MIN, log_scale_max_clip=LOG_SCALE_MAX)
            layers.append(coupling(keep, net, **clip))
    return layers


def _with_swaps(couplings, dim: int) -> list:
    """[swap, coupling, swap, coupling, ...]: each swap brings the half to move to the back."""
    n1, n2 = _halves(dim)
    out = []
    for i, coupling in enumerate(couplings):
        out += [_Swap(n1 if i % 2 == 0 else n2), coupling]
    return out


class AffineCouplingFlow(nn.Module):
    """Unconditional flow q(z) = T_# N(0, I), T = `num_flows` x (Eq. 7, Eq. 8).

    Used as the learned aggregate prior q(z) (paper Table 2)."""

    def __init__(self, dim: int, num_flows: int = 6, hidden_dims: Sequence[int] = (200, 200)):
        super().__init__()
        self.dim = dim
        self.couplings = _couplings(
            dim, num_flows, lambda keep, out: DenseNN(keep, list(hidden_dims), out), AffineCoupling
        )

    def transforms(self) -> list:
        """The Pyro transforms, base -> z direction."""
        return _with_swaps(self.couplings, self.dim)

    def distribution(self, like: torch.Tensor) -> dist.TransformedDistribution:
        """q(z) with batch_shape like.shape[:-1]; device and dtype follow `like`."""
        if like.size(-1) != self.dim:
            raise ValueError(f"expected last dim {self.dim}, got shape {tuple(like.shape)}")
        base = dist.Normal(like.new_zeros(like.shape), like.new_ones(like.shape)).to_event(1)
        return dist.TransformedDistribution(base, self.transforms())


class ConditionalAffineCouplingFlow(nn.Module):
    """Text-conditioned flow q(z|y) = T_c # base: Eq. 7-8 with s(., c), m(., c) (paper 5.1.1).

    The base (a Gaussian from the text encoder) and the context c are given per call."""

    def __init__(
        self, dim: int, context_dim: int, num_flows: int = 6, hidden_dims: Sequence[int] = (200, 200)
    ):
        super().__init__()
        self.dim, self.context_dim = dim, context_dim
        self.couplings = _couplings(
            dim,
            num_flows,
            lambda keep, out: ConditionalDenseNN(keep, context_dim, list(hidden_dims), out),
            ConditionalAffineCoupling,
        )

    def transforms(self, context: torch.Tensor) -> list:
        """The Pyro transforms conditioned on `context` [..., context_dim], base -> z direction.

        Pyro's ConditionalDenseNN expands the context over leading (particle) dims of z."""
        if context.size(-1) != self.context_dim:
            raise ValueError(f"expected context dim {self.context_dim}, got shape {tuple(context.shape)}")
        return _with_swaps([c.condition(context) for c in self.couplings], self.dim)

    def distribution(
        self, base: torch.distributions.Distribution, context: torch.Tensor
    ) -> dist.TransformedDistribution:
        """base: event_shape [dim], batch_shape [B]; context: [B, context_dim]."""
        if tuple(base.event_shape) != (self.dim,):
            raise ValueError(f"expected base event_shape ({self.dim},), got {tuple(base.event_shape)}")
        return dist.TransformedDistribution(base, self.transforms(context))
