"""MVAE's product of experts and MMVAE's mixture of experts (guides/experts.py) and the objectives that
train them (guides/elbos.py: MVAEELBO, MMVAEELBO), checked against closed forms and direct computations."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from mmvae_zoo.guides.elbos import MMVAEELBO, MVAEELBO
from mmvae_zoo.guides.experts import GivenOnly, MixtureOfExperts, ProductOfExperts, components, mixture, product
from mmvae_zoo.models.jmvae import JMVAE, JMVAEConfig


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def gaussian(loc, scale):
    return dist.Normal(torch.as_tensor(loc, dtype=torch.float), torch.as_tensor(scale, dtype=torch.float)).to_event(1)


def tiny():
    """A JMVAE of a few pixels and three labels (no dropout or batchnorm: each pass is a fixed function)."""
    torch.manual_seed(0)
    config = JMVAEConfig(image_shape=(1, 2, 2), z_dim=2, hidden=8, vocab=["a", "b", "c"])
    x = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [1.0, 0.0]]], [[[0.0, 1.0], [0.0, 1.0]]]])
    y = torch.tensor([[1], [3], [2]])
    return config, JMVAE(config), x, y


def test_the_product_of_gaussian_experts_is_the_closed_form_with_the_prior_expert():
    q1, q2 = gaussian([[1.0, -2.0]], [[0.5, 2.0]]), gaussian([[3.0, 0.5]], [[1.0, 0.1]])
    poe = product([q1, q2]).base_dist
    t1, t2 = 1 / torch.tensor([[0.5, 2.0]]) ** 2, 1 / torch.tensor([[1.0, 0.1]]) ** 2
    precision = 1 + t1 + t2  # N(0, I) has precision 1 and mean 0
    assert torch.allclose(poe.scale, precision.rsqrt())
    assert torch.allclose(poe.loc, (t1 * torch.tensor([[1.0, -2.0]]) + t2 * torch.tensor([[3.0, 0.5]])) / precision)
    # and it is the normalised product of the densities: log-density differences add up over the experts
    a, b = torch.tensor([[0.3, -1.0]]), torch.tensor([[-2.0, 0.7]])
    prior = gaussian([[0.0, 0.0]], [[1.0, 1.0]])
    expected = sum(q.log_prob(a) - q.log_prob(b) for q in (prior, q1, q2))
    assert torch.allclose(product([q1, q2]).log_prob(a) - product([q1, q2]).log_prob(b), expected, atol=1e-5)


def test_the_product_is_finite_for_experts_of_extreme_scales():
    sharp, flat = gaussian([[2.0]], [[1e-4]]), gaussian([[5.0]], [[1e4]])  # precisions 1e8 and 1e-8
    poe = product([sharp, flat]).base_dist
    assert torch.isfinite(poe.loc).all() and torch.isfinite(poe.scale).all()
    assert torch.allclose(poe.loc, torch.tensor([[2.0]]), atol=1e-6)
    assert torch.allclose(poe.scale, torch.tensor([[1e-4]]), rtol=1e-4)
    tiny_scale = product([gaussian([[1.0]], [[1e-30]])]).base_dist  # its precision 1e60 overflows fp32
    assert torch.isfinite(tiny_scale.scale).all() and tiny_scale.scale.item() > 0


def test_the_mixture_density_is_the_log_mean_of_the_experts_densities():
    q1, q2 = gaussian([[1.0, -2.0], [0.0, 0.0]], [[0.5, 2.0], [1.0, 1.0]]), gaussian([[3.0, 0.5], [1.0, 1.0]],
                                                                                      [[1.0, 0.1], [0.3, 3.0]])
    q = mixture([q1, q2])
    z = torch.randn(7, 2, 2)
    expected = torch.logsumexp(torch.stack([q1.log_prob(z), q2.log_prob(z)]), 0) - math.log(2)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-5)
    assert [c.base_dist.loc.tolist() for c in components(q)] == [q1.base_dist.loc.tolist(), q2.base_dist.loc.tolist()]
    assert mixture([q1]) is q1 and components(q1) == [q1]
    assert torch.allclose(q.mean, (q1.mean + q2.mean) / 2)


def test_the_guides_combine_the_experts_of_the_modalities_given():
    config, _, x, y = tiny()
    poe, moe = ProductOfExperts(config), MixtureOfExperts(config)
    qx, qy = poe.image.distribution(x, None), poe.text.distribution(None, y)
    for given, experts in (((x, y), [qx, qy]), ((x, None), [qx]), ((None, y), [qy])):
        assert torch.allclose(poe.distribution(*given).base_dist.loc, product(experts).base_dist.loc)
    mx, my = moe.image.distribution(x, None), moe.text.distribution(None, y)
    z = torch.randn(3, 2)
    assert torch.allclose(moe.distribution(x, y).log_prob(z), mixture([mx, my]).log_prob(z))
    assert torch.equal(moe.distribution(None, y).base_dist.loc, my.base_dist.loc)
    only_text = GivenOnly(poe, "y")
    assert only_text.inputs == "y" and torch.equal(only_text.distribution(x, y).base_dist.loc,
                                                   poe.distribution(None, y).base_dist.loc)
    with pytest.raises(ValueError, match="needs images x, texts y or both"):
        poe.distribution(None, None)


def elbo_by_hand(model, q, x, y):
    """log p(z) + log p(x|z) + log p(y|z) - log q(z) at one z ~ q (the given modalities only), per datapoint."""
    z = q.rsample()
    value = model.prior_distribution(len(z)).log_prob(z) - q.log_prob(z)
    if x is not None:
        value = value + model.image_likelihood(z).log_prob(x)
    if y is not None:
        value = value + model.text_likelihood(z, y).log_prob(y - 1)
    return value


def test_the_mvae_objective_is_the_joint_elbo_plus_each_unimodal_elbo(monkeypatch):
    config, model, x, y = tiny()
    guide = ProductOfExperts(config)
    calls = []
    for expert in (guide.image, guide.text):
        run = expert.distribution
        monkeypatch.setattr(expert, "distribution", lambda *given, run=run: calls.append(1) or run(*given))
    torch.manual_seed(1)
    elbo = MVAEELBO()
    loss = elbo(model, guide)(x, y)
    assert len(calls) == 2  # each expert's network once, for all three ELBOs
    assert set(elbo.terms) == {"log_px", "log_py", "kl", "log_px_x", "kl_x", "log_py_y", "kl_y"}
    torch.manual_seed(1)  # the same draws, in the same order: joint, image only, text only
    expected = sum(elbo_by_hand(model, guide.distribution(*given), *given).sum()
                   for given in ((x, y), (x, None), (None, y)))
    assert torch.allclose(loss, -expected, rtol=1e-5)
    torch.manual_seed(1)
    image_only = MVAEELBO()(model, guide)(x, None)
    torch.manual_seed(1)
    assert torch.allclose(image_only, -elbo_by_hand(model, guide.distribution(x, None), x, None).sum(), rtol=1e-5)


def test_the_mmvae_objective_is_the_stratified_importance_weighted_bound():
    config, model, x, y = tiny()
    guide, K = MixtureOfExperts(config), 5
    torch.manual_seed(2)
    elbo = MMVAEELBO(num_particles=K)
    loss = elbo(model, guide)(x, y)
    assert set(elbo.terms) == {"iwae_x", "iwae_y"}
    torch.manual_seed(2)  # K draws from q(z|x), then K from q(z|y), each weighted by the mixture
    q = guide.distribution(x, y)
    bounds = []
    for expert in (guide.image.distribution(x, None), guide.text.distribution(None, y)):
        z = expert.rsample((K,))
        log_w = (model.prior_distribution(3).log_prob(z) + model.image_likelihood(z).log_prob(x)
                 + model.text_likelihood(z, y).log_prob(y - 1) - q.log_prob(z))
        bounds.append(torch.logsumexp(log_w, 0) - math.log(K))
    assert torch.allclose(loss, -(bounds[0] + bounds[1]).sum() / 2, rtol=1e-5)


def test_the_mmvae_bound_lies_below_the_joint_log_likelihood_and_tightens_with_more_particles():
    config, model, x, y = tiny()
    guide = MixtureOfExperts(config)
    # log p(x, y) by quadrature over the 2-d z (a fine grid covers the prior's mass)
    grid = torch.linspace(-6, 6, 301)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)
    log_joint = (model.prior_distribution(3).log_prob(z) + model.image_likelihood(z).log_prob(x)
                 + model.text_likelihood(z, y).log_prob(y - 1))
    log_p = (torch.logsumexp(log_joint, 0) + 2 * math.log(grid[1] - grid[0])).sum()
    torch.manual_seed(3)
    repeats = 200  # the batch repeated: one call averages 200 independent estimates of each datapoint's bound
    with torch.no_grad():
        bound = {k: -MMVAEELBO(num_particles=k)(model, guide)(x.repeat(repeats, 1, 1, 1), y.repeat(repeats, 1)) / repeats
                 for k in (1, 10, 200)}
    assert bound[1] < bound[10] < bound[200] <= log_p + 0.01
    assert log_p - bound[200] < 0.1 * (log_p - bound[1])  # most of the gap closed


@pytest.mark.parametrize("make", [lambda c: MVAEELBO()(JMVAE(c), MixtureOfExperts(c)),
                                  lambda c: MMVAEELBO()(JMVAE(c), ProductOfExperts(c))])
def test_each_objective_refuses_the_other_guide_in_one_line(make):
    config, *_ = tiny()
    with pytest.raises(ValueError, match=r"objective needs a (ProductOfExperts|MixtureOfExperts) guide, got"):
        make(config)
