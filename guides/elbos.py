r"""The objectives that train the zoo's guides (and, for Eq. 1, its models), as ``pyro.infer.ELBO`` classes.

| scheme              | ELBO               | maximises, per datapoint (summed over the batch)                    |
| ------------------- | ------------------ | ------------------------------------------------------------------- |
| image, joint        | ``LoggedTrace_ELBO`` | VLVAE Eq. 1: E_q[log p(x,y|z)] - KL(q(z|x[,y]) || p(z))           |
| text_true           | ``LoggedTrace_ELBO`` | VLVAE Eq. 3: the ELBO of p(z) p(y|z) with q(z|y), model frozen    |
| text_agg, prior_agg | ``AggregateELBO``  | VLVAE Eq. 5: E_{q(z|x)}[log q(z|y)] (q(z) for the prior), q(z|x) frozen |
| zero, vae (JMVAE)   | ``LoggedTrace_ELBO`` | JMVAE Eq. 3: the ELBO of p(z) p(x|z) p(w|z) (of p(z) p(x|z): vae)  |
| kl (JMVAE)          | ``JMVAEKLELBO``    | JMVAE Eq. 4: the ELBO - alpha * (KL(q(z|x,w)||q(z|x)) + KL(q(z|x,w)||q(z|w))) |
| mvae                | ``MVAEELBO``       | MVAE: ELBO(x, y) + ELBO(x) + ELBO(y), each with the product of experts of its subset |
| mmvae               | ``MMVAEELBO``      | MMVAE: the stratified IWAE bound with the mixture of experts q(z|x,y) |

The KL warm-up and the likelihood weights are the model's and guide's ``annealing``, ``x_weight``
and ``y_weight`` arguments, applied inside them with ``poutine.scale``. Each ELBO works as any
of Pyro's: ``SVI(model, guide, optim, loss=elbo)``, or ``elbo(model, guide)`` as a torch module
whose ``parameters()`` are the model's and guide's (Pyro's ``examples/svi_torch.py``). Building
that module checks that the model and guide fit each other. After each call, ``elbo.terms``
holds the call's terms (per-datapoint means, detached, unscaled) for logging.
"""
from __future__ import annotations

import math
from functools import partial

import pyro
import pyro.infer
import torch
from pyro import poutine
from pyro.infer.util import torch_item
from torch.distributions import kl_divergence

from mmvae_zoo.guides.base import Guide, check_fits, draw_z
from mmvae_zoo.guides.experts import MixtureOfExperts, ProductOfExperts, components, product
from mmvae_zoo.guides.jmvae import KLGuide
from mmvae_zoo.models.registration import register


def _draws(trace) -> int:
    """The number of z draws in a trace (datapoints times particles)."""
    z = trace.nodes["z"]["value"]
    return z.numel() // z.shape[-1]


def elbo_terms(model_trace, guide_trace) -> dict:
    """``log_p<site>`` for each observed site of the model (log p(x|z), log p(y|z)) and ``kl``, the one-sample
    KL estimate log q(z) - log p(z) at the drawn z: per-datapoint means, unscaled, detached."""
    draws = _draws(guide_trace)
    terms = {f"log_p{name}": site["unscaled_log_prob"].detach().sum() / draws
             for name, site in model_trace.nodes.items() if site["type"] == "sample" and site["is_observed"]}
    terms["kl"] = (guide_trace.nodes["z"]["unscaled_log_prob"].detach().sum()
                   - model_trace.nodes["z"]["unscaled_log_prob"].detach().sum()) / draws
    return terms


class LoggedTrace_ELBO(pyro.infer.Trace_ELBO):
    """Pyro's ``Trace_ELBO`` (the same values and gradients) that keeps the last call's ``terms`` for logging."""

    terms: dict = {}

    def __call__(self, model, guide):
        check_fits(model, guide)
        return super().__call__(model, guide)

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self.terms = elbo_terms(model_trace, guide_trace)
        return model_trace, guide_trace


