"""The losses that train each guide (and, for Eq. 1, the model), per datapoint.

- ``elbo_loss``: -E_q[log p(x, y, z) - log q(z|.)]; with q(z|x) and the full model this is
  Eq. 1 (trains model and image encoder), with q(z|y) and the text-only model p(z) p(y|z)
  it is Eq. 3 (q_True, trains only the text guide: the model's parameters are frozen).
- ``aggregate_loss``: -E_{x~p_D(x|y)} E_{q(z|x)}[log q_phi(z|y)], which is Eq. 5
  (E KL(q(z|x) || q_phi(z|y))) less the entropy of q(z|x), a constant in phi: q_Agg. With the
  unconditional flow in place of q_phi(z|y) it fits the learned aggregate prior q(z) (Table 2).
- ``jmvae_kl_loss``: JMVAE-kl (Suzuki et al., Eq. 4), the negative ELBO of q(z|x,w) plus
  alpha * (KL(q(z|x,w) || q(z|x)) + KL(q(z|x,w) || q(z|w))), the KLs in closed form.

All return the loss averaged over the batch and a dict of per-datapoint terms for logging.
"""
from __future__ import annotations

from functools import partial

import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from guides.base import Guide


def elbo_loss(model, guide: Guide, x, y, *, annealing: float = 1.0, x_weight: float = 1.0,
              y_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Negative ELBO of ``model.model`` with ``guide.guide`` (one z sample per datapoint).

    The loss uses the scaled sites (KL warm-up ``annealing``, likelihood weights); the terms
    are unscaled: ``log_px``, ``log_py`` (reconstruction) and ``kl`` (single-sample estimate).
    Equal to ``pyro.infer.Trace_ELBO().differentiable_loss`` / B, as every latent site is
    reparameterised (tests check this); written out to get the terms at no extra cost.
    """
    loss, terms, _ = _elbo(model, guide, x, y, annealing=annealing, x_weight=x_weight, y_weight=y_weight)
    return loss, terms


def _elbo(model, guide: Guide, x, y, **scales) -> tuple[torch.Tensor, dict, poutine.Trace]:
    """``elbo_loss`` and the guide's trace (whose z site holds q's distribution)."""
    guide_trace = poutine.trace(partial(guide.guide, annealing=scales["annealing"])).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(partial(model.model, **scales), trace=guide_trace)).get_trace(x, y)
    batch = guide_trace.nodes["z"]["value"].shape[0]
    loss = (guide_trace.log_prob_sum() - model_trace.log_prob_sum()) / batch
    with torch.no_grad():
        terms = {f"log_p{name}": _log_prob(model_trace, name) / batch for name in ("x", "y") if name in model_trace}
        terms["kl"] = (_log_prob(guide_trace, "z") - _log_prob(model_trace, "z")) / batch
    return loss, terms, guide_trace


def gaussian_kl(q: dist.Distribution, p: dist.Distribution) -> torch.Tensor:
    """KL(q || p) [B] of diagonal Gaussians (``Normal(loc, scale).to_event(1)``), in closed form:
    sum_d log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2."""
    return kl_divergence(q.base_dist, p.base_dist).sum(-1)


def jmvae_kl_loss(model, joint: Guide, image_guide: Guide, text_guide: Guide, x, y, *, alpha: float,
                  annealing: float = 1.0, x_weight: float = 1.0, y_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Minus Eq. 4 of the JMVAE paper per datapoint (averaged over the batch):

        -L_JM(x, w) = -ELBO(x, w; q(z|x,w)) + alpha * (KL(q(z|x,w) || q(z|x)) + KL(q(z|x,w) || q(z|w))).

    The ELBO is ``elbo_loss``'s (its KL(q(z|x,w) || p(z)) scaled by the warm-up ``annealing``, the
    likelihoods by ``x_weight`` and ``y_weight``, 1 in the paper);
    the two alpha terms are exact Gaussian KLs, not annealed, and their gradients reach q(z|x,w)
    as well as q(z|x) and q(z|w). Extra terms: ``kl_qx`` and ``kl_qw`` (batch means).
    """
    loss, terms, guide_trace = _elbo(model, joint, x, y, annealing=annealing, x_weight=x_weight, y_weight=y_weight)
    q = guide_trace.nodes["z"]["fn"]
    kl_x = gaussian_kl(q, image_guide.distribution(x, None)).mean()
    kl_w = gaussian_kl(q, text_guide.distribution(None, y)).mean()
    terms.update(kl_qx=kl_x.detach(), kl_qw=kl_w.detach())
    return loss + alpha * (kl_x + kl_w), terms


def aggregate_loss(target: Guide, image_guide: Guide, x, y) -> tuple[torch.Tensor, dict]:
    """-E_{q(z|x)}[log target(z|y)]: ``target`` scored at z drawn from the frozen ``image_guide``."""
    with torch.no_grad():
        image_trace = poutine.trace(image_guide.guide).get_trace(x, None)
    target_trace = poutine.trace(poutine.replay(target.guide, trace=image_trace)).get_trace(x, y)
    batch = x.shape[0]
    loss = -target_trace.log_prob_sum() / batch
    with torch.no_grad():
        kl = (_log_prob(image_trace, "z") - _log_prob(target_trace, "z")) / batch
    return loss, {"kl_qx_target": kl}


def _log_prob(trace, name: str) -> torch.Tensor:
    site = trace.nodes[name]
    return site["fn"].log_prob(site["value"]).sum()
