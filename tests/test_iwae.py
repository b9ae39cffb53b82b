"""Tests of metrics.iwae and metrics.diagnostics on a linear-Gaussian latent model.

z ~ N(0, I_D), x | z ~ N(W z + b, sigma^2 I_P)  =>  x ~ N(b, W W^T + sigma^2 I_P),
and the exact posterior is q*(z | x) = N(S W^T (x - b) / sigma^2, S) with
S = (I + W^T W / sigma^2)^-1, so log p(x), the posterior and the ELBO of any Gaussian
guide are known in closed form. Everything runs in float64.
"""

from __future__ import annotations

import math
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO

from mmvae_zoo.metrics import BoundEstimate, iwae_log_likelihood, log_importance_weights
from mmvae_zoo.metrics import diagnostics
from mmvae_zoo.metrics.diagnostics import effective_sample_size, psis_khat

D, P, SIGMA, B = 4, 6, 0.6, 8  # B * D = 32: torch's CPU normal sampler is chunk-invariant
DT = torch.float64


class LinearGaussian:
    def __init__(self, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(P, D, generator=g, dtype=DT)
        self.b = torch.randn(P, generator=g, dtype=DT)
        cov_x = self.W @ self.W.T + SIGMA**2 * torch.eye(P, dtype=DT)
        self.marginal = dist.MultivariateNormal(self.b, covariance_matrix=cov_x)
        self.x = self.b + torch.randn(B, P, generator=g, dtype=DT) @ torch.linalg.cholesky(cov_x).T
        self.post_cov = torch.linalg.inv(torch.eye(D, dtype=DT) + self.W.T @ self.W / SIGMA**2)
        self.post_map = self.post_cov @ self.W.T / SIGMA**2  # posterior mean = post_map (x - b)
        self.post_tril = torch.linalg.cholesky(self.post_cov)
        # A deliberately imperfect amortised guide: a wrong linear map, a diagonal and
        # over-dispersed scale (so the weights have finite variance and K matters).
        noise = torch.randn(D, P, generator=torch.Generator().manual_seed(2), dtype=DT)
        self.bad_map = 0.85 * self.post_map + 0.1 * noise
        self.bad_scale = 1.2 * self.post_cov.diagonal().sqrt()

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        return self.marginal.log_prob(x)

    def model(self, x: torch.Tensor) -> None:
        n = x.shape[-2]
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(n, D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, SIGMA).to_event(1), obs=x)

    def gaussian_guide(self, lin_map: torch.Tensor, scale: torch.Tensor):
        def guide(x: torch.Tensor) -> None:
            n = x.shape[-2]
            with pyro.plate("data", n, dim=-1):
                loc = (x - self.b) @ lin_map.T
                pyro.sample("z", dist.Normal(loc, scale.expand(n, D)).to_event(1))

        return guide

    def imperfect_guide(self, x: torch.Tensor) -> None:
        self.gaussian_guide(self.bad_map, self.bad_scale)(x)

    def exact_guide(self, x: torch.Tensor) -> None:
        n = x.shape[-2]
        with pyro.plate("data", n, dim=-1):
            loc = (x - self.b) @ self.post_map.T
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=self.post_tril))

    def analytic_elbo(self, x: torch.Tensor, lin_map: torch.Tensor, scale: torch.Tensor):
        """ELBO of q = N(m, diag(s^2)), m = lin_map (x - b), per datapoint."""
        m = (x - self.b) @ lin_map.T  # [n, D]
        var = scale**2  # [D]
        resid = x - self.b - m @ self.W.T
        trace = (self.W**2 @ var).sum()  # tr(W diag(var) W^T)
        lik = -0.5 * P * math.log(2 * math.pi * SIGMA**2) - (
            (resid**2).sum(-1) + trace
        ) / (2 * SIGMA**2)
        prior = -0.5 * D * math.log(2 * math.pi) - 0.5 * ((m**2).sum(-1) + var.sum())
        entropy = 0.5 * D * math.log(2 * math.pi * math.e) + 0.5 * var.log().sum()
        return lik + prior + entropy


@pytest.fixture(scope="module")
def lg() -> LinearGaussian:
    return LinearGaussian()


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    yield


