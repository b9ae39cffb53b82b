"""Is MMVAE's doubly reparameterised gradient (DReG) unbiased for its stratified bound? An experiment.

MMVAE's code (Shi et al. 2019, ``objectives.m_dreg_looser``) trains with Tucker et al.'s DReG
estimator applied to the stratified bound of ``guides.elbos.MMVAEELBO``: in each stratum the
normalised weights w~_k multiply the loss and, through a hook, once more the gradient reaching
z_k, and the mixture density in the weights is taken with its parameters held fixed. DReG's
identity E_q[f(z) d log q(z)/d phi] = E_eps[df/dz dz/dphi] needs z drawn from the density whose
score it replaces; here z comes from one expert q(z|x_m) while the score is the mixture's. For
K = 1 the average over the strata is an expectation under the mixture and the identity holds;
for K > 1 it does not in general.

This script estimates both gradients of the encoders' parameters on a tiny JMVAE (a 2x2 image,
three labels, z of 2, a fixed batch of 4), averaged over N independent draws each, and prints per
K the z-scores of their difference over the parameters: a mean z^2 near 1 means no detectable
bias (the parameters' estimates are correlated, so it scatters by more than a chi-square mean of
independent ones would). It also prints the ratio of the summed variances (DReG / plain).

    python bench/bench_dreg.py --draws 3000 --particles 1 2 8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

from mmvae_zoo.guides.elbos import MMVAEELBO, strata  # noqa: E402
from mmvae_zoo.guides.experts import MixtureOfExperts, components, mixture  # noqa: E402
from mmvae_zoo.models.jmvae import JMVAE, JMVAEConfig  # noqa: E402


def dreg_loss(model, guide, x, y, num_particles: int) -> torch.Tensor:
    """MMVAE's DReG surrogate of the stratified bound (its ``m_dreg_looser``), per batch."""
    q = guide.distribution(x, y)
    held = mixture([dist.Normal(e.base_dist.loc.detach(), e.base_dist.scale.detach()).to_event(1)
                    for e in components(q)])
    surrogates = []
    for z, log_w in strata(model, q, num_particles, x, y, density=held):
        weights = log_w.detach().softmax(0)
        z.register_hook(lambda grad, w=weights: w.unsqueeze(-1) * grad)
        surrogates.append((weights * log_w).sum(0))
    return -torch.stack(surrogates).mean(0).sum()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=3000, help="independent gradient draws per estimator (default 3000)")
    p.add_argument("--particles", type=int, nargs="+", default=[1, 2, 8], help="K values (default 1 2 8)")
    p.add_argument("--seed", type=int, default=1, help="seed of the networks and data (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = JMVAEConfig(image_shape=(1, 2, 2), z_dim=2, hidden=8, vocab=["a", "b", "c"])
    torch.manual_seed(args.seed)
    model, guide = JMVAE(config), MixtureOfExperts(config)
    x, y = torch.bernoulli(torch.rand(4, 1, 2, 2)), torch.randint(1, 4, (4, 1))
    params = list(guide.parameters())

    def gradient(loss_fn) -> torch.Tensor:
        for param in params:
            param.grad = None
        loss_fn().backward()
        return torch.cat([param.grad.flatten() for param in params])

    for k in args.particles:
        plain = torch.stack([gradient(lambda: MMVAEELBO(k)(model, guide)(x, y)) for _ in range(args.draws)])
        dreg = torch.stack([gradient(lambda: dreg_loss(model, guide, x, y, k)) for _ in range(args.draws)])
        se = (plain.var(0) / args.draws + dreg.var(0) / args.draws).sqrt()
        used = se > 1e-9
        z = (plain.mean(0) - dreg.mean(0))[used] / se[used]
        print(f"K={k}: mean z^2 {z.pow(2).mean():.2f} (about 1 without bias), "
              f"max |z| {z.abs().max():.2f} over {int(used.sum())} parameters; "
              f"variance DReG / plain {dreg.var(0)[used].sum() / plain.var(0)[used].sum():.3f}")


if __name__ == "__main__":
    main()
