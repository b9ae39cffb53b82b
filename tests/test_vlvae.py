"""The VLVAE model, its image and joint guides, and the Eq. 1 objective."""
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from mmvae_zoo.guides.encoders import ImageGuide, JointGuide
from mmvae_zoo.guides.elbos import LoggedTrace_ELBO
from mmvae_zoo.models.blocks import GaussianHead, ImageDecoderNet, ImageEncoderNet, TextEncoderNet
from mmvae_zoo.models.text import TextDecoderNet
from mmvae_zoo.models.vlvae import VLVAE
from mmvae_zoo.training.schemes import build, warmup
from tests.helpers import batch, tiny_config, tiny_net


def test_networks_take_leading_particle_dims():
    net = tiny_net()
    enc = ImageEncoderNet(net.image_shape, net.channels, net.num_down, net.hidden, net.stem_kernel, net.stem_stride)
    dec = ImageDecoderNet(net.image_shape, net.channels, net.num_down, net.hidden, net.grid,
                          net.stem_kernel, net.stem_stride)
    x, y = batch(net, 3)
    assert enc(x).shape == (3, net.hidden)
    assert enc(x.expand(2, *x.shape)).shape == (2, 3, net.hidden)
    assert dec(torch.randn(5, 3, net.hidden)).shape == (5, 3) + net.image_shape
    text = TextEncoderNet(len(net.vocab) + 1, net.hidden)
    assert text(y).shape == (3, net.hidden)
    head = GaussianHead(net.hidden, net.z_dim, net.hidden)
    loc, scale = head(torch.randn(2, 3, net.hidden))
    assert loc.shape == scale.shape == (2, 3, net.z_dim) and (scale > 0).all()
    decoder = TextDecoderNet(len(net.vocab) + 1, net.text_length, net.hidden, net.hidden)
    assert decoder(torch.randn(5, 3, net.hidden), y).shape == (5, 3, net.text_length, len(net.vocab) + 1)
    samples = decoder.sample(torch.randn(5, 3, net.hidden))
    assert samples.shape == (5, 3, net.text_length) and (samples > 0).all()


def test_mean_beta_is_torchs_beta():
    from mmvae_zoo.models.vlvae import MeanBeta

    g = torch.Generator().manual_seed(0)
    alpha = torch.rand(4, 3, 5, 5, generator=g).clamp(1e-4, 1 - 1e-4).requires_grad_()
    x = torch.rand(4, 3, 5, 5, generator=g).clamp(1e-3, 1 - 1e-3)
    ours, theirs = MeanBeta(alpha, 100.0), pyro.distributions.Beta(100 * alpha, 100 * (1 - alpha))
    assert torch.allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-5, atol=1e-4)
    assert torch.allclose(torch.autograd.grad(ours.log_prob(x).sum(), alpha)[0],
                          torch.autograd.grad(theirs.log_prob(x).sum(), alpha)[0], rtol=1e-4, atol=1e-2)
    assert torch.allclose(ours.mean, alpha)
    wide = ours.expand((2, 4, 3, 5, 5))  # as under a particle plate
    assert isinstance(wide, MeanBeta) and torch.allclose(wide.log_prob(x), ours.log_prob(x).expand(2, 4, 3, 5, 5))


def test_compile_blocks_compiles_the_outermost_blocks_in_place(tmp_path):
    from mmvae_zoo.models.blocks import compile_blocks

    components = build(tiny_config(tmp_path, "image"))
    model, guide = components.model, components.guide
    keys = set(model.state_dict()) | {f"guide.{k}" for k in guide.state_dict()}
    blocks = compile_blocks(model) + compile_blocks(guide)
    assert blocks == [model.decoder, model.image_decoder, model.text_decoder, guide.encoder, guide.head]
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert model._compiled_call_impl is None  # the Pyro program stays eager
    assert set(model.state_dict()) | {f"guide.{k}" for k in guide.state_dict()} == keys  # checkpoints unchanged