def _iwae_values(log_w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def test_bound_grows_with_k_and_approaches_log_px_from_below(lg):
    reps = 50  # each datapoint 50 times in one batch: 400 independent estimates per K
    x = lg.x.repeat(reps, 1)
    true = lg.log_px(x)
    torch.manual_seed(0)
    gaps, ses = [], []
    for k in (1, 10, 100, 1000):
        log_w = log_importance_weights(lg.model, lg.imperfect_guide, x, num_particles=k)
        assert log_w.shape == (k, reps * B)
        gap = true - _iwae_values(log_w)  # >= 0 in expectation
        gaps.append(gap.mean().item())
        ses.append(gap.std().item() / math.sqrt(gap.numel()))
    # The K = 1 gap (~3.7 nats) is far above noise; each step up in K closes part of it.
    assert gaps[0] > 1.0
    for i in range(3):
        noise = 3 * math.hypot(ses[i], ses[i + 1])
        assert gaps[i + 1] < gaps[i] + noise, (gaps, ses)
    assert gaps[1] < gaps[0] - 10 * math.hypot(ses[0], ses[1])
    # K = 1000: never above log p(x) by more than 3 standard errors (~0.03 nats), and
    # within 0.1 nats below it. Why 0.1: for this over-dispersed Gaussian proposal the
    # weights have finite variance and the delta method gives a bias of
    # Var(w) / (2 K p(x)^2) ~ (K / ESS - 1) / (2 K) ~ 0.01-0.02 nats; 3 SE adds ~0.03.
    # 0.1 is ~35x below the K = 1 gap, so an estimator stuck near the ELBO fails.
    assert gaps[3] > -3 * ses[3], (gaps, ses)
    assert gaps[3] < 0.1, (gaps, ses)


def test_k1_is_the_elbo_in_expectation(lg):
    reps = 2000  # 16000 one-sample estimates
    x = lg.x.repeat(reps, 1)
    torch.manual_seed(1)
    est = iwae_log_likelihood(lg.model, lg.imperfect_guide, x, num_particles=1)
    assert est.num_particles == 1
    assert torch.allclose(est.ess, torch.ones_like(est.ess))
    assert torch.isnan(est.khat).all()  # undefined for K < 25
    elbo = lg.analytic_elbo(lg.x, lg.bad_map, lg.bad_scale)  # [B]
    diff = est.value.view(reps, B) - elbo
    se = diff.std().item() / math.sqrt(diff.numel())
    assert abs(diff.mean().item()) < 4 * se, (diff.mean().item(), se)
    # per datapoint too (8 checks at 4.5 SE each)
    per_point_se = diff.std(0) / math.sqrt(reps)
    assert (diff.mean(0).abs() < 4.5 * per_point_se).all()


def _zoo_vlvae():
    from mmvae_zoo.guides.encoders import ImageGuide
    from mmvae_zoo.models.vlvae import VLVAE
    from tests.helpers import batch, tiny_net

    net = tiny_net()
    torch.manual_seed(0)
    model, guide = VLVAE(net).eval(), ImageGuide(net).eval()
    return model, guide, batch(net, 4)


@pytest.mark.parametrize("pair", ["linear_gaussian", "zoo_vlvae"])
def test_bounds_summed_are_pyros_renyi_elbo_and_at_k1_its_trace_elbo(lg, pair):
    """The per-datapoint bounds add up to Pyro's own IWAE objective, RenyiELBO(alpha=0) with vectorised
    particles, on the same draws; with one particle they are Trace_ELBO. For a user's toy model and the zoo's
    VLVAE with q(z|x), called with the caller's arguments."""
    model, guide, args = (lg.model, lg.imperfect_guide, (lg.x,)) if pair == "linear_gaussian" else _zoo_vlvae()
    tolerance = 1e-12 if pair == "linear_gaussian" else 1e-6
    with torch.no_grad():
        for k in (1, 64):
            pyro.set_rng_seed(k)
            ours = iwae_log_likelihood(model, guide, *args, num_particles=k).value
            pyro.set_rng_seed(k)
            renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
            assert ours.sum().item() == pytest.approx(-renyi.loss(model, guide, *args), rel=tolerance, abs=0)
        pyro.set_rng_seed(1)
        one = iwae_log_likelihood(model, guide, *args, num_particles=1).value
        pyro.set_rng_seed(1)
        assert one.sum().item() == pytest.approx(-Trace_ELBO().loss(model, guide, *args), rel=tolerance, abs=0)
    assert ours.shape == (len(args[0]),) and not torch.equal(ours, one)


def test_exact_posterior_gives_constant_weights(lg):
    k = 200
    log_w = log_importance_weights(lg.model, lg.exact_guide, lg.x, num_particles=k)
    true = lg.log_px(lg.x)
    assert log_w.shape == (k, B)
    torch.testing.assert_close(log_w, true.expand(k, B), rtol=0, atol=1e-10)
    est = BoundEstimate.from_log_weights(log_w)
    torch.testing.assert_close(est.value, true, rtol=0, atol=1e-10)
    torch.testing.assert_close(est.ess, torch.full_like(est.ess, float(k)), rtol=1e-9, atol=0)
    assert torch.isnan(est.khat).all()  # no tail to fit: k-hat undefined, not "bad"


@pytest.mark.parametrize("chunk_size", [1000, 20, 7, 1])
def test_chunked_equals_unchunked_for_the_same_random_stream(lg, chunk_size):
    k = 60
    torch.manual_seed(123)
    whole = log_importance_weights(lg.model, lg.imperfect_guide, lg.x, num_particles=k)
    torch.manual_seed(123)
    chunked = log_importance_weights(
        lg.model, lg.imperfect_guide, lg.x, num_particles=k, chunk_size=chunk_size
    )
    assert chunked.shape == whole.shape == (k, B)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    torch.manual_seed(123)
    est = iwae_log_likelihood(
        lg.model, lg.imperfect_guide, lg.x, num_particles=k, chunk_size=chunk_size
    )
    torch.testing.assert_close(est.value, _iwae_values(whole), rtol=1e-12, atol=1e-12)


def test_per_datapoint_values_do_not_depend_on_the_batch(lg):
    together = iwae_log_likelihood(lg.model, lg.exact_guide, lg.x, num_particles=30).value
    for i in (0, 3, 7):
        alone = iwae_log_likelihood(
            lg.model, lg.exact_guide, lg.x[i : i + 1], num_particles=30
        ).value
        assert alone.shape == (1,)
        torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-10)
    # a different batch composition (reversed, with duplicates) gives the same values
    idx = torch.tensor([7, 2, 2, 5])
    other = iwae_log_likelihood(lg.model, lg.exact_guide, lg.x[idx], num_particles=30).value
    torch.testing.assert_close(other, together[idx], rtol=0, atol=1e-10)
    # and the values are the per-datapoint marginals, not shares of a batch total
    torch.testing.assert_close(together, lg.log_px(lg.x), rtol=0, atol=1e-10)


