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
"""
from __future__ import annotations

import torch

from metrics import BoundEstimate, iwae_log_likelihood


def bound_pairs(components) -> dict:
    """name -> (model(x, y), proposal(x, y)) for the bounds this run defines."""
    model, image_guide = components.model, components.image_guide

    def proposal(x, y):
        return image_guide.guide(x, None)

    pairs = {
        "log p(x,y)": (lambda x, y: model.model(x, y), proposal),
        "log p(x)": (lambda x, y: model.model(x, None), proposal),
        "log p(y)": (lambda x, y: model.model(None, y), proposal),
    }
    if components.config.guide in ("text_true", "text_agg"):
        text_guide = components.guide
        pairs["log p(x|y)"] = (lambda x, y: model.model(x, None, prior=text_guide.distribution(None, y)), proposal)
    return pairs


@torch.no_grad()
def evaluate_bounds(components, batches, num_particles: int, chunk_size: int | None = None,
                    names: list[str] | None = None) -> dict[str, BoundEstimate]:
    """Per-datapoint bounds over ``batches`` of (x, y), concatenated: name -> BoundEstimate."""
    pairs = bound_pairs(components)
    names = names or list(pairs)
    unknown = [n for n in names if n not in pairs]
    if unknown:
        raise ValueError(f"bound {unknown[0]!r} is not defined for a {components.config.guide} run; "
                         f"choose from {', '.join(pairs)}")
    for m in components.modules():
        m.eval()
    estimates = {n: [] for n in names}
    for x, y in batches:
        for n in names:
            estimates[n].append(iwae_log_likelihood(*pairs[n], x, y, num_particles=num_particles,
                                                    chunk_size=chunk_size))
    return {n: BoundEstimate.concatenate(e) for n, e in estimates.items()}
