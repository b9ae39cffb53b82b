"""mmvae_zoo.guides.semi_amortised: q(z|x) with its mean refined per image by gradient steps.

On the linear-Gaussian model of ``test_iwae`` the exact posterior is known: refinement must carry
an imperfect amortised mean to the posterior mean (the mode of log p(x|z) + log p(z)), raise the
ELBO, and stay a valid proposal (its importance-weighted bound still below log p(x)). On a tiny
VLVAE it must climb log p(x|z) + log p(z) for every image and leave the networks untouched.
"""
import math

import pyro.distributions as dist
import torch

from mmvae_zoo.guides.base import Guide, sample_z
from mmvae_zoo.guides.semi_amortised import SemiAmortisedImageGuide
from mmvae_zoo.metrics import iwae_log_likelihood
from tests.test_iwae import SIGMA, LinearGaussian
from mmvae_zoo.training.runs import load_run


class ImageLinearGaussian(LinearGaussian):
    """The linear-Gaussian model seen as an image model: x the image, no text."""

    def image_log_joint(self, x, z):
        likelihood = dist.Normal(z @ self.W.T + self.b, SIGMA).to_event(1).log_prob(x)
        return likelihood + dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z)


class ImperfectGuide(Guide):
    def __init__(self, lg):
        super().__init__()
        self.lg = lg

    def distribution(self, x, y=None):
        loc = (x - self.lg.b) @ self.lg.bad_map.T
        return dist.Normal(loc, self.lg.bad_scale.expand_as(loc)).to_event(1)


def _setup(steps, lr=0.02):
    lg = ImageLinearGaussian()
    amortised = ImperfectGuide(lg)
    return lg, amortised, SemiAmortisedImageGuide(amortised, lg, steps, lr=lr)


def test_refinement_carries_the_mean_to_the_posterior_mean_and_keeps_the_scale():
    lg, amortised, refined = _setup(steps=1000)
    exact = (lg.x - lg.b) @ lg.post_map.T
    q0, q = amortised.distribution(lg.x), refined.distribution(lg.x)
    before, after = (q0.mean - exact).norm(dim=-1), (q.mean - exact).norm(dim=-1)
    assert (before > 0.1).all() and (after < 0.05 * before).all(), (before, after)
    assert torch.equal(q.base_dist.scale, q0.base_dist.scale)
    assert torch.equal(SemiAmortisedImageGuide(amortised, lg, 0).distribution(lg.x).mean, q0.mean)


def test_refinement_is_per_image_whatever_the_batch():
    lg, _, refined = _setup(steps=50)
    together = refined.distribution(lg.x).mean
    for idx in ([3], [7, 2, 2, 5]):
        torch.testing.assert_close(refined.distribution(lg.x[idx]).mean, together[idx], rtol=0, atol=1e-10)


def test_refined_proposal_raises_the_elbo_and_stays_a_lower_bound():
    lg, amortised, refined = _setup(steps=300)
    x = lg.x.repeat(200, 1)  # 1600 estimates per bound
    true = lg.log_px(x)
    torch.manual_seed(0)
    elbo0 = iwae_log_likelihood(lg.model, lambda x: sample_z(amortised.distribution(x)), x, num_particles=1).value
    elbo = iwae_log_likelihood(lg.model, lambda x: sample_z(refined.distribution(x)), x, num_particles=1).value
    gap0, gap = (true - elbo0).mean().item(), (true - elbo).mean().item()
    se = (true - elbo).std().item() / math.sqrt(len(x))
    assert gap < gap0 - 1.0 and gap > -3 * se, (gap0, gap, se)
    iwae = iwae_log_likelihood(lg.model, lambda x: sample_z(refined.distribution(x)), lg.x, num_particles=1000).value
    assert ((lg.log_px(lg.x) - iwae) > -0.05).all() and (lg.log_px(lg.x) - iwae).mean() < gap


def test_refinement_climbs_the_vlvae_image_joint_and_leaves_the_networks_alone(tiny_base_run, tiny_scenes):
    images, _ = tiny_scenes
    components = load_run(tiny_base_run.path)
    model = components.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    refined = SemiAmortisedImageGuide(components.image_guide, model, steps=30)
    with torch.no_grad():
        z0 = components.image_guide.distribution(images, None).mean
        z = refined.distribution(images, None).mean
        assert (model.image_log_joint(images, z) > model.image_log_joint(images, z0)).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