def test_global_site_enters_every_datapoint_once_per_particle(lg):
    def model(x):
        g = pyro.sample("g", dist.Normal(x.new_zeros(()), 1.0))
        lg.model(x)
        return g

    def guide(x):
        pyro.sample("g", dist.Normal(x.new_zeros(()), 2.0))
        lg.exact_guide(x)

    k = 50
    torch.manual_seed(0)
    log_w = log_importance_weights(model, guide, lg.x, num_particles=k)
    assert log_w.shape == (k, B)
    # log w = log p(x) + log N(g; 0, 1) - log N(g; 0, 2): the same offset for all points
    offset = log_w - lg.log_px(lg.x)
    torch.testing.assert_close(offset, offset[:, :1].expand(k, B), rtol=0, atol=1e-10)
    assert offset.std() > 0.1  # it varies over particles (g is resampled per particle)


def test_scaled_sites_raise(lg):
    with pytest.raises(ValueError, match="scale"):
        log_importance_weights(
            poutine.scale(lg.model, scale=0.5), lg.exact_guide, lg.x, num_particles=3
        )
    with pytest.raises(ValueError, match="scale"):
        log_importance_weights(
            lg.model, poutine.scale(lg.exact_guide, scale=2.0), lg.x, num_particles=3
        )

    def subsampled_model(x):  # a subsampled plate scales its sites by B / subsample
        with pyro.plate("data", x.shape[0], subsample_size=4, dim=-1) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(4, D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, SIGMA).to_event(1), obs=x[idx])

    def subsampled_guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=4, dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(4, D), 1.0).to_event(1))

    with pytest.raises(ValueError, match="scale"):
        log_importance_weights(subsampled_model, subsampled_guide, lg.x, num_particles=3)


