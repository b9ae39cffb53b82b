"""Which networks each ``--guide`` trains, with which loss (VLVAE paper, sections 2-3).

| guide     | trains                  | frozen                 | loss                                  |
| --------- | ----------------------- | ---------------------- | ------------------------------------- |
| image     | VLVAE + q(z|x)          |                        | Eq. 1 (warm-up, likelihood weights)   |
| joint     | VLVAE + q(z|x,y)        |                        | Eq. 1 with q(z|x,y)                   |
| text_true | q(z|y)                  | VLVAE, q(z|x)          | Eq. 3: ELBO of p(z) p(y|z)            |
| text_agg  | q(z|y)                  | VLVAE, q(z|x)          | Eq. 5: E KL(q(z|x) || q(z|y))         |
| prior_agg | q(z)                    | VLVAE, q(z|x)          | E_x E_{q(z|x)}[-log q(z)] (Table 2)   |

Switching text inference between the true and the aggregate posterior is swapping the
loss: both use the same ``TextGuide``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datasets.vocab import Vocabulary
from guides.base import Guide
from guides.encoders import ImageGuide, JointGuide
from guides.objectives import aggregate_loss, elbo_loss
from guides.prior import AggregatePrior
from guides.text import TextGuide
from models.vlvae import VLVAE
from training.config import RunConfig

GUIDES = {
    "image": "q(z|x) from images; trains the VLVAE with Eq. 1",
    "joint": "q(z|x,y) from images and text; trains the VLVAE with Eq. 1",
    "text_true": "q(z|y) as the true posterior p(z|y) (Eq. 3); VLVAE frozen",
    "text_agg": "q(z|y) as the aggregate of the image posteriors (Eq. 5); VLVAE and q(z|x) frozen",
    "prior_agg": "learned aggregate prior q(z) replacing N(0, I) (Table 2); VLVAE and q(z|x) frozen",
}
BASE_GUIDES = ("image", "joint")  # these train the VLVAE itself; the others need a trained base run


def warmup(step: int, warmup_steps: int) -> float:
    """KL weight at ``step`` (0-based): rises linearly from 1/warmup_steps to 1 (Pyro's scale must be > 0)."""
    return min(1.0, (step + 1) / max(warmup_steps, 1))


@dataclass
class Components:
    """A VLVAE with the guides of one training scheme."""

    config: RunConfig
    model: VLVAE
    image_guide: Guide           # q(z|x) (for ``joint``: q(z|x,y)); the base's encoder for the others
    guide: Guide                 # the guide this scheme trains (same object as image_guide for base schemes)

    @property
    def trains_model(self) -> bool:
        return self.config.guide in BASE_GUIDES

    def trained(self) -> dict[str, nn.Module]:
        """The modules this scheme trains, by checkpoint key."""
        return {"model": self.model, "guide": self.guide} if self.trains_model else {"guide": self.guide}

    def frozen(self) -> dict[str, nn.Module]:
        """The base run's modules, kept fixed, by key in ``base.pt``."""
        return {} if self.trains_model else {"model": self.model, "image_guide": self.image_guide}

    def modules(self) -> list[nn.Module]:
        return list(self.trained().values()) + list(self.frozen().values())

    def to(self, device) -> "Components":
        for m in self.modules():
            m.to(device)
        return self

    def freeze(self) -> None:
        """Frozen parts neither get gradients nor update batchnorm statistics (eval mode)."""
        for m in self.frozen().values():
            m.requires_grad_(False)
            m.eval()

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.config.net.vocab)

    @torch.no_grad()
    def sample_from_text(self, texts: list[str], num_samples: int = 1):
        """Images [T, S, C, H, W] and texts decoded from S samples z ~ q(z|y) of each given text.

        Needs a text guide (``text_true`` or ``text_agg``); unknown words are a ValueError naming them.
        """
        if self.config.guide not in ("text_true", "text_agg"):
            raise ValueError(f"a {self.config.guide!r} run has no q(z|y); load a text_true or text_agg run")
        device = next(self.guide.parameters()).device
        y = self.vocab.encode_batch(texts, self.config.net.text_length).to(device)
        z = self.guide.distribution(None, y).sample((num_samples,)).transpose(0, 1)
        images, tokens = self.model.generate(z)
        return images, [self.vocab.decode_batch(row) for row in tokens]

    def loss(self, step: int, x, y) -> tuple[torch.Tensor, dict]:
        t, name = self.config.train, self.config.guide
        if name in BASE_GUIDES:
            return elbo_loss(self.model, self.guide, x, y, annealing=warmup(step, t.warmup_steps),
                             x_weight=t.x_weight, y_weight=t.y_weight)
        if name == "text_true":
            return elbo_loss(self.model, self.guide, None, y, y_weight=t.y_weight if t.text_true_weighted else 1.0)
        if name == "text_agg":
            return aggregate_loss(self.guide, self.image_guide, x, y)
        return aggregate_loss(self.guide, self.image_guide, x, None)


def build(config: RunConfig) -> Components:
    """Fresh (untrained) networks for ``config``."""
    net, name = config.net, config.guide
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r} for model vlvae; choose one of {', '.join(GUIDES)}")
    model = VLVAE(net)
    if name in BASE_GUIDES:
        guide = ImageGuide(net) if name == "image" else JointGuide(net)
        return Components(config, model, guide, guide)
    flow_hidden = (net.hidden, net.hidden)
    if name == "prior_agg":
        guide = AggregatePrior(net, config.train.num_flows, flow_hidden)
    else:
        guide = TextGuide(net, config.train.num_flows, flow_hidden)
    return Components(config, model, ImageGuide(net), guide)
