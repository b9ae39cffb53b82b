"""The VLVAE paper's bounds composed from a run (evaluation.bounds)."""
import pyro
import pytest
import torch

from mmvae_zoo.evaluation.bounds import bound_pairs, evaluate_bounds
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.runs import load_run
from mmvae_zoo.training.trainer import train
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def tiny_agg_run(tmp_path_factory, tiny_base_run):
    config = tiny_config(tmp_path_factory.mktemp("agg"), "text_agg")
    config.data.root = tiny_base_run.config().data.root
    run = RunDir(tmp_path_factory.mktemp("agg") / "run")
    train(config, run, device=torch.device("cpu"), base=tiny_base_run, progress=False)
    return load_run(run.path)


def test_base_runs_have_no_conditional_bound(tiny_base_run):
    assert set(bound_pairs(load_run(tiny_base_run.path))) == {"log p(x,y)", "log p(x)", "log p(y)"}


def test_joint_bound_never_exceeds_the_image_bound_on_the_same_samples(tiny_agg_run, tiny_scenes):
    """w(x, y) = w(x) p(y|z) <= w(x) for every particle, as p(y|z) <= 1 for discrete text."""
    x, y = tiny_scenes
    pyro.set_rng_seed(0)
    joint = evaluate_bounds(tiny_agg_run, [(x, y)], num_particles=30, names=["log p(x,y)"])["log p(x,y)"]
    pyro.set_rng_seed(0)
    image = evaluate_bounds(tiny_agg_run, [(x, y)], num_particles=30, names=["log p(x)"])["log p(x)"]
    assert joint.value.shape == (len(x),)
    assert (joint.value <= image.value + 1e-3).all()
    assert (image.value - joint.value).mean() > 1  # and the text term is really there


def test_conditional_bound_uses_q_z_given_y_as_the_prior(tiny_agg_run, tiny_scenes):
    """With K = 1 and the same z: log p(x|y) - log p(x) = log q(z|y) - log p(z) (Eq. 6)."""
    x, y = tiny_scenes
    bounds = {}
    for name in ("log p(x|y)", "log p(x)"):
        pyro.set_rng_seed(1)
        bounds[name] = evaluate_bounds(tiny_agg_run, [(x, y)], num_particles=1, names=[name])[name].value
    pyro.set_rng_seed(1)
    z = tiny_agg_run.image_guide.distribution(x, None).sample()
    expected = tiny_agg_run.guide.distribution(None, y).log_prob(z) - tiny_agg_run.model.prior_distribution(len(x)).log_prob(z)
    assert torch.allclose(bounds["log p(x|y)"] - bounds["log p(x)"], expected, atol=1e-2)


def test_batches_are_concatenated_and_unknown_bounds_refused(tiny_agg_run, tiny_scenes):
    x, y = tiny_scenes
    result = evaluate_bounds(tiny_agg_run, [(x[:3], y[:3]), (x[3:], y[3:])], num_particles=4, names=["log p(y)"])
    assert result["log p(y)"].value.shape == (len(x),)
    with pytest.raises(ValueError, match=r"bound 'log p\(z\)' is not defined"):
        evaluate_bounds(tiny_agg_run, [(x, y)], num_particles=2, names=["log p(z)"])