def test_model_latent_missing_from_guide_raises(lg):
    def model(x):
        pyro.sample("extra", dist.Normal(x.new_zeros(()), 1.0))
        lg.model(x)

    with pytest.raises(ValueError, match="extra"):
        log_importance_weights(model, lg.exact_guide, lg.x, num_particles=3)


def test_khat_small_for_good_and_large_for_bad_proposal(lg):
    eig = torch.linalg.eigvalsh(lg.post_cov)
    ones = torch.ones(D, dtype=DT)
    # Exact mean, isotropic scale wider than the posterior in every direction: the
    # weights p/q are bounded, so k-hat should be small (in theory <= 0).
    good = lg.gaussian_guide(lg.post_map, 1.3 * eig.max().sqrt() * ones)
    # Exact mean, scale far too small: heavy-tailed weights.
    bad = lg.gaussian_guide(lg.post_map, 0.3 * eig.min().sqrt() * ones)
    torch.manual_seed(0)
    est_good = iwae_log_likelihood(lg.model, good, lg.x, num_particles=1000)
    est_bad = iwae_log_likelihood(lg.model, bad, lg.x, num_particles=1000)
    assert (est_good.khat < 0.5).all(), est_good.khat
    assert est_bad.summary()["khat"] > 0.7, est_bad.khat
    assert est_bad.summary()["khat_above_0.7"] >= 0.75, est_bad.khat
    assert est_good.ess.mean() > 3 * est_bad.ess.mean()


def test_summary_fields(lg):
    torch.manual_seed(0)
    est = iwae_log_likelihood(lg.model, lg.imperfect_guide, lg.x, num_particles=100)
    s = est.summary()
    keys = {"mean", "sem", "ess", "khat", "khat_above_0.7", "num_particles", "num_datapoints"}
    assert set(s) == keys
    assert s["num_particles"] == 100 and s["num_datapoints"] == B
    assert s["mean"] == pytest.approx(est.value.mean().item())
    assert s["sem"] == pytest.approx(est.value.std().item() / math.sqrt(B))
    assert 1.0 <= s["ess"] <= 100.0
    both = BoundEstimate.concatenate([est, est])
    assert both.value.shape == (2 * B,) and both.summary()["mean"] == pytest.approx(s["mean"])


def test_effective_sample_size_extremes():
    k = 50
    assert effective_sample_size(torch.zeros(k, 3)).tolist() == pytest.approx([k] * 3)
    one_heavy = torch.full((k, 1), -1000.0)
    one_heavy[7] = 0.0
    assert effective_sample_size(one_heavy).item() == pytest.approx(1.0)
    # two equal weights out of k, rest zero
    two = torch.full((k,), -math.inf)
    two[[3, 9]] = 5.0
    assert effective_sample_size(two).item() == pytest.approx(2.0)


def test_psis_khat_shapes_and_undefined_cases():
    g = torch.Generator().manual_seed(0)
    assert torch.isnan(psis_khat(torch.randn(24, 3, generator=g))).all()  # K < 25
    k = psis_khat(torch.randn(400, 3, generator=g, dtype=DT))
    assert k.shape == (3,) and k.dtype == torch.float64 and torch.isfinite(k).all()
    # log-normal weights with sigma 0.5 have a light tail; sigma 3 a heavy one
    light = psis_khat(0.5 * torch.randn(4000, 4, generator=g, dtype=DT))
    heavy = psis_khat(3.0 * torch.randn(4000, 4, generator=g, dtype=DT))
    assert (light < 0.5).all() and (heavy > 0.7).all(), (light, heavy)
    assert psis_khat(torch.randn(100, generator=g)).shape == (1,)
    bad_row = torch.randn(100, 2, generator=g, dtype=DT)
    bad_row[5, 1] = math.nan
    out = psis_khat(bad_row)
    assert torch.isfinite(out[0]) and torch.isnan(out[1])


def test_psis_khat_without_arviz_says_what_to_install(monkeypatch):
    diagnostics._psis_backend.cache_clear()
    monkeypatch.setitem(sys.modules, "arviz_stats", None)
    monkeypatch.setitem(sys.modules, "arviz_stats.base", None)
    monkeypatch.setitem(sys.modules, "arviz", None)
    try:
        with pytest.raises(ImportError, match="arviz<1"):
            psis_khat(torch.randn(100, 2))
    finally:
        diagnostics._psis_backend.cache_clear()