def test_text_encoder_skips_trailing_padding():
    net = tiny_net()
    torch.manual_seed(0)
    text = TextEncoderNet(len(net.vocab) + 1, net.hidden)
    y = torch.tensor([[3, 4, 5, 0, 0]])
    # the GRU's kernels for 5 and 3 steps round differently (1e-7); reading the padding moves it by far more
    assert torch.allclose(text(y), text(y[:, :3]), atol=1e-6)
    assert not torch.allclose(text(y), text(torch.tensor([[3, 4, 5, 1, 1]])), atol=1e-3)


def test_image_encoder_rejects_sizes_it_cannot_take():
    with pytest.raises(ValueError, match="multiple of 4"):
        ImageEncoderNet((3, 30, 30), 4, 1, 32, 3, 2)
    enc = ImageEncoderNet((3, 32, 32), 4, 1, 32, 3, 2)
    with pytest.raises(ValueError, match=r"expected images of shape \[3, 32, 32\]"):
        enc(torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("guide_cls", [ImageGuide, JointGuide])
def test_model_and_guide_site_shapes(guide_cls):
    net = tiny_net()
    model, guide = VLVAE(net), guide_cls(net)
    x, y = batch(net, 4)
    guide_trace = poutine.trace(guide.guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x, y)
    sites = {**{k: v for k, v in model_trace.nodes.items() if v["type"] == "sample"}}
    assert sites["z"]["fn"].batch_shape == (4,) and sites["z"]["fn"].event_shape == (net.z_dim,)
    assert sites["x"]["fn"].batch_shape == (4,) and sites["x"]["fn"].event_shape == net.image_shape
    assert sites["y"]["fn"].batch_shape == (4,) and sites["y"]["fn"].event_shape == (net.text_length,)
    assert guide_trace.nodes["z"]["fn"].batch_shape == (4,)
    model_trace.compute_log_prob()
    assert all(torch.isfinite(s["log_prob"]).all() for s in sites.values())


def test_model_leaves_out_missing_modalities_and_vectorises_over_particles():
    net = tiny_net()
    model = VLVAE(net).eval()
    x, y = batch(net, 3)
    assert "y" not in poutine.trace(model.model).get_trace(x, None).nodes
    assert "x" not in poutine.trace(model.model).get_trace(None, y).nodes
    with pyro.plate("particles", 5, dim=-2):
        trace = poutine.trace(model.model).get_trace(x, y)
    trace.compute_log_prob()
    assert trace.nodes["x"]["log_prob"].shape == (5, 3)
    assert trace.nodes["y"]["log_prob"].shape == (5, 3)


def test_beta_likelihood_finite_at_pixel_extremes():
    net = tiny_net()
    model = VLVAE(net)
    x = torch.zeros((2,) + net.image_shape)
    x[1] = 1.0
    with torch.no_grad():
        for p in model.image_decoder.parameters():
            p.mul_(100)  # saturate alpha towards 0 and 1
    trace = poutine.trace(model.model).get_trace(x, None)
    trace.compute_log_prob()
    assert torch.isfinite(trace.nodes["x"]["log_prob"]).all()


def test_text_likelihood_and_its_gradient_finite_at_extreme_logits():
    net = tiny_net()
    model = VLVAE(net)
    x, y = batch(net, 3)
    with torch.no_grad():
        for p in model.text_decoder.readout.parameters():
            p.mul_(1e4)  # logits of order 1e5 and more: any naive softmax overflows
    trace = poutine.trace(model.model).get_trace(None, y)
    log_py = trace.nodes["y"]["fn"].log_prob(trace.nodes["y"]["value"])
    assert torch.isfinite(log_py).all() and (log_py < -1e3).any()  # far from the data, but finite
    log_py.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.text_decoder.parameters() if p.grad is not None)


