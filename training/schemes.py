"""Which networks each ``--guide`` trains, with which loss, per model: ``build`` dispatches on
``config.model`` through ``BUILDERS``, and ``MODEL_GUIDES`` names each model's guides.

VLVAE (Cremer & Kushman, sections 2-3), ``Components``:

| guide     | trains                  | frozen                 | loss                                  |
| --------- | ----------------------- | ---------------------- | ------------------------------------- |
| image     | VLVAE + q(z|x)          |                        | Eq. 1 (warm-up, likelihood weights)   |
| joint     | VLVAE + q(z|x,y)        |                        | Eq. 1 with q(z|x,y)                   |
| text_true | q(z|y)                  | VLVAE, q(z|x)          | Eq. 3: ELBO of p(z) p(y|z)            |
| text_agg  | q(z|y)                  | VLVAE, q(z|x)          | Eq. 5: E KL(q(z|x) || q(z|y))         |
| prior_agg | q(z)                    | VLVAE, q(z|x)          | E_x E_{q(z|x)}[-log q(z)] (Table 2)   |

Switching text inference between the true and the aggregate posterior is swapping the
loss: both use the same ``TextGuide``.

JMVAE (Suzuki et al., sections 3.2-3.3), ``JMVAEComponents``; all train the model:

| guide | trains                              | q(z|x), q(z|w) at test time         | loss                       |
| ----- | ----------------------------------- | ----------------------------------- | -------------------------- |
| zero  | JMVAE + q(z|x,w)                    | q(z|x,w) with the other input zero  | Eq. 3 (ELBO, warm-up)      |
| kl    | JMVAE + q(z|x,w) + q(z|x) + q(z|w)  | their own encoders                  | Eq. 4 (ELBO - alpha * KLs) |
| vae   | p(z) p(x|z) + q(z|x)                | q(z|x); no q(z|w)                   | Eq. 3 with the image only  |

The ``vae`` guide is the paper's VAE baseline (Table 1): the JMVAE with the text left out, so
its p(w|z) stays untrained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from datasets.vocab import Vocabulary
from guides.base import Guide
from guides import jmvae as jmvae_guides
from guides.encoders import ImageGuide, JointGuide
from guides.objectives import aggregate_loss, elbo_loss, jmvae_kl_loss
from guides.prior import AggregatePrior
from guides.text import TextGuide
from models.jmvae import JMVAE
from models.vlvae import VLVAE
from training.config import RunConfig

GUIDES = {
    "image": "q(z|x) from images; trains the VLVAE with Eq. 1",
    "joint": "q(z|x,y) from images and text; trains the VLVAE with Eq. 1",
    "text_true": "q(z|y) as the true posterior p(z|y) (Eq. 3); VLVAE frozen",
    "text_agg": "q(z|y) as the aggregate of the image posteriors (Eq. 5); VLVAE and q(z|x) frozen",
    "prior_agg": "learned aggregate prior q(z) replacing N(0, I) (Table 2); VLVAE and q(z|x) frozen",
}
JMVAE_GUIDES = {
    "zero": "JMVAE-zero: q(z|x,w); unimodal inference zeroes the missing modality",
    "kl": "JMVAE-kl: q(z|x,w) with separate q(z|x), q(z|w), trained with Eq. 4 (--alpha)",
    "vae": "the paper's VAE baseline: p(z) p(x|z) with q(z|x), images only (Eq. 3 without the text)",
}
MODEL_GUIDES = {"vlvae": GUIDES, "jmvae": JMVAE_GUIDES}
# These train the model itself; the others need a trained base run.
BASE_GUIDES = ("image", "joint", "zero", "kl", "vae")


STEP_DECAY_SHARE = 0.1   # lr_decay "step": the last 10% of the steps ...
STEP_DECAY_FACTOR = 0.1  # ... run at a tenth of the rate


def learning_rate(t, step: int, num_steps: int) -> float:
    """Adam's rate at ``step`` (0-based) for train config ``t``: ``t.lr`` throughout; with
    ``t.lr_decay == "cosine"`` annealed from ``t.lr`` to 0 over the run; with ``"step"`` a tenth
    of ``t.lr`` for the last tenth of the run (at least one step). A function of the step alone,
    so a resumed run continues the same schedule."""
    if t.lr_decay == "cosine":
        return t.lr * 0.5 * (1 + math.cos(math.pi * step / num_steps))
    if t.lr_decay == "step" and step >= num_steps - max(1, round(STEP_DECAY_SHARE * num_steps)):
        return t.lr * STEP_DECAY_FACTOR
    return t.lr


def warmup(step: int, warmup_steps: int) -> float:
    """KL weight at ``step`` (0-based): rises linearly from 1/warmup_steps to 1 (Pyro's scale must be > 0)."""
    return min(1.0, (step + 1) / max(warmup_steps, 1))


@dataclass
class Scheme:
    """A model with the guides of one training scheme: what the trainer and ``load_run`` use."""

    config: RunConfig
    model: nn.Module

    @property
    def trains_model(self) -> bool:
        return self.config.guide in BASE_GUIDES

    def trained(self) -> dict[str, nn.Module]:
        """The modules this scheme trains, by checkpoint key."""
        raise NotImplementedError

    def frozen(self) -> dict[str, nn.Module]:
        """The base run's modules, kept fixed, by key in ``base.pt``."""
        return {}

    def loss(self, step: int, x, y) -> tuple[torch.Tensor, dict]:
        """The loss of training step ``step`` (0-based) on a batch, and its terms for logging."""
        raise NotImplementedError

    def modules(self) -> list[nn.Module]:
        return list(self.trained().values()) + list(self.frozen().values())

    def to(self, device) -> "Scheme":
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

    @property
    def models_text(self) -> bool:
        """Whether the model's p(y|z) is trained (decoded texts mean something)."""
        return True


@dataclass
class Components(Scheme):
    """A VLVAE with the guides of one training scheme."""

    model: VLVAE
    image_guide: Guide           # q(z|x) (for ``joint``: q(z|x,y)); the base's encoder for the others
    guide: Guide                 # the guide this scheme trains (same object as image_guide for base schemes)

    def trained(self) -> dict[str, nn.Module]:
        return {"model": self.model, "guide": self.guide} if self.trains_model else {"guide": self.guide}

    def frozen(self) -> dict[str, nn.Module]:
        return {} if self.trains_model else {"model": self.model, "image_guide": self.image_guide}

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


@dataclass
class JMVAEComponents(Scheme):
    """A JMVAE with q(z|x,w) (``guide``) and the unimodal q(z|x), q(z|w) of JMVAE-zero or JMVAE-kl;
    for the VAE baseline, ``guide`` and ``image_guide`` are its q(z|x) and there is no q(z|w)."""

    model: JMVAE
    guide: Guide                 # q(z|x,w); the VAE's q(z|x)
    image_guide: Guide           # q(z|x): zero-input joint encoder (zero), its own encoder (kl), ``guide`` (vae)
    text_guide: Guide | None     # q(z|w): likewise; None for the VAE

    @property
    def models_text(self) -> bool:
        return self.config.guide != "vae"

    def trained(self) -> dict[str, nn.Module]:
        modules = {"model": self.model, "guide": self.guide}
        if self.config.guide == "kl":
            modules.update(image_guide=self.image_guide, text_guide=self.text_guide)
        return modules

    def freeze(self) -> None:
        """As ``Scheme.freeze``; the VAE's p(w|z), outside its loss, gets no gradient either (DDP needs every
        trained parameter to get one)."""
        super().freeze()
        if not self.models_text:
            self.model.text_decoder.requires_grad_(False)

    def loss(self, step: int, x, y) -> tuple[torch.Tensor, dict]:
        t = self.config.train
        scales = dict(annealing=warmup(step, t.warmup_steps), x_weight=t.x_weight, y_weight=t.y_weight)
        if self.config.guide == "vae":
            return elbo_loss(self.model, self.guide, x, None, **scales)
        if self.config.guide == "zero":
            return elbo_loss(self.model, self.guide, x, y, **scales)
        return jmvae_kl_loss(self.model, self.guide, self.image_guide, self.text_guide, x, y, alpha=t.alpha, **scales)


def build(config: RunConfig) -> Scheme:
    """Fresh (untrained) networks for ``config``."""
    if config.model not in BUILDERS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {', '.join(BUILDERS)}")
    guides = MODEL_GUIDES[config.model]
    if config.guide not in guides:
        raise ValueError(f"unknown guide {config.guide!r} for model {config.model}; choose one of {', '.join(guides)}")
    return BUILDERS[config.model](config)


def _build_jmvae(config: RunConfig) -> JMVAEComponents:
    net = config.net
    if config.guide == "vae":
        image_guide = jmvae_guides.UnimodalGuide(net, "x")
        return JMVAEComponents(config, JMVAE(net), image_guide, image_guide, None)
    joint = jmvae_guides.JointGuide(net)
    if config.guide == "zero":
        unimodal = jmvae_guides.ZeroedGuide(joint, "x"), jmvae_guides.ZeroedGuide(joint, "w")
    else:
        unimodal = jmvae_guides.UnimodalGuide(net, "x"), jmvae_guides.UnimodalGuide(net, "w")
    return JMVAEComponents(config, JMVAE(net), joint, *unimodal)


def _build_vlvae(config: RunConfig) -> Components:
    net, name = config.net, config.guide
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


BUILDERS = {"vlvae": _build_vlvae, "jmvae": _build_jmvae}
