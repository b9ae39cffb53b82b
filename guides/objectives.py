"""The losses that train each guide (and, for Eq. 1, the model), per datapoint.

- ``elbo_loss``: -E_q[log p(x, y, z) - log q(z|.)]; with q(z|x) and the full model this is
  Eq. 1 (trains model and image encoder), with q(z|y) and the text-only model p(z) p(y|z)
  it is Eq. 3 (q_True, trains only the text guide: the model's parameters are frozen).
- ``aggregate_loss``: -E_{x~p_D(x|y)} E_{q(z|x)}[log q_phi(z|y)], which is Eq. 5
  (E KL(q(z|x) || q_phi(z|y))) less the entropy of q(z|x), a constant in phi: q_Agg. With the
  unconditional flow in place of q_phi(z|y) it fits the learned aggregate prior q(z) (Table 2).

Both return the loss averaged over the batch and a dict of per-datapoint terms for logging.
"""
from __future__ import annotations

from functools import partial

import torch
from pyro import poutine

from guides.base import Guide


def elbo_loss(model, guide: Guide, x, y, *, annealing: float = 1.0, x_weight: float = 1.0,
              y_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Negative ELBO of ``model.model`` with ``guide.guide`` (one z sample per datapoint).

    The loss uses the scaled sites (KL warm-up ``annealing``, likelihood weights); the terms
    are unscaled: ``log_px``, ``log_py`` (reconstruction) and ``kl`` (single-sample estimate).
    Equal to ``pyro.infer.Trace_ELBO().differentiable_loss`` / B, as every latent site is
    reparameterised (tests check this); written out to get the terms at no extra cost.
    """
    guide_trace = poutine.trace(partial(guide.guide, annealing=annealing)).get_trace(x, y)
    model_fn = partial(model.model, annealing=annealing, x_weight=x_weight, y_weight=y_weight)
    model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(x, y)
    batch = guide_trace.nodes["z"]["value"].shape[0]
    loss = (guide_trace.log_prob_sum() - model_trace.log_prob_sum()) / batch
    with torch.no_grad():
        terms = {f"log_p{name}": _log_prob(model_trace, name) / batch for name in ("x", "y") if name in model_trace}
        terms["kl"] = (_log_prob(guide_trace, "z") - _log_prob(model_trace, "z")) / batch
    return loss, terms


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
