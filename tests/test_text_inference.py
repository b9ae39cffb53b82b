"""Text inference q_True / q_Agg and the learned prior: what trains, what stays frozen, one switch."""

import pytest
import torch

from mmvae_zoo.training import samples
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.schemes import build
from mmvae_zoo.training.runs import load_base, load_run
from mmvae_zoo.training.trainer import train
from tests.helpers import tiny_config


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("guide", ["text_true", "text_agg", "prior_agg"])
def test_frozen_parts_do_not_move_and_the_guide_does(tmp_path, tiny_base_run, guide, tiny_scenes):
    config = tiny_config(tmp_path, guide)
    config.data.root = tiny_base_run.config().data.root
    components = build(config)
    load_base(components, tiny_base_run)
    components.freeze()
    frozen_before = {k: _snapshot(m) for k, m in components.frozen().items()}
    guide_before = _snapshot(components.guide)
    optimizer = torch.optim.Adam(components.guide.parameters(), lr=1e-2)
    x, y = tiny_scenes
    for step in range(3):
        loss, _ = components.loss(step, x, y)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, module in components.frozen().items():
                assert all(p.grad is None for p in module.parameters()), f"{name} got gradients"
            assert all(p.grad is not None for p in components.guide.parameters())
        optimizer.step()
    for name, module in components.frozen().items():  # parameters and batchnorm statistics, bit for bit
        after = module.state_dict()
        assert all(torch.equal(after[k], v) for k, v in frozen_before[name].items()), f"{name} moved"
    moved = [k for k, v in components.guide.state_dict().items() if not torch.equal(v, guide_before[k])]
    assert moved, "the trained guide did not change"


@pytest.mark.parametrize("guide", ["text_true", "prior_agg"])
def test_sample_grids_leave_every_module_in_its_mode(tmp_path, tiny_scenes, guide):
    """The grids drawn at each checkpoint switch to eval mode and back: frozen networks stay in eval mode
    (no dropout in the frozen p(y|z) of Eq. 3), trained ones in training mode."""
    components = build(tiny_config(tmp_path, guide))
    components.freeze()
    for m in components.trained().values():
        m.train()
    before = {m: m.training for top in components.modules() for m in top.modules()}
    samples.save(components, tiny_scenes, tmp_path / "grid.png")
    assert {m: m.training for top in components.modules() for m in top.modules()} == before
    assert not components.model.text_decoder.readout.training


def test_text_true_and_text_agg_differ_only_in_the_loss(tmp_path):
    true, agg = build(tiny_config(tmp_path, "text_true")), build(tiny_config(tmp_path, "text_agg"))
    assert type(true.guide) is type(agg.guide)
    assert [p.shape for p in true.guide.parameters()] == [p.shape for p in agg.guide.parameters()]


def test_text_agg_loss_is_the_cross_entropy_of_image_posterior_samples(tmp_path, tiny_base_run, tiny_scenes):
    """AggregateELBO = -E_{q(z|x)} log q(z|y): with the same z, it equals -mean log q(z|y)."""
    import pyro
    config = tiny_config(tmp_path, "text_agg")
    components = build(config)
    load_base(components, tiny_base_run)
    components.freeze()
    x, y = tiny_scenes
    pyro.set_rng_seed(3)
    loss, _ = components.loss(0, x, y)
    pyro.set_rng_seed(3)
    z = components.image_guide.distribution(x, None).sample()
    assert torch.allclose(loss, -components.guide.distribution(None, y).log_prob(z).mean(), rtol=1e-5)


def test_prior_agg_is_the_models_prior_when_loaded(tmp_path, tiny_base_run):
    config = tiny_config(tmp_path, "prior_agg")
    config.data.root = tiny_base_run.config().data.root
    run = RunDir(tmp_path / "prior")
    train(config, run, device=torch.device("cpu"), base=tiny_base_run, progress=False)
    components = load_run(run.path)
    assert components.model.prior is components.guide
    z = torch.randn(5, config.net.z_dim)
    assert torch.allclose(components.model.prior_distribution(5).log_prob(z),
                          components.guide.distribution(None, torch.ones(5, 1)).log_prob(z))
    assert not torch.allclose(components.model.prior_distribution(5).log_prob(z),
                              torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))  # trained away from N(0, I)


def test_sampling_from_text_and_unknown_words(tmp_path, tiny_base_run):
    config = tiny_config(tmp_path, "text_agg")
    config.data.root = tiny_base_run.config().data.root
    run = RunDir(tmp_path / "agg")
    train(config, run, device=torch.device("cpu"), base=tiny_base_run, progress=False)
    components = load_run(run.path)
    images, texts = components.sample_from_text(["large red metal cube left small blue rubber sphere"], 4)
    assert images.shape == (1, 4, 3, 32, 32) and len(texts[0]) == 4 and len(texts[0][0].split()) == 9
    with pytest.raises(ValueError, match="unknown word 'huge'.*known words: small large"):
        components.sample_from_text(["huge red metal cube left small blue rubber sphere"])
