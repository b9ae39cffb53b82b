"""Tests of flows/: RealNVP-style coupling flows (paper Eq. 7-8)."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

import pyro
import pyro.distributions as dist
from mmvae_zoo.flows import AffineCouplingFlow, ConditionalAffineCouplingFlow
from mmvae_zoo.flows.coupling import LOG_SCALE_MAX, LOG_SCALE_MIN

SMALL = (16, 16)
CTX = 3


def randomise(flow, seed=0):
    """Re-initialise every layer (the zero-initialised last ones too): a non-identity flow."""
    torch.manual_seed(seed)
    for m in flow.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    return flow


def make(kind, dim, hidden_dims=SMALL, dtype=torch.float64, batch=(), seed=0):
    """(flow, distribution, transforms) for 'uncond' or 'cond'; conditional with random base and context."""
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "uncond":
        flow = randomise(AffineCouplingFlow(dim, hidden_dims=hidden_dims), seed).to(dtype)
        d = flow.distribution(torch.zeros(*batch, dim, dtype=dtype))
        return flow, d, flow.transforms()
    flow = randomise(ConditionalAffineCouplingFlow(dim, CTX, hidden_dims=hidden_dims), seed).to(dtype)
    loc = torch.randn(*batch, dim, generator=g, dtype=dtype)
    scale = torch.rand(*batch, dim, generator=g, dtype=dtype) + 0.5
    ctx = torch.randn(*batch, CTX, generator=g, dtype=dtype)
    d = flow.distribution(dist.Normal(loc, scale).to_event(1), ctx)
    return flow, d, flow.transforms(ctx)


def forward(transforms, x):
    for t in transforms:
        x = t(x)
    return x


def inverse(transforms, z):
    for t in reversed(transforms):
        z = t.inv(z)
    return z


@pytest.mark.parametrize("kind", ["uncond", "cond"])
@pytest.mark.parametrize("dim", [4, 5])
def test_log_prob_is_change_of_variables(kind, dim):
    _, d, transforms = make(kind, dim)
    for x in d.base_dist.sample((3,)):
        z = forward(transforms, x)
        log_det = torch.linalg.slogdet(jacobian(lambda v: forward(transforms, v), x))[1]
        expected = d.base_dist.log_prob(x) - log_det
        # clone: score afresh through the inverse, not through Pyro's cache of the last forward call
        assert torch.allclose(d.log_prob(z.detach().clone()), expected, atol=1e-9)


def test_one_flow_has_the_structure_of_eq_7_8():
    """z1' = z1 * s1(z2) + m1(z2): d z1'/d z1 is diagonal and z1' moves with z2; z2' moves with z1."""
    n1 = 5 // 2
    flow = randomise(AffineCouplingFlow(5, num_flows=1, hidden_dims=SMALL)).double()
    J = jacobian(lambda v: forward(flow.transforms(), v), torch.randn(5, dtype=torch.float64))
    block = J[:n1, :n1]
    assert torch.equal(block, torch.diag(torch.diagonal(block)))
    assert J[:n1, n1:].abs().sum() > 0 and J[n1:, :n1].abs().sum() > 0


@pytest.mark.parametrize("kind", ["uncond", "cond"])
@pytest.mark.parametrize("dim", [4, 5])
def test_inverse_of_forward_is_identity(kind, dim):
    _, _, transforms = make(kind, dim)
    z = 3 * torch.randn(64, dim, dtype=torch.float64)
    x = inverse(transforms, z)
    assert not torch.allclose(x, z, atol=1e-2)  # the flow is not the identity
    assert torch.allclose(forward(transforms, x.clone()), z, atol=1e-9)
    assert torch.allclose(inverse(transforms, forward(transforms, z).clone()), z, atol=1e-9)


@pytest.mark.parametrize("kind", ["uncond", "cond"])
def test_density_integrates_to_one_and_matches_samples(kind):
    _, d, _ = make(kind, 2)
    L, n = 12.0, 250
    g = torch.linspace(-L, L, n, dtype=torch.float64)
    cell = (g[1] - g[0]) ** 2
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = d.log_prob(grid).exp()
        s = d.sample((10000,))
    inside = (s.abs() <= L).all(-1, keepdim=True)
    assert abs(p.sum() * cell + (~inside).double().mean() - 1) < 0.01
    # E[z; z in grid] from the density and from the samples (~4 standard errors)
    grid_mean = (p[:, None] * grid).sum(0) * cell
    assert torch.allclose(grid_mean, (s * inside).mean(0), atol=0.08)


def test_fresh_flow_is_standard_normal():
    """Zero-initialised last layers: the flow starts as the identity, entropy of N(0, I)."""
    dim = 6
    d = AffineCouplingFlow(dim, hidden_dims=SMALL).distribution(torch.zeros(dim))
    z = d.sample((10000,))
    assert torch.allclose(d.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)
    entropy = 0.5 * dim * math.log(2 * math.pi * math.e)
    assert abs(-d.log_prob(z).mean().item() - entropy) < 0.05


def test_shapes_unconditional():
    K, B, D = 7, 3, 5
    flow = AffineCouplingFlow(D)
    d = flow.distribution(torch.zeros(B, D))
    assert d.batch_shape == (B,) and d.event_shape == (D,)
    z = d.rsample((K,))
    assert z.shape == (K, B, D) and d.log_prob(z).shape == (K, B)
    d0 = flow.distribution(torch.zeros(D))
    assert d0.batch_shape == () and d0.rsample((K,)).shape == (K, D)
    assert d0.log_prob(torch.randn(K, B, D)).shape == (K, B)


def test_shapes_and_context_broadcast_conditional():
    K, B, D = 7, 4, 5
    flow = randomise(ConditionalAffineCouplingFlow(D, CTX, hidden_dims=SMALL)).double()
    loc, scale = torch.randn(B, D, dtype=torch.float64), torch.rand(B, D, dtype=torch.float64) + 0.5
    ctx = torch.randn(B, CTX, dtype=torch.float64)
    d = flow.distribution(dist.Normal(loc, scale).to_event(1), ctx)
    assert d.batch_shape == (B,) and d.event_shape == (D,)
    z = d.rsample((K,))
    assert z.shape == (K, B, D)
    lp = d.log_prob(z.clone())
    assert lp.shape == (K, B)
    # datapoint b, scored alone with its own context, gives column b: the context lines up with
    # the data dim, and Pyro's ConditionalDenseNN expands it over the particle dim
    for b in range(B):
        d_b = flow.distribution(dist.Normal(loc[b], scale[b]).to_event(1), ctx[b])
        assert torch.allclose(d_b.log_prob(z[:, b].clone()), lp[:, b], atol=1e-10)


def test_dtype_follows_to():
    for kind in ["uncond", "cond"]:
        flow, d, _ = make(kind, 5, dtype=torch.float64, batch=(2,))
        tensors = list(flow.parameters()) + list(flow.buffers())
        assert all(t.dtype == torch.float64 for t in tensors)
        z = d.rsample((3,))
        assert z.dtype == torch.float64 and d.log_prob(z).dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_moves_everything():
    dev = torch.device("cuda")
    prior = randomise(AffineCouplingFlow(5)).to(dev)
    cond = randomise(ConditionalAffineCouplingFlow(5, CTX)).to(dev)
    for flow in (prior, cond):
        assert all(t.device.type == "cuda" for t in list(flow.parameters()) + list(flow.buffers()))
    d1 = prior.distribution(torch.zeros(4, 5, device=dev))
    d2 = cond.distribution(dist.Normal(torch.zeros(4, 5, device=dev), 1.0).to_event(1), torch.randn(4, CTX, device=dev))
    for d in (d1, d2):
        z = d.rsample((2,))
        assert z.device.type == "cuda" and d.log_prob(z.clone()).device.type == "cuda"


@pytest.mark.parametrize("kind", ["uncond", "cond"])
def test_extreme_inputs_stay_finite(kind):
    D, num_flows = 6, 6
    flow, d, transforms = make(kind, D, hidden_dims=(64, 64), dtype=torch.float32, batch=(50,))
    big = 1e3 * torch.randn(50, D)
    assert torch.isfinite(d.log_prob(big)).all()
    # forward direction from an extreme base point; the clip bounds every log|det|
    x, log_det = big, 0.0
    for t in transforms:
        y = t(x)
        log_det = log_det + t.log_abs_det_jacobian(x, y)
        x = y
    assert torch.isfinite(x).all()
    assert (log_det <= LOG_SCALE_MAX * D * num_flows).all() and (log_det >= LOG_SCALE_MIN * D * num_flows).all()
    if kind == "cond":  # a very wide text-encoder Gaussian
        wide = flow.distribution(dist.Normal(torch.zeros(50, D), 1e3).to_event(1), torch.randn(50, CTX))
        z = wide.rsample((4,))
        assert torch.isfinite(z).all() and torch.isfinite(wide.log_prob(z)).all()


@pytest.mark.parametrize("kind", ["uncond", "cond"])
def test_gradients_reach_every_parameter(kind):
    B, D = 8, 5
    flow, _, _ = make(kind, D, dtype=torch.float32)
    loc = torch.randn(B, D, requires_grad=True)
    ctx = torch.randn(B, CTX, requires_grad=True)
    if kind == "uncond":
        d = flow.distribution(loc)
    else:
        d = flow.distribution(dist.Normal(loc, 1.0).to_event(1), ctx)
    data = torch.randn(B, D)  # density training (learned prior, q_Agg) and reparameterised samples (q_True)
    loss = -d.log_prob(data).mean() + d.rsample((4,)).pow(2).mean()
    loss.backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    if kind == "cond":
        assert loc.grad.abs().sum() > 0 and ctx.grad.abs().sum() > 0


def test_pyro_elbo_with_particle_and_data_plates():
    pyro.clear_param_store()
    K, B, D = 5, 4, 6
    prior = randomise(AffineCouplingFlow(D, hidden_dims=SMALL))
    qzy = randomise(ConditionalAffineCouplingFlow(D, CTX, hidden_dims=SMALL), seed=1)
    encoder = torch.nn.Linear(CTX, 2 * D)
    text, obs = torch.randn(B, CTX), torch.randn(B)
    shapes = []

    def model(text, obs):
        pyro.module("prior", prior)
        with pyro.plate("data", B, dim=-1):
            z = pyro.sample("z", prior.distribution(text.new_zeros(B, D)))
            pyro.sample("obs", dist.Normal(z.sum(-1), 1.0), obs=obs)

    def guide(text, obs):
        pyro.module("qzy", qzy)
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(text).chunk(2, dim=-1)
        with pyro.plate("data", B, dim=-1):
            z = pyro.sample("z", qzy.distribution(dist.Normal(loc, log_scale.exp()).to_event(1), text))
        shapes.append(z.shape)

    elbo = pyro.infer.Trace_ELBO(num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, guide, text, obs)
    loss.backward()
    assert shapes == [(K, B, D)] and torch.isfinite(loss)
    for module in (prior, qzy, encoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    # an explicit particle plate around the guide's data plate; the model replayed on its z
    with pyro.plate("particles", K, dim=-2):
        guide_tr = pyro.poutine.trace(guide).get_trace(text, obs)
        model_tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_tr)).get_trace(text, obs)
    for tr in (guide_tr, model_tr):
        tr.compute_log_prob()
        assert tr.nodes["z"]["value"].shape == (K, B, D) and tr.nodes["z"]["log_prob"].shape == (K, B)
