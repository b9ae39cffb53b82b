"""The frozen image posteriors q(z|x) of text_agg and prior_agg, computed once and looked up per step:
the same losses, gradients and training as running the image encoder at every step, without running it."""
import pytest
import torch

from mmvae_zoo.datasets.loader import BatchLoader
from mmvae_zoo.guides.encoders import ImageGuide
from mmvae_zoo.training.config import preset
from mmvae_zoo.training.distributed import LossModule
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.runs import load_base
from mmvae_zoo.training.schemes import Components, build
from mmvae_zoo.training.trainer import train
from tests.helpers import tiny_config


def _fitted(tmp_path, tiny_base_run, guide):
    """``guide``'s tiny components on the trained base, frozen, the guide in training mode (dropout on)."""
    components = build(tiny_config(tmp_path, guide))
    load_base(components, tiny_base_run)
    components.freeze()
    components.guide.train()
    return components


def _step(components, x, y, **index):
    """One step's loss, terms and the trained guide's gradients, from a fixed seed."""
    components.guide.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    loss, terms = components.loss(5, x, y, **index)
    loss.backward()
    return loss.detach(), dict(terms), [p.grad.clone() for p in components.guide.parameters()]


def _count_image_guide_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("guide", ["text_agg", "prior_agg"])
def test_a_cached_step_equals_an_encoded_one_without_running_the_encoder(tmp_path, tiny_base_run, scenes, guide):
    """(a) loss, terms and gradients equal; (b) the image guide is not run; the table is q(z|x) of every image,
    computed in chunks (the last one overlapping) without drawing random numbers."""
    dataset, images, _ = scenes
    components = _fitted(tmp_path, tiny_base_run, guide)
    loader = BatchLoader(dataset, 3, seed=1)
    assert components.caches_image_posteriors and components.image_posteriors is None
    rng = torch.get_rng_state()
    components.cache_image_posteriors(loader.images, chunk=3)  # 8 images: chunks 0-2, 3-5, 5-7
    assert torch.equal(torch.get_rng_state(), rng)
    loc, scale = components.image_posteriors
    with torch.no_grad():
        q = components.image_guide.distribution(images, None).base_dist
    assert loc.shape == scale.shape == (8, components.config.net.z_dim)
    assert torch.allclose(loc, q.loc, atol=1e-6) and torch.allclose(scale, q.scale, atol=1e-6)
    calls = _count_image_guide_calls(components.image_guide)
    for step in (0, 1, 3):  # the second epoch reads another permutation
        x, y = loader.batch(step)
        encoded = _step(components, x, y)
        assert len(calls) == 1  # the hook sees the encoder's runs
        cached = _step(components, x, y, index=loader.indices(step))
        assert len(calls) == 1, "the image guide ran with the cache"
        calls.clear()
        assert torch.allclose(cached[0], encoded[0], rtol=1e-5, atol=1e-5)
        assert cached[1].keys() == encoded[1].keys() == {"kl_qx_target"}
        assert torch.allclose(cached[1]["kl_qx_target"], encoded[1]["kl_qx_target"], rtol=1e-5, atol=1e-5)
        for a, b in zip(cached[2], encoded[2]):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    other = _step(components, x, y, index=loader.indices(0))[0]  # another batch's posteriors: another loss
    assert not torch.allclose(other, encoded[0], rtol=1e-3)


def test_a_posterior_of_another_batch_size_is_refused(tmp_path, tiny_base_run, scenes):
    components = _fitted(tmp_path, tiny_base_run, "text_agg")
    loader = BatchLoader(scenes[0], 4)
    components.cache_image_posteriors(loader.images)
    x, y = loader.batch(0)
    with pytest.raises(ValueError, match=r"image_posterior has batch shape \[3\], not the batch's \[4\]"):
        components.loss(0, x, y, index=loader.indices(0)[:3])


def test_the_ddp_loss_module_passes_the_index_through(tmp_path, tiny_base_run, scenes):
    components = _fitted(tmp_path, tiny_base_run, "text_agg")
    loader = BatchLoader(scenes[0], 4)
    components.cache_image_posteriors(loader.images)
    calls = _count_image_guide_calls(components.image_guide)
    x, y = loader.batch(0)
    torch.manual_seed(0)
    direct = components.loss(0, x, y, index=loader.indices(0))[0]
    torch.manual_seed(0)
    assert torch.equal(LossModule(components)(0, x, y, index=loader.indices(0))[0], direct) and not calls


