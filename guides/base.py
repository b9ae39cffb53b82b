"""What every guide of the zoo is: an ``nn.Module`` whose ``forward`` is a Pyro guide over z.

A guide is built from the network config of the model it serves (``config``), reads the
modalities named by ``inputs`` ("x" the image, "y" the text, "xy" both, "" neither: the learned
prior), and gives ``distribution(x, y)``, q(z | its inputs) with batch shape [B] and event
[z_dim]. Its ``forward(x, y, **model_kwargs)`` samples site "z" from it in the "data" plate and
takes the model's arguments, as Pyro's ``SVI`` passes the same to both; only ``annealing`` (the
KL warm-up, the scale of the model's z site) concerns it.
"""
from __future__ import annotations

import dataclasses

import pyro
import pyro.distributions as dist
from pyro import poutine
from torch import nn

from mmvae_zoo.models.registration import register


class Guide(nn.Module):
    """q(z | ``inputs``) for models built from ``config``; subclasses set both and define ``distribution``."""

    config = None
    inputs = "xy"

    def distribution(self, x, y) -> dist.Distribution:
        raise NotImplementedError

    @property
    def guide(self) -> "Guide":
        """The Pyro guide: this module, whose ``forward`` it is (a module, so Pyro's ELBO modules see its parameters)."""
        return self

    def forward(self, x=None, y=None, *, annealing: float = 1.0, **model_kwargs):
        """Site "z" ~ q(z|.) in the "data" plate, scaled by ``annealing`` like the model's z site.

        ``model_kwargs`` are the model's other arguments (likelihood weights), unused here.
        """
        register(type(self).__name__, self)
        return draw_z(self.distribution(x, y), annealing=annealing)


def draw_z(q: dist.Distribution, x=None, y=None, *, annealing: float = 1.0, **model_kwargs):
    """Site "z" ~ q as a guide's ``forward`` draws it, scaled by ``annealing``, for a q already computed:
    with ``functools.partial(draw_z, q)`` a Pyro guide that runs no network (the data are ignored)."""
    with poutine.scale(scale=annealing):
        return sample_z(q)


def sample_z(q: dist.Distribution):
    """Site "z" ~ q in the "data" plate, whose size is q's batch size B (batch shape [B])."""
    with pyro.plate("data", q.batch_shape[-1], dim=-1):
        return pyro.sample("z", q)


def check_fits(model: nn.Module, guide: nn.Module, role: str = "guide") -> None:
    """A one-line ValueError when ``guide`` was not built for ``model``: not a guide of the zoo, a guide of
    the other model family, or other network shapes."""
    name = type(guide).__name__
    if not isinstance(guide, Guide):
        raise ValueError(f"the {role} {name} is not a guide of the zoo; build one from guides/ for the "
                         f"{type(model).__name__}")
    config = getattr(model, "config", None)
    if type(config) is not type(guide.config):
        raise ValueError(f"the {role} {name} was built for a {type(guide.config).__name__}, not for a "
                         f"{type(model).__name__} ({type(config).__name__}); use a guide of that model")
    if config != guide.config:
        differ = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(guide.config, f.name)]
        raise ValueError(f"the {role} {name} was built with other network settings than the {type(model).__name__} "
                         f"({', '.join(differ)} differ); build both from one config")
