"""The training schemes: one declaration each of the model, the guide it trains, its ELBO, the
modalities it reads and the trained run it is fitted to. ``SCHEMES`` is the registry and
``build(config)`` picks a scheme once, by ``config.guide``, and returns its ``Components``.

VLVAE (Cremer & Kushman, sections 2-3):

| scheme    | trains                  | frozen          | ELBO (``guides.elbos``)                        | inputs |
| --------- | ----------------------- | --------------- | ---------------------------------------------- | ------ |
| image     | VLVAE + q(z|x)          |                 | Eq. 1, ``LoggedTrace_ELBO`` (warm-up, weights) | x, y   |
| joint     | VLVAE + q(z|x,y)        |                 | Eq. 1 with q(z|x,y)                            | x, y   |
| text_true | q(z|y)                  | VLVAE, q(z|x)   | Eq. 3: ``LoggedTrace_ELBO`` of p(z) p(y|z)     | y      |
| text_agg  | q(z|y)                  | VLVAE, q(z|x)   | Eq. 5: ``AggregateELBO(q(z|x))``               | x, y   |
| prior_agg | q(z), the VLVAE's prior | VLVAE, q(z|x)   | Table 2: ``AggregateELBO(q(z|x))``             | x      |

Switching text inference between the true and the aggregate posterior is swapping the ELBO
(and the inputs it reads): both train the same ``TextGuide``. The learned prior is the model's
prior by construction (``VLVAE(net, prior=q)``) and the guide its scheme trains.

JMVAE (Suzuki et al., sections 3.2-3.3); all train the model:

| scheme | trains                              | q(z|x), q(z|w) at test time         | ELBO                            | inputs |
| ------ | ----------------------------------- | ----------------------------------- | ------------------------------- | ------ |
| zero   | JMVAE + q(z|x,w)                    | q(z|x,w) with the other input zero  | Eq. 3, ``LoggedTrace_ELBO``     | x, w   |
| kl     | JMVAE + q(z|x,w) + q(z|x) + q(z|w)  | their own encoders (``KLGuide``)    | Eq. 4, ``JMVAEKLELBO(alpha)``   | x, w   |
| vae    | p(z) p(x|z) + q(z|x)                | q(z|x); no q(z|w)                   | Eq. 3 with the image only       | x      |

The ``vae`` scheme is the paper's VAE baseline (Table 1): the JMVAE with the text left out, so
its p(w|z), outside the loss, stays untrained (and frozen).

Other multimodal objectives, on either model (``MULTIMODAL``); all train the model, and both read
x and y:

| scheme | q(z|x,y)                                   | q(z|x), q(z|y)                         | ELBO                      |
| ------ | ------------------------------------------ | -------------------------------------- | ------------------------- |
| kl     | its own encoder (``KLGuide``)              | their own encoders                     | JMVAE Eq. 4, ``JMVAEKLELBO`` |
| mvae   | p(z) q(z|x) q(z|y) (``ProductOfExperts``)  | p(z) q(z|x), p(z) q(z|y) (``GivenOnly``) | ``MVAEELBO``             |
| mmvae  | (q(z|x) + q(z|y)) / 2 (``MixtureOfExperts``) | the experts                          | ``MMVAEELBO(particles)``  |

On the VLVAE, ``kl`` is the JMVAE objective applied to the VLVAE model (VLVAE paper, section 3);
the experts are its image guide and its Gaussian text guide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pyro.distributions as dist
import pyro.infer
import torch
from torch import nn

from mmvae_zoo.datasets.vocab import Vocabulary
from mmvae_zoo.guides import jmvae as jmvae_guides
from mmvae_zoo.guides.base import Guide
from mmvae_zoo.guides.elbos import AggregateELBO, JMVAEKLELBO, LoggedTrace_ELBO, MMVAEELBO, MVAEELBO
from mmvae_zoo.guides.encoders import ImageGuide, JointGuide
from mmvae_zoo.guides.experts import GivenOnly, MixtureOfExperts, ProductOfExperts
from mmvae_zoo.guides.prior import AggregatePrior
from mmvae_zoo.guides.text import TextGuide
from mmvae_zoo.models.jmvae import JMVAE
from mmvae_zoo.models.vlvae import VLVAE
from mmvae_zoo.training.config import RunConfig, TrainConfig

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


def annealed(t: TrainConfig, step: int) -> dict:
    """The model and guide arguments of a scheme that trains the model: KL warm-up and likelihood weights."""
    return dict(annealing=warmup(step, t.warmup_steps), x_weight=t.x_weight, y_weight=t.y_weight)


def text_true_weights(t: TrainConfig, step: int) -> dict:
    """Eq. 3 is unweighted; ``--text-true-weighted`` weights its text likelihood by ``y_weight``."""
    return {"y_weight": t.y_weight} if t.text_true_weighted else {}


def unweighted(t: TrainConfig, step: int) -> dict:
    return {}


def _flows(config: RunConfig) -> dict:
    return dict(num_flows=config.train.num_flows, flow_hidden=(config.net.hidden, config.net.hidden))


# Each builds (guide trained, q(z|x) or its stand-in, q(z|w) or None) for a run config.
def _image_guides(config):
    guide = ImageGuide(config.net)
    return guide, guide, None


def _joint_guides(config):
    guide = JointGuide(config.net)
    return guide, guide, None  # the joint guide stands in for q(z|x) (reconstructions, sample grids)


def _text_guides(config):
    return TextGuide(config.net, **_flows(config)), ImageGuide(config.net), None


def _prior_guides(config):
    return AggregatePrior(config.net, **_flows(config)), ImageGuide(config.net), None


def _zero_guides(config):
    joint = jmvae_guides.JointGuide(config.net)
    return joint, jmvae_guides.ZeroedGuide(joint, "x"), jmvae_guides.ZeroedGuide(joint, "w")


def _kl_guides(config):
    guide = jmvae_guides.KLGuide(config.net)
    return guide, guide.image, guide.text


def _vae_guides(config):
    guide = jmvae_guides.UnimodalGuide(config.net, "x")
    return guide, guide, None


def _product_guides(config):
    guide = ProductOfExperts(config.net)
    return guide, GivenOnly(guide, "x"), GivenOnly(guide, "y")  # q(z|x) and q(z|y): the product of one expert and p(z)


def _mixture_guides(config):
    guide = MixtureOfExperts(config.net)
    return guide, guide.image, guide.text


@dataclass(frozen=True)
class Scheme:
    """One way of training: the model, the guides, the ELBO and its arguments, and the base run it needs."""

    name: str
    model: str                                   # the model family: "vlvae" or "jmvae"
    summary: str                                 # one line for --help
    guides: Callable                             # config -> (trained guide, q(z|x), q(z|w) or None)
    elbo: Callable[[TrainConfig, Guide], pyro.infer.ELBO]  # (train config, q(z|x)) -> the ELBO
    inputs: str = "xy"                           # the modalities model and guide are given
    weights: Callable[[TrainConfig, int], dict] = annealed  # (train config, step) -> model/guide arguments
    base: str | None = None                      # the scheme of the trained run whose model and q(z|x) it keeps frozen
    learns_prior: bool = False                   # the trained guide is the model's prior

    @property
    def trains_model(self) -> bool:
        return self.base is None

    @property
    def models_text(self) -> bool:
        """Whether the model's p(y|z) is trained, here or in the base run (decoded texts mean something)."""
        return not self.trains_model or "y" in self.inputs

    def make_model(self, config: RunConfig, guide: Guide) -> nn.Module:
        if self.model == "jmvae":
            return JMVAE(config.net)
        return VLVAE(config.net, prior=guide if self.learns_prior else None)


