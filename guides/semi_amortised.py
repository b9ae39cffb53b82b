"""Semi-amortised q(z|x): the image encoder's Gaussian, its mean refined per image by gradient steps.

The encoder's q(z|x) = N(mu(x), sigma(x)) is amortised: one network for every image, and its mean
misses the z the decoder would render best (the amortisation gap; Cremer, Li & Duvenaud, 2018).
Semi-amortised inference (Kim et al., 2018, "Semi-Amortized Variational Autoencoders") starts
from the encoder and takes K gradient steps per image:

    q_K(z|x) = N(mu_K, sigma(x)),   mu_0 = mu(x),   mu_{k+1} = Adam step on -[log p(x|mu_k) + log p(mu_k)]

q_K is still a function of x alone (deterministic; per image, since the networks are in eval mode
and Adam acts per coordinate), so it serves wherever q(z|x) does: reconstructions, the ceiling and
as the proposal of importance-weighted bounds. The networks are never updated; K = 0 is q(z|x).
"""
from __future__ import annotations

import pyro.distributions as dist
import torch

from mmvae_zoo.guides.base import Guide


def refined_means(log_joint, x: torch.Tensor, z: torch.Tensor, steps: int, lr: float = 0.05) -> torch.Tensor:
    """``z`` moved by ``steps`` Adam steps (rate ``lr``) on ``log_joint(x, z)`` (per image, [B]);
    only z moves, no gradient reaches the networks."""
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            # a fresh tensor each step: a flow prior caches its inverse by tensor identity, and Adam
            # updates z in place
            (z.grad,) = torch.autograd.grad(-log_joint(x, z.clone()).sum(), z)
            optimizer.step()
    return z.detach()


class SemiAmortisedImageGuide(Guide):
    """q_K(z|x): ``amortised``'s N(mu(x), sigma(x)) with mu refined by ``steps`` Adam steps on the
    ``model``'s log p(x|z) + log p(z) (``VLVAE.image_log_joint``), sigma kept. For evaluation
    (networks in eval mode); it holds the model's method, not its weights."""

    def __init__(self, amortised: Guide, model, steps: int, lr: float = 0.05):
        super().__init__()
        if steps < 0:
            raise ValueError(f"refinement steps must not be negative, got {steps}")
        self.amortised = amortised
        self.config, self.inputs = amortised.config, amortised.inputs
        self.log_joint = model.image_log_joint
        self.steps, self.lr = steps, lr

    def distribution(self, x, y=None):
        q = self.amortised.distribution(x, None)
        loc = refined_means(self.log_joint, x, q.mean, self.steps, self.lr)
        return dist.Normal(loc, q.base_dist.scale).to_event(1)
