"""What every guide of the zoo is: an ``nn.Module`` giving a distribution over z for a batch."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro import poutine
from torch import nn


class Guide(nn.Module):
    """A guide is ``distribution(x, y)``: q(z | the modalities it uses), batch shape [B], event [z_dim].

    ``guide(x, y)`` is the Pyro guide: it samples site "z" in the "data" plate, with the
    same ``annealing`` scale as the model's z site (KL warm-up).
    """

    def distribution(self, x, y) -> dist.Distribution:
        raise NotImplementedError

    def guide(self, x=None, y=None, *, annealing: float = 1.0):
        with poutine.scale(scale=annealing):
            return sample_z(self.distribution(x, y))


def sample_z(q: dist.Distribution):
    """Site "z" ~ q in the "data" plate, whose size is q's batch size B (batch shape [B])."""
    with pyro.plate("data", q.batch_shape[-1], dim=-1):
        return pyro.sample("z", q)
