"""The VLVAE paper's likelihood bounds, as model / proposal pairs handed to ``metrics.iwae``.

Each bound is log p(target) >= E[logmeanexp_k log w_k] with w = p(target, z) / q(z|.) and
z_1..z_K from the proposal (Burda et al.); all with the true model (no likelihood weights, no
KL warm-up; batchnorm and dropout in eval mode):

| name       | model density                     | proposal  | where            |
| ---------- | --------------------------------- | --------- | ---------------- |
| log p(x,y) | p(z) p(x|z) p(y|z)                | q(z|x)    | Eq. 1            |
| log p(x)   | p(z) p(x|z)                       | q(z|x)    | Table 2          |
| log p(y)   | p(z) p(y|z)                       | q(z|x)    | Table 2          |
| log p(x|y) | q(z|y) p(x|z)  (q(z|y) for p(z))  | q(z|x)    | Eq. 6, Table 1   |

p(z) is N(0, I) for a base run and the learned q(z) for a ``prior_agg`` run. log p(y) uses
the paired image's q(z|x) as proposal: any proposal gives a valid bound, and this one is
shared by both priors, so Table 2 compares like with like.

log p(x|y) is defined for every run with a q(z|y) (``text_guide``): the trained guide of a
``text_true`` or ``text_agg`` run (the model and q(z|x) are then its base's), and the run's own
q(z|y) of the schemes that train the VLVAE with one (``kl``, ``mvae``, ``mmvae``: their own model,
q(z|x) and q(z|y)).

JMVAE runs (Suzuki et al., 4.3.1 and appendix B; x the image, w the text or label):

| name                   | model density         | proposal   | where                          |
| ---------------------- | --------------------- | ---------- | ------------------------------ |
| log p(x) multiple      | p(z) p(x|z)           | q(z|x,w)   | Eq. 6                          |
| log p(x) single        | p(z) p(x|z)           | q(z|x)     | Eq. 7                          |
| log p(x,w)             | p(z) p(x|z) p(w|z)    | q(z|x,w)   | Table 3 (appendix D)           |
| log p(w)               | p(z) p(w|z)           | p(z)       | for Eq. 8                      |
| log p(x|w) single      | q(z|w) p(x|z)         | q(z|w)     | Eq. 9: q(z|w) in place of p(z) |

A VAE run (``--guide vae``, the paper's VAE row) has one bound, log p(x) with proposal q(z|x),
named ``log p(x) multiple`` after the column where the paper reports it.

The multiple conditional bound (Eq. 8) is log p(x,w) - log p(w), with log p(w) estimated from K
prior samples (``evaluation.jmvae``): the paper's Table 1 and Table 3 differ by log 10 in every
row, as this form predicts for MNIST labels. The single conditional bound samples from the single
encoder of the given modality, q(z|w) (paper 4.3.1), so its weights are p(x|z): it measures how
well images generated from the label explain the test image, which is what collapses for
JMVAE-zero (paper: -4838). Our copy of the paper has the equations stripped; this reading also
matches the paper's values (q(z|x) as the proposal instead gave about -94 on our model, near the
multiple bound, where the paper reports -113 to -130).
"""
from __future__ import annotations

from contextlib import nullcontext

import pyro
import torch

from mmvae_zoo.guides.base import sample_z
from mmvae_zoo.metrics import BoundEstimate, iwae_log_likelihood


def bound_pairs(components) -> dict:
    """name -> (model(x, y), proposal(x, y)) for the bounds this run defines: the Pyro model of the
    density and the proposal's distribution q(z|.) over a batch (batch shape [B])."""
    if components.config.model == "jmvae":
        return _jmvae_pairs(components)
    model, image_guide = components.model, components.image_guide

    def proposal(x, y):
        return image_guide.distribution(x, None)

    pairs = {
        "log p(x,y)": (lambda x, y: model(x, y), proposal),
        "log p(x)": (lambda x, y: model(x, None), proposal),
        "log p(y)": (lambda x, y: model(None, y), proposal),
    }
    q_text = components.text_posterior
    if q_text is not None:
        pairs["log p(x|y)"] = (lambda x, y: model(x, None, prior=q_text.distribution(None, y)), proposal)
    return pairs


def _jmvae_pairs(components) -> dict:
    model, joint, image_guide, text_guide = (components.model, components.guide, components.image_guide,
                                             components.text_guide)

    def image_proposal(x, y):
        return image_guide.distribution(x, None)

    if text_guide is None:  # the VAE baseline: p(z) p(x|z) with q(z|x)
        return {"log p(x) multiple": (lambda x, y: model(x, None), image_proposal)}

    def text_proposal(x, y):
        return text_guide.distribution(None, y)

    return {
        "log p(x) multiple": (lambda x, y: model(x, None), joint.distribution),
        "log p(x) single": (lambda x, y: model(x, None), image_proposal),
        "log p(x,w)": (model, joint.distribution),
        "log p(w)": (lambda x, y: model(None, y), lambda x, y: model.prior_distribution(len(y))),
        "log p(x|w) single": (lambda x, y: model(x, None, prior=text_proposal(x, y)), text_proposal),
    }


@torch.no_grad()
def evaluate_bounds(components, batches, num_particles: int, chunk_size: int | None = None,
                    names: list[str] | None = None) -> dict[str, BoundEstimate]:
    """Per-datapoint bounds over ``batches`` of (x, y), concatenated: name -> BoundEstimate.

    Each proposal's distribution is computed once per batch (a semi-amortised q(z|x) refines once for
    all the bounds it serves) and sampled for every chunk of particles;
    Pyro's validation, when enabled, checks the first batch only (as training checks its first step).
    """
    pairs = bound_pairs(components)
    names = names or list(pairs)
    unknown = [n for n in names if n not in pairs]
    if unknown:
        raise ValueError(f"bound {unknown[0]!r} is not defined for a {components.config.guide} run; "
                         f"choose from {', '.join(pairs)}")
    for m in components.modules():
        m.eval()
    estimates = {n: [] for n in names}
    for i, (x, y) in enumerate(batches):
        proposals = {}  # proposal -> its distribution for this batch: bounds sharing a proposal compute it once
        for n in names:
            model, proposal = pairs[n]
            if proposal not in proposals:
                proposals[proposal] = proposal(x, y)
            q = proposals[proposal]
            with pyro.validation_enabled(False) if i else nullcontext():
                estimates[n].append(iwae_log_likelihood(model, lambda x, y: sample_z(q), x, y,
                                                        num_particles=num_particles, chunk_size=chunk_size))
    return {n: BoundEstimate.concatenate(e) for n, e in estimates.items()}
