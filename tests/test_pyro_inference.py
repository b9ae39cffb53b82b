"""The zoo's models, guides and ELBOs used the way a Pyro user would: ``SVI`` with a ``pyro.optim``
optimiser, and Pyro's ELBO-as-module pattern with a torch optimiser. Every scheme trains exactly its
trainable parameters and leaves its frozen parts (parameters and batchnorm statistics) as they were."""
import re

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from mmvae_zoo.guides import jmvae as jmvae_guides
from mmvae_zoo.guides.elbos import AggregateELBO, JMVAEKLELBO, LoggedTrace_ELBO
from mmvae_zoo.guides.encoders import ImageGuide
from mmvae_zoo.guides.prior import AggregatePrior
from mmvae_zoo.guides.text import TextGuide
from mmvae_zoo.models.jmvae import JMVAE, JMVAEConfig
from mmvae_zoo.models.vlvae import VLVAE
from mmvae_zoo.training.config import preset
from mmvae_zoo.training.schemes import SCHEMES, build
from tests.helpers import batch, tiny_config, tiny_net


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def jmvae_net(**changes) -> JMVAEConfig:
    return JMVAEConfig(vocab=[str(d) for d in range(10)], z_dim=4, hidden=16, **changes)


def ready(scheme: tuple[str, str], tmp_path):
    """A scheme's components as the trainer prepares them (frozen parts frozen, trained parts in training
    mode), with a batch and its model/guide inputs."""
    model, name = scheme
    if model == "vlvae":
        config = tiny_config(tmp_path, name)
        x, y = batch(config.net, 6)
    else:
        config = preset("tiny", "mnist", "jmvae")
        config.guide, config.net = name, jmvae_net()
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(6, 1, 28, 28, generator=g).round(), torch.randint(1, 11, (6, 1), generator=g)
    c = build(config)
    c.freeze()
    for m in c.trained().values():
        m.train()
    inputs = tuple(v if k in c.scheme.inputs else None for k, v in (("x", x), ("y", y)))
    return c, inputs


def parameters(c):
    """(trainable, frozen) parameter tensors of every module of the components."""
    everything = {id(p): p for m in c.modules() for p in m.parameters()}.values()
    return [p for p in everything if p.requires_grad], [p for p in everything if not p.requires_grad]


def snapshot(c) -> dict:
    return {(i, k): v.detach().clone() for i, m in enumerate(c.modules()) for k, v in m.state_dict().items()}


def assert_trained_exactly(c, before: dict) -> None:
    trainable, frozen = parameters(c)
    assert trainable and (frozen or c.trains_model)
    after = snapshot(c)
    frozen_ids = {id(p) for p in frozen}
    names = {(i, k): t for i, m in enumerate(c.modules()) for k, t in m.state_dict(keep_vars=True).items()}
    frozen_keys = {key for key, t in names.items() if id(t) in frozen_ids}
    frozen_keys |= {(i, k) for i, m in enumerate(c.modules()) for k, _ in m.named_buffers()
                    if m in c.frozen().values()}
    trainable_keys = {key for key, t in names.items() if id(t) in {id(p) for p in trainable}}
    assert all(torch.equal(after[k], before[k]) for k in frozen_keys), "a frozen tensor moved"
    unmoved = [k for k in trainable_keys if torch.equal(after[k], before[k])]
    assert not unmoved, f"trainable parameters did not move: {unmoved[:3]}"


ALL = list(SCHEMES)  # (model, scheme name)


@pytest.mark.parametrize("name", ALL, ids="-".join)
def test_svi_with_a_pyro_optimiser_trains_every_trainable_parameter_and_no_frozen_one(name, tmp_path):
    c, inputs = ready(name, tmp_path)
    before = snapshot(c)
    svi = SVI(c.model, c.guide, pyro.optim.Adam({"lr": 1e-2}), loss=c.elbo)
    for step in range(3):
        loss = svi.step(*inputs, **c.scheme.weights(c.config.train, step))
        assert isinstance(loss, float) and loss == loss
    trainable, _ = parameters(c)
    stored = {id(p) for _, p in pyro.get_param_store().named_parameters()}
    assert stored == {id(p) for p in trainable}  # the param store holds the modules' own tensors, and only those
    assert_trained_exactly(c, before)