def _train_text_agg(tmp_path, tiny_base_run, name, steps=6, **train_args):
    config = tiny_config(tmp_path, "text_agg", steps=steps)
    config.data.root = tiny_base_run.config().data.root
    config.train.checkpoint_every = 3
    return train(config, RunDir(tmp_path / name), device=torch.device("cpu"), base=tiny_base_run, progress=False,
                 **train_args)


@pytest.fixture
def image_guide_calls(monkeypatch):
    """The number of times any ImageGuide's forward (the ELBO's draw of z ~ q(z|x)) runs."""
    calls = []
    forward = ImageGuide.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(ImageGuide, "forward", counted)
    return calls


def test_training_with_the_cache_is_training_without_it(tmp_path, tiny_base_run, monkeypatch, image_guide_calls):
    """(c) A text_agg run with the cache ends where one without it does; (b) its steps never run the encoder."""
    cached = _train_text_agg(tmp_path, tiny_base_run, "cached")
    assert cached.image_posteriors is not None and not image_guide_calls
    monkeypatch.setattr(Components, "caches_image_posteriors", property(lambda self: False))
    encoded = _train_text_agg(tmp_path, tiny_base_run, "encoded")
    assert encoded.image_posteriors is None and len(image_guide_calls) == 6
    theirs = encoded.guide.state_dict()
    for k, v in cached.guide.state_dict().items():
        assert torch.allclose(v, theirs[k], rtol=1e-4, atol=1e-6), k
    moved = build(cached.config).guide.state_dict()  # the runs trained: their guide left its initial weights
    assert not all(torch.equal(v, moved[k]) for k, v in cached.guide.state_dict().items())


def test_a_resumed_cached_run_is_bit_identical(tmp_path, tiny_base_run, image_guide_calls):
    """(c) Stopped at step 3 and resumed to 6 (the cache made again), a text_agg run ends bit for bit where an
    uninterrupted one does."""
    straight = _train_text_agg(tmp_path, tiny_base_run, "straight")
    _train_text_agg(tmp_path, tiny_base_run, "stopped", steps=3)
    resumed = _train_text_agg(tmp_path, tiny_base_run, "stopped", resume=True)
    assert resumed.image_posteriors is not None and not image_guide_calls
    theirs = resumed.guide.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in straight.guide.state_dict().items())


def test_no_cache_when_the_loader_binarizes(tmp_path, tiny_base_run, monkeypatch, image_guide_calls):
    """(d) Dynamic binarisation makes x random at each step: its q(z|x) cannot be cached."""
    init = BatchLoader.__init__

    def binarizing(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.binarize = True
    monkeypatch.setattr(BatchLoader, "__init__", binarizing)
    components = _train_text_agg(tmp_path, tiny_base_run, "binarized", steps=2)
    assert components.image_posteriors is None and len(image_guide_calls) == 2


def _jmvae_tiny(guide):
    config = preset("tiny", "mnist", "jmvae")
    config.guide = guide
    config.net.vocab, config.net.text_length = [str(d) for d in range(10)], 1  # MNIST's shapes without MNIST
    return config


VLVAE_SCHEMES, JMVAE_SCHEMES = ("image", "joint", "text_true", "text_agg", "prior_agg"), ("zero", "kl", "vae")


@pytest.mark.parametrize("model, guide", [("vlvae", g) for g in VLVAE_SCHEMES] + [("jmvae", g) for g in JMVAE_SCHEMES])
def test_only_the_aggregate_schemes_cache(tmp_path, model, guide):
    """(d) Schemes that train the model (or draw z from their own guide, text_true) keep no table and refuse one."""
    config = tiny_config(tmp_path, guide) if model == "vlvae" else _jmvae_tiny(guide)
    components = build(config)
    assert components.caches_image_posteriors == (guide in ("text_agg", "prior_agg"))
    if not components.caches_image_posteriors:
        with pytest.raises(ValueError, match="does not draw z from a frozen q"):
            components.cache_image_posteriors(torch.zeros((4,) + tuple(config.net.image_shape), dtype=torch.uint8))
        assert components.image_posteriors is None


def test_a_model_trained_here_is_not_cached(tmp_path, tiny_base_run, image_guide_calls):
    """(d) The image scheme's run (its q(z|x) trains) keeps no table."""
    config = tiny_config(tmp_path, "image", steps=2)
    config.data.root = tiny_base_run.config().data.root
    components = train(config, RunDir(tmp_path / "image"), device=torch.device("cpu"), progress=False)
    assert components.image_posteriors is None and len(image_guide_calls) == 2