def _trace_elbo(t, image_guide):
    return LoggedTrace_ELBO()


def _aggregate_elbo(t, image_guide):
    return AggregateELBO(image_guide)


def _jmvae_kl_elbo(t, image_guide):
    return JMVAEKLELBO(t.alpha)


def _mvae_elbo(t, image_guide):
    return MVAEELBO()


def _mmvae_elbo(t, image_guide):
    return MMVAEELBO(num_particles=t.particles)


def likelihood_weights(t: TrainConfig, step: int) -> dict:
    """The likelihood weights alone: an importance-weighted objective has no KL term to warm up."""
    return dict(x_weight=t.x_weight, y_weight=t.y_weight)


# The objectives of other multimodal VAEs, for either model: (name, summary, guides, ELBO, weights).
MULTIMODAL = (
    ("kl", "JMVAE-kl: q(z|x,y) with separate q(z|x), q(z|y), trained with JMVAE Eq. 4 (--alpha)", _kl_guides,
     _jmvae_kl_elbo, annealed),
    ("mvae", "MVAE: product of experts p(z) q(z|x) q(z|y), trained on the joint and each unimodal ELBO",
     _product_guides, _mvae_elbo, annealed),
    ("mmvae", "MMVAE: mixture of experts (q(z|x) + q(z|y)) / 2, stratified importance-weighted bound (--particles)",
     _mixture_guides, _mmvae_elbo, likelihood_weights),
)