@pytest.mark.parametrize("name", ALL, ids="-".join)
def test_elbo_module_with_a_torch_optimiser_trains_every_trainable_parameter_and_no_frozen_one(name, tmp_path):
    c, inputs = ready(name, tmp_path)
    before = snapshot(c)
    loss_fn = c.elbo(c.model, c.guide)
    trainable, _ = parameters(c)
    assert {id(p) for p in loss_fn.parameters() if p.requires_grad} == {id(p) for p in trainable}
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)  # Pyro's svi_torch.py, frozen ones included
    for step in range(3):
        loss = loss_fn(*inputs, **c.scheme.weights(c.config.train, step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_trained_exactly(c, before)


def test_the_users_snippet_trains_the_vlvae():
    """The issue's snippet: SVI on ``vae.model`` and ``guide.guide`` with Pyro's Trace_ELBO and optimiser."""
    net = tiny_net()
    vae, guide = VLVAE(net), ImageGuide(net)
    x, y = batch(net, 4)
    before = {k: v.clone() for k, v in [*vae.state_dict().items(), *guide.state_dict().items()]}
    svi = SVI(vae.model, guide.guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
    svi.step(x, y)
    assert len(list(pyro.get_param_store().keys())) == len(list(vae.parameters())) + len(list(guide.parameters()))
    after = [*vae.state_dict().items(), *guide.state_dict().items()]
    unmoved = [k for k, v in after if k in dict(vae.named_parameters()) | dict(guide.named_parameters())
               and torch.equal(v, before[k])]
    assert not unmoved, f"parameters that did not move: {unmoved}"


def test_two_guides_of_one_class_train_side_by_side_q_true_and_q_agg(tmp_path):
    """The README's swap: two SVI objects differing in guide and loss, stepped in turn, both train (Pyro's
    pyro.module would keep the first guide's tensors under the shared names, and the second would not train)."""
    net = tiny_net()
    vlvae, image_guide = VLVAE(net).requires_grad_(False).eval(), ImageGuide(net).requires_grad_(False).eval()
    q_true, q_agg = TextGuide(net, num_flows=2), TextGuide(net, num_flows=2)
    before = [{k: v.clone() for k, v in q.state_dict().items()} for q in (q_true, q_agg)]
    svi_true = SVI(vlvae, q_true, pyro.optim.Adam({"lr": 1e-2}), loss=Trace_ELBO())
    svi_agg = SVI(vlvae, q_agg, pyro.optim.Adam({"lr": 1e-2}), loss=AggregateELBO(image_guide))
    x, y = batch(net, 4)
    for _ in range(3):
        svi_true.step(None, y)
        svi_agg.step(x, y)
    for q, old in zip((q_true, q_agg), before):
        moved = [k for k, v in q.state_dict().items() if not torch.equal(v, old[k])]
        assert len(moved) == len(old), f"only {len(moved)} of {len(old)} tensors moved"
    assert all(any(p is s for s in pyro.get_param_store().values()) for p in q_agg.parameters())


def test_the_param_store_holds_the_modules_own_tensors_even_channels_last_ones():
    from mmvae_zoo.models.registration import register

    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    register("conv", conv)
    assert pyro.get_param_store()["conv$$$weight"] is conv.weight
    register("conv", torch.nn.Conv2d(3, 4, 3))  # another module under the same name takes it over
    assert pyro.get_param_store()["conv$$$weight"] is not conv.weight


def test_the_learned_prior_is_the_models_prior_by_construction():
    net = tiny_net()
    q = AggregatePrior(net, num_flows=2)
    vlvae = VLVAE(net, prior=q)
    trace = pyro.poutine.trace(vlvae).get_trace(*batch(net, 3))
    z = trace.nodes["z"]
    assert torch.allclose(z["fn"].log_prob(z["value"]), q.batched(3).log_prob(z["value"]))
    assert set(vlvae.likelihood_networks().state_dict()) == set(VLVAE(net).state_dict())


@pytest.mark.parametrize("make, message", [
    (lambda net, j: AggregateELBO(TextGuide(net)), "AggregateELBO needs the trained VLVAE's image guide q(z|x), got "
                                                    "TextGuide"),
    (lambda net, j: AggregateELBO(ImageGuide(net))(VLVAE(net), jmvae_guides.JointGuide(j)),
     "the guide JointGuide was built for a JMVAEConfig, not for a VLVAE"),
    (lambda net, j: LoggedTrace_ELBO()(VLVAE(net), jmvae_guides.KLGuide(j)), "built for a JMVAEConfig, not for a VLVAE"),
    (lambda net, j: LoggedTrace_ELBO()(JMVAE(j), ImageGuide(net)), "built for a VLVAEConfig, not for a JMVAE"),
    (lambda net, j: JMVAEKLELBO(0.1)(JMVAE(j), jmvae_guides.JointGuide(j)),
     "JMVAE-kl needs a guide with its own q(z|x) and q(z|w), got JointGuide"),
    (lambda net, j: LoggedTrace_ELBO()(VLVAE(net), ImageGuide(tiny_net(z_dim=5))), "(z_dim differ)"),
    (lambda net, j: (lambda q: AggregateELBO(q)(VLVAE(net), q))(ImageGuide(net)), "not the image guide to itself"),
    (lambda net, j: AggregateELBO(ImageGuide(net))(VLVAE(net), torch.nn.Linear(2, 2)),
     "the guide Linear is not a guide of the zoo"),
    (lambda net, j: JMVAEKLELBO(-1.0), "alpha must not be negative"),
])
def test_a_guide_or_loss_that_does_not_fit_fails_at_construction_in_one_line(make, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        make(tiny_net(), jmvae_net())
    assert "\n" not in str(error.value)