def test_eq1_elbo_is_pyros_trace_elbo_and_the_formula_with_its_scales():
    """Eq. 1 with warm-up and likelihood weights: our ELBO, Pyro's Trace_ELBO and the sum written out agree."""
    net = tiny_net()
    model, guide = VLVAE(net).eval(), ImageGuide(net).eval()
    x, y = batch(net, 4)
    kw = dict(annealing=0.3, x_weight=0.5, y_weight=20.0)
    elbo = LoggedTrace_ELBO()
    pyro.set_rng_seed(1)
    ours = elbo(model, guide)(x, y, **kw)
    terms = elbo.terms
    pyro.set_rng_seed(1)
    theirs = Trace_ELBO().differentiable_loss(model, guide, x, y, **kw)
    assert torch.equal(ours, theirs)
    pyro.set_rng_seed(1)
    q = guide.distribution(x, None)
    z = q.rsample()
    h = model.decoder(z)
    log_px = model.image_likelihood(h).log_prob(x.clamp(1e-3, 1 - 1e-3))
    log_py = model.text_likelihood(h, y).log_prob(y)
    kl = q.log_prob(z) - model.prior_distribution(4).log_prob(z)
    by_hand = -(0.5 * log_px + 20 * log_py - 0.3 * kl).sum()
    assert torch.allclose(ours, by_hand, rtol=1e-5)
    for name, value in (("log_px", log_px), ("log_py", log_py), ("kl", kl)):  # unscaled, per datapoint
        assert torch.allclose(terms[name], value.mean(), rtol=1e-5), name


def test_warmup_starts_positive_and_reaches_one():
    assert 0 < warmup(0, 20_000) < 1e-4
    assert warmup(9_999, 20_000) == pytest.approx(0.5)
    assert warmup(19_999, 20_000) == 1.0 and warmup(10**6, 20_000) == 1.0
    assert warmup(0, 0) == 1.0


def test_loss_decreases_on_a_fixed_batch(tiny_scenes):
    torch.manual_seed(0)
    net = tiny_net()
    model, guide = VLVAE(net), ImageGuide(net)
    x, y = tiny_scenes
    loss_fn = LoggedTrace_ELBO()(model, guide)  # Pyro's ELBO-as-module pattern
    opt = torch.optim.Adam(loss_fn.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss = loss_fn(x, y, x_weight=0.25, y_weight=10.0, annealing=warmup(step, 10)) / len(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.cuda
def test_training_step_on_cuda():
    net = tiny_net()
    model, guide = VLVAE(net).cuda(), JointGuide(net).cuda()
    x, y = (t.cuda() for t in batch(net, 4))
    loss = Trace_ELBO()(model, guide)(x, y)
    loss.backward()
    assert loss.is_cuda and all(p.grad.is_cuda for p in guide.parameters() if p.grad is not None)
    z = model.prior_distribution(3).sample()
    images, texts = model.generate(z)
    assert images.is_cuda and texts.is_cuda


def test_text_decoder_gru_stays_in_training_mode_and_computes_the_same():
    """cuDNN backpropagates only through a GRU in training mode; the frozen p(y|z) of Eq. 3 needs it."""
    net = tiny_net()
    decoder = VLVAE(net).eval().text_decoder
    assert decoder.gru.training and not decoder.readout.training
    _, y = batch(net, 3)
    h = torch.randn(3, net.hidden)
    logits = decoder(h, y)
    nn.Module.train(decoder.gru, False)  # a plain GRU's eval mode
    assert torch.equal(decoder(h, y), logits)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_text_true_gradient_reaches_the_guide_through_the_frozen_decoder(tmp_path, device):
    components = build(tiny_config(tmp_path, "text_true")).to(torch.device(device))
    components.freeze()
    components.guide.train()
    x, y = (t.to(device) for t in batch(components.config.net, 4))
    loss, _ = components.loss(0, x, y)
    loss.backward()
    assert all(p.grad is not None for p in components.guide.parameters())  # the flow starts as the identity
    assert all(p.grad.abs().sum() > 0 for p in components.guide.encoder.parameters())
    assert all(p.grad is None for m in components.frozen().values() for p in m.parameters())