SCHEMES = {(s.model, s.name): s for s in (
    Scheme("image", "vlvae", "q(z|x) from images; trains the VLVAE with Eq. 1", _image_guides, _trace_elbo),
    Scheme("joint", "vlvae", "q(z|x,y) from images and text; trains the VLVAE with Eq. 1", _joint_guides,
           _trace_elbo),
    Scheme("text_true", "vlvae", "q(z|y) as the true posterior p(z|y) (Eq. 3); VLVAE frozen", _text_guides,
           _trace_elbo, inputs="y", weights=text_true_weights, base="image"),
    Scheme("text_agg", "vlvae", "q(z|y) as the aggregate of the image posteriors (Eq. 5); VLVAE and q(z|x) frozen",
           _text_guides, _aggregate_elbo, weights=unweighted, base="image"),
    Scheme("prior_agg", "vlvae", "learned aggregate prior q(z) replacing N(0, I) (Table 2); VLVAE and q(z|x) frozen",
           _prior_guides, _aggregate_elbo, inputs="x", weights=unweighted, base="image", learns_prior=True),
    Scheme("zero", "jmvae", "JMVAE-zero: q(z|x,w); unimodal inference zeroes the missing modality", _zero_guides,
           _trace_elbo),
    Scheme("vae", "jmvae", "the paper's VAE baseline: p(z) p(x|z) with q(z|x), images only (Eq. 3 without the text)",
           _vae_guides, _trace_elbo, inputs="x"),
    *(Scheme(name, model, summary, guides, elbo, weights=weights)
      for model in ("vlvae", "jmvae") for name, summary, guides, elbo, weights in MULTIMODAL),
)}
MODELS = ("vlvae", "jmvae")


def schemes_of(model: str) -> dict[str, Scheme]:
    """The schemes that train ``model`` (or a guide of it), by name."""
    return {name: s for (of, name), s in SCHEMES.items() if of == model}


def scheme_of(config: RunConfig) -> Scheme:
    """The scheme ``config`` names; a ValueError naming the choices for an unknown model or guide."""
    if config.model not in MODELS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    schemes = schemes_of(config.model)
    if config.guide not in schemes:
        raise ValueError(f"unknown guide {config.guide!r} for model {config.model}; choose one of {', '.join(schemes)}")
    return schemes[config.guide]