class _FromDifferentiableLoss:
    """``loss`` and ``loss_and_grads`` (what ``SVI`` calls) from the class's ``differentiable_loss``."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)


class AggregateELBO(_FromDifferentiableLoss, pyro.infer.ELBO):
    r"""VLVAE Eq. 5, and the learned prior's objective (Table 2), as a Pyro ELBO.

    The guide, q(z|y) or the prior q(z), is fitted to the aggregate of the image posteriors of a
    trained VLVAE:

        min E_{p_D(x,y)} KL(q(z|x) || q(z|y))   <=>   max E_{p_D(x,y)} E_{q(z|x)}[log q(z|y)],

    the entropy of q(z|x) being constant in q. The loss is -sum_i log q(z_i | y_i), z_i ~ q(z|x_i)
    drawn by ``image_guide`` with no gradient and hidden from ``SVI`` (it never trains); the model
    does not enter Eq. 5 and is not run. Put ``image_guide`` in eval mode: it is the fixed q(z|x).
    Term: ``kl_qx_target``, the one-sample KL(q(z|x) || q).

    The keyword ``image_posterior``, q(z|x) of the batch (batch shape [B], event [z_dim]), draws z
    from it instead of running ``image_guide``: the same z for the same random numbers, since a
    frozen guide in eval mode gives each image the same q(z|x) in any batch (``training.schemes``
    caches them).
    """

    terms: dict = {}

    def __init__(self, image_guide: Guide, num_particles: int = 1):
        if not isinstance(image_guide, Guide) or image_guide.inputs != "x":
            raise ValueError(f"AggregateELBO needs the trained VLVAE's image guide q(z|x), got "
                             f"{type(image_guide).__name__}; pass the base run's ImageGuide")
        super().__init__(num_particles=num_particles)
        self.image_guide = image_guide

    def __call__(self, model, guide):
        self._check(model, guide)
        return super().__call__(model, guide)

    def _check(self, model, guide) -> None:
        if guide is self.image_guide:
            raise ValueError("AggregateELBO fits another guide (q(z|y) or q(z)) to its image guide, not the image "
                             "guide to itself; pass a TextGuide or an AggregatePrior")
        check_fits(model, guide)
        check_fits(model, self.image_guide, "image guide")

    def _get_trace(self, model, guide, args, kwargs):
        """One particle: the image guide's trace (z ~ q(z|x), or ``image_posterior`` when given) and the
        guide's, replayed at that z."""
        posterior = kwargs.get("image_posterior")
        with torch.no_grad(), poutine.block():
            if posterior is None:
                image_trace = poutine.trace(self.image_guide).get_trace(*args, **kwargs)
            else:
                image_trace = poutine.trace(self._draw_from_posterior).get_trace(*args, **kwargs)
        guide_trace = poutine.trace(poutine.replay(guide, trace=image_trace)).get_trace(*args, **kwargs)
        guide_trace.compute_log_prob()
        return image_trace, guide_trace

    @staticmethod
    def _draw_from_posterior(x=None, y=None, *, image_posterior, **model_kwargs):
        """Site "z" ~ ``image_posterior`` as ``Guide.forward`` draws it: the image guide's trace, without running it."""
        if x is not None and tuple(image_posterior.batch_shape) != (len(x),):
            raise ValueError(f"image_posterior has batch shape {list(image_posterior.batch_shape)}, not the "
                             f"batch's [{len(x)}]; give q(z|x) of the batch's images")
        return draw_z(image_posterior, **model_kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = 0.0
        for image_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - guide_trace.log_prob_sum() / self.num_particles
        with torch.no_grad():  # the last particle's
            log_q = guide_trace.nodes["z"]["unscaled_log_prob"].sum()
            self.terms = {"kl_qx_target": (image_trace.log_prob_sum() - log_q) / _draws(guide_trace)}
        return loss


def gaussian_kl(q, p) -> torch.Tensor:
    """KL(q || p) [B] of diagonal Gaussians (``Normal(loc, scale).to_event(1)``), in closed form:
    sum_d log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2."""
    return kl_divergence(q.base_dist, p.base_dist).sum(-1)


class JMVAEKLELBO(_FromDifferentiableLoss, LoggedTrace_ELBO):
    r"""JMVAE-kl: Eq. 4 of the JMVAE paper as a Pyro ELBO,

        L_JM(x, w) = ELBO(x, w; q(z|x,w)) - alpha * (KL(q(z|x,w) || q(z|x)) + KL(q(z|x,w) || q(z|w))).

    The ELBO is ``Trace_ELBO``'s (its z site scaled by the warm-up, its likelihoods by the weights,
    1 in the paper); the two alpha terms are exact Gaussian KLs, not annealed, whose gradients
    reach q(z|x,w) and the guide's own q(z|x) and q(z|w) (a ``guides.jmvae.KLGuide``). Terms:
    ``kl_qx`` and ``kl_qw`` besides the ELBO's.
    """

    def __init__(self, alpha: float, **kwargs):
        if not alpha >= 0:
            raise ValueError(f"alpha must not be negative, got {alpha}")
        super().__init__(**kwargs)
        self.alpha = alpha

    def __call__(self, model, guide):
        _check_unimodal(guide)
        return super().__call__(model, guide)

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self._joint_posterior = guide_trace.nodes["z"]["fn"]  # q(z|x,w): the same for every particle
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        _check_unimodal(guide)
        elbo_loss = super().differentiable_loss(model, guide, *args, **kwargs)
        return elbo_loss + self._unimodal_kls(guide, *args, **kwargs)

    def _unimodal_kls(self, guide, x=None, w=None, **model_kwargs) -> torch.Tensor:
        q, self._joint_posterior = self._joint_posterior, None
        kl_x = gaussian_kl(q, guide.image.distribution(x, None))
        kl_w = gaussian_kl(q, guide.text.distribution(None, w))
        self.terms.update(kl_qx=kl_x.detach().mean(), kl_qw=kl_w.detach().mean())
        return self.alpha * (kl_x.sum() + kl_w.sum())


def _check_unimodal(guide) -> None:
    if not isinstance(guide, KLGuide):
        raise ValueError(f"JMVAE-kl needs a guide with its own q(z|x) and q(z|w), got {type(guide).__name__}; "
                         f"pass a mmvae_zoo.guides.jmvae.KLGuide")


class MVAEELBO(_FromDifferentiableLoss, LoggedTrace_ELBO):
    r"""MVAE's sub-sampled objective (Wu & Goodman 2018) for two modalities as a Pyro ELBO,

        ELBO(x, y) + ELBO(x) + ELBO(y),

    each ``Trace_ELBO``'s ELBO of the model observed on one subset of the modalities with the
    product-of-experts posterior of the same subset (``guides.experts.ProductOfExperts``), so every
    expert also learns to infer z alone. Each expert's network runs once a step: the three products
    are formed from its two Gaussians, and each ELBO's guide only draws z from its product
    (``guides.base.draw_z``). A batch with one modality missing has that modality's terms left out.
    The model's and guide's arguments (warm-up, likelihood weights) apply to all three. Terms: the
    joint ELBO's (``log_px``, ``log_py``, ``kl``) and the unimodal ones' suffixed ``_x`` and ``_y``.
    """

    def __call__(self, model, guide):
        _check_experts(guide, ProductOfExperts, "MVAE")
        return super().__call__(model, guide)

    def differentiable_loss(self, model, guide, x=None, y=None, **kwargs) -> torch.Tensor:
        _check_experts(guide, ProductOfExperts, "MVAE")
        register(type(guide).__name__, guide)  # once, as the guide's forward would: SVI sees its parameters
        experts = guide.experts(x, y)
        subsets = [("", (x, y), list(experts.values()))] if len(experts) == 2 else []
        subsets += [(f"_{m}", (x, None) if m == "x" else (None, y), [q]) for m, q in experts.items()]
        loss, terms = 0.0, {}
        for suffix, given, subset in subsets:  # each expert's network runs once for all three ELBOs
            loss = loss + super().differentiable_loss(model, partial(draw_z, product(subset)), *given, **kwargs)
            terms.update({name + suffix: value for name, value in self.terms.items()})
        self.terms = terms
        return loss


class MMVAEELBO(_FromDifferentiableLoss, pyro.infer.ELBO):
    r"""MMVAE's stratified importance-weighted objective (Shi et al. 2019) as a Pyro ELBO,

        (1/M) sum_m E_{z_1..z_K ~ q(z|x_m)} [ log (1/K) sum_k p(z_k, x, y) / q(z_k|x,y) ],

    q(z|x,y) = (1/M) sum_m q(z|x_m) the mixture of the M = 2 experts (``guides.experts.MixtureOfExperts``):
    K = ``num_particles`` draws from each expert in turn (stratified sampling of the mixture), each
    weighted by the mixture's density, the modality average outside the log. With one modality
    given it is the IWAE bound of that modality's expert. The likelihood weights scale log p(x|z)
    and log p(y|z) inside the weights (MMVAE's likelihood scaling); leave the warm-up at 1.

    Term per modality m: ``iwae_<m>``, the bound of the draws from that expert, per datapoint.
    """

    terms: dict = {}

    def __call__(self, model, guide):
        _check_experts(guide, MixtureOfExperts, "MMVAE")
        check_fits(model, guide)
        return super().__call__(model, guide)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("MMVAEELBO draws its particles per expert, in differentiable_loss")

    def differentiable_loss(self, model, guide, x=None, y=None, **kwargs) -> torch.Tensor:
        _check_experts(guide, MixtureOfExperts, "MMVAE")
        register(type(guide).__name__, guide)  # as the guide's forward does: SVI then sees its parameters
        names = [name for name, given in (("x", x), ("y", y)) if given is not None]
        bounds = [log_w.logsumexp(0) - math.log(self.num_particles)
                  for _, log_w in strata(model, guide.distribution(x, y), self.num_particles, x, y, **kwargs)]
        bound = torch.stack(bounds).mean(0)  # [B]
        self.terms = {f"iwae_{name}": b.detach().mean() for name, b in zip(names, bounds)}
        return -bound.sum()


def strata(model, q, num_particles: int, x=None, y=None, density=None, **kwargs):
    """MMVAE's strata: for each expert q_m of the mixture q in turn, K = ``num_particles`` draws z ~ q_m
    [K, B, z_dim] and their log weights log p(z, x, y) - log density(z) [K, B] (``density``: q if not given),
    the model traced once on all K draws (conditioned on z in a particles plate)."""
    density = q if density is None else density
    for expert in components(q):
        z = expert.rsample((num_particles,))
        with pyro.plate("particles", num_particles, dim=-2):
            model_trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x, y, **kwargs)
        model_trace.compute_log_prob()
        log_p = sum(site["log_prob"] for site in model_trace.nodes.values() if site["type"] == "sample")
        yield z, log_p - density.log_prob(z)


def _check_experts(guide, kind: type, name: str) -> None:
    if not isinstance(guide, kind):
        raise ValueError(f"the {name} objective needs a {kind.__name__} guide, got {type(guide).__name__}; pass a "
                         f"mmvae_zoo.guides.experts.{kind.__name__}")