@dataclass
class Components:
    """The networks of one run of a scheme: the model, the guide it trains, the ELBO, and the unimodal guides.

    ``loss_fn`` is the ELBO as a torch module over the model and guide (``elbo(model, guide)``),
    what the trainer differentiates. ``image_posteriors`` is (loc, scale) [N, z_dim] of the frozen
    q(z|x) of every training image, once ``cache_image_posteriors`` has computed it (the schemes
    fitted with an ``AggregateELBO``); ``loss`` then looks q(z|x) up instead of running the encoder.
    """

    config: RunConfig
    scheme: Scheme
    model: nn.Module
    guide: Guide                 # the guide this scheme trains
    elbo: pyro.infer.ELBO
    image_guide: Guide           # q(z|x) (for ``joint``: q(z|x,y)); the base's encoder for fitted schemes
    text_guide: Guide | None = None  # q(z|y) of the schemes that train one with the model (JMVAE's q(z|w))
    loss_fn: nn.Module = field(init=False, repr=False)
    _frozen: dict = field(init=False, repr=False)
    image_posteriors: tuple[torch.Tensor, torch.Tensor] | None = field(init=False, default=None, repr=False)

    def __post_init__(self):
        self.loss_fn = self.elbo(self.model, self.guide)  # checks that they fit
        self._frozen = ({} if self.trains_model else
                        {"model": self.model.likelihood_networks(), "image_guide": self.image_guide})

    @property
    def trains_model(self) -> bool:
        return self.scheme.trains_model

    @property
    def models_text(self) -> bool:
        return self.scheme.models_text

    def trained(self) -> dict[str, nn.Module]:
        """The modules this scheme trains, by checkpoint key."""
        if not self.trains_model:
            return {"guide": self.guide}
        if isinstance(self.guide, jmvae_guides.KLGuide):  # JMVAE-kl's checkpoints keep one key per encoder
            return {"model": self.model, "guide": self.guide.joint, "image_guide": self.guide.image,
                    "text_guide": self.guide.text}
        return {"model": self.model, "guide": self.guide}

    def frozen(self) -> dict[str, nn.Module]:
        """The base run's modules, kept fixed, by key in ``base.pt``: the model's networks but a learned prior, and q(z|x)."""
        return self._frozen

    def modules(self) -> list[nn.Module]:
        return list(self.trained().values()) + list(self.frozen().values())

    def to(self, device) -> "Components":
        for m in self.modules():
            m.to(device)
        if self.image_posteriors is not None:
            self.image_posteriors = tuple(t.to(device) for t in self.image_posteriors)
        return self

    def freeze(self) -> None:
        """Frozen parts neither get gradients nor update batchnorm statistics (eval mode); a model's p(y|z)
        outside the loss gets no gradient either (DDP needs every trained parameter to get one)."""
        for m in self.frozen().values():
            m.requires_grad_(False)
            m.eval()
        if self.trains_model and not self.models_text:
            self.model.text_decoder.requires_grad_(False)

    @property
    def caches_image_posteriors(self) -> bool:
        """Whether the loss can read q(z|x) from ``cache_image_posteriors``' table: the ELBO draws z from the
        frozen image guide (``AggregateELBO``: ``text_agg``, ``prior_agg``), which never trains."""
        return isinstance(self.elbo, AggregateELBO) and not self.trains_model

    @torch.no_grad()
    def cache_image_posteriors(self, images: torch.Tensor, chunk: int = 256) -> None:
        """Computes and keeps q(z|x_i) of every image (uint8 [N, C, H, W], converted as ``BatchLoader`` does),
        for ``loss(..., index=)``. The image guide must be frozen (``freeze()``): in eval mode each image's
        q(z|x) is that of any batch holding it. Runs ``chunk`` images at a time, every chunk of one shape
        (a compiled encoder compiles once); draws no random numbers."""
        if not self.caches_image_posteriors:
            raise ValueError(f"the {self.scheme.name!r} scheme does not draw z from a frozen q(z|x); nothing to cache")
        n = len(images)
        chunk = min(chunk, n)
        was_training = self.image_guide.training
        self.image_guide.eval()
        locs, scales = [], []
        for start in range(0, n, chunk):
            window = min(start, n - chunk)  # the last chunk overlaps the one before, to keep its shape
            q = self.image_guide.distribution(images[window:window + chunk].float().div_(255), None)
            if not isinstance(q, dist.Independent) or not isinstance(q.base_dist, dist.Normal):
                raise ValueError(f"only a diagonal Gaussian q(z|x) can be cached, got {type(q).__name__}")
            q = q.base_dist
            locs.append(q.loc[start - window:])
            scales.append(q.scale[start - window:])
        self.image_guide.train(was_training)
        self.image_posteriors = (torch.cat(locs), torch.cat(scales))

    def loss(self, step: int, x, y, index=None) -> tuple[torch.Tensor, dict]:
        """Training step ``step``'s (0-based) loss on a batch, per datapoint, and the ELBO's terms for logging.

        ``index``, the batch's dataset indices, makes the ELBO read q(z|x) from ``image_posteriors`` when
        cached (the same loss, without running the image encoder); without either it runs as ever.
        """
        inputs = (x if "x" in self.scheme.inputs else None, y if "y" in self.scheme.inputs else None)
        kwargs = dict(self.scheme.weights(self.config.train, step))
        if index is not None and self.image_posteriors is not None:
            loc, scale = self.image_posteriors
            kwargs["image_posterior"] = dist.Normal(loc[index], scale[index]).to_event(1)
        loss = self.loss_fn(*inputs, **kwargs) / len(x)
        return loss, self.elbo.terms

    @property
    def text_posterior(self) -> Guide | None:
        """The run's q(z|y), or None: the trained guide when it reads the text alone (``text_true``,
        ``text_agg``), else the q(z|y) trained with the model (``kl``, ``mvae``, ``mmvae``; JMVAE's q(z|w))."""
        return self.guide if self.guide.inputs == "y" else self.text_guide

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.config.net.vocab)

    @torch.no_grad()
    def sample_from_text(self, texts: list[str], num_samples: int = 1):
        """Images [T, S, C, H, W] and texts decoded from S samples z ~ q(z|y) of each given text.

        Needs a q(z|y): a text guide's run (``text_true``, ``text_agg``) or one that trains q(z|y) with the
        model (``kl``, ``mvae``, ``mmvae``); unknown words are a ValueError naming them.
        """
        text_guide = self.text_posterior
        if text_guide is None:
            raise ValueError(f"a {self.config.guide!r} run has no q(z|y); load a text_true, text_agg, kl, mvae or "
                             f"mmvae run")
        device = next(text_guide.parameters()).device
        y = self.vocab.encode_batch(texts, self.config.net.text_length).to(device)
        z = text_guide.distribution(None, y).sample((num_samples,)).transpose(0, 1)
        images, tokens = self.model.generate(z)
        return images, [self.vocab.decode_batch(row) for row in tokens]


def build(config: RunConfig) -> Components:
    """Fresh (untrained) networks for ``config``."""
    scheme = scheme_of(config)
    if scheme.learns_prior:  # the model takes its learned prior, so that is built first
        guide, image_guide, text_guide = scheme.guides(config)
        model = scheme.make_model(config, guide)
    else:  # the model, then its guides: the order in which they draw their initial weights
        model = scheme.make_model(config, None)
        guide, image_guide, text_guide = scheme.guides(config)
    return Components(config, scheme, model, guide, scheme.elbo(config.train, image_guide), image_guide, text_guide)
