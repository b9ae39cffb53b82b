"""JMVAE (Suzuki et al.): model and guide shapes, JMVAE-zero and JMVAE-kl, training through
run/svi.py, the paper's bounds and the evaluation table, on tiny networks and fake MNIST."""
import importlib.util
import json
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from mmvae_zoo.datasets.two_objects import VOCAB
from mmvae_zoo.evaluation.bounds import evaluate_bounds
from mmvae_zoo.evaluation.jmvae import jmvae_row
from mmvae_zoo.guides.elbos import JMVAEKLELBO, gaussian_kl
from mmvae_zoo.guides.jmvae import JointGuide, KLGuide, UnimodalGuide, ZeroedGuide
from mmvae_zoo.metrics import log_importance_weights
from mmvae_zoo.models.jmvae import JMVAE, JMVAEConfig, one_hot_words
from mmvae_zoo.training.config import RunConfig, preset, resolve
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.schemes import build
from mmvae_zoo.training.runs import load_run
from tests.helpers import copy_run

MNIST_VOCAB = [str(d) for d in range(10)]
ROOT = Path(__file__).resolve().parents[1]


def cli(command: str):
    """``main`` of run/<command>.py."""
    spec = importlib.util.spec_from_file_location(f"cli_{command}", ROOT / "run" / f"{command}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def mnist_net(**changes) -> JMVAEConfig:
    return JMVAEConfig(vocab=MNIST_VOCAB, **{"z_dim": 4, "hidden": 16, **changes})


def conv_net() -> JMVAEConfig:
    return JMVAEConfig(image_shape=(3, 32, 32), vocab=VOCAB.to_list(), text_length=9, z_dim=8, hidden=32,
                       family="conv", likelihood="beta", channels=4, num_down=1, stem_kernel=3, stem_stride=2,
                       grid=4)


def data(net: JMVAEConfig, n: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n,) + net.image_shape, generator=g)
    if net.likelihood == "bernoulli":
        x = torch.bernoulli(x, generator=g)
    w = torch.randint(1, net.num_words + 1, (n, net.text_length), generator=g)
    return x, w


@pytest.mark.parametrize("net", [mnist_net(), conv_net()], ids=["mlp", "conv"])
def test_model_and_guides_trace_with_particle_dims(net):
    model, joint = JMVAE(net), JointGuide(net)
    x, w = data(net)
    w[0, -1] = 0  # padding is masked, not scored
    trace = poutine.trace(poutine.replay(model.model, trace=poutine.trace(joint.guide).get_trace(x, w))).get_trace(x, w)
    trace.compute_log_prob()
    assert trace.nodes["z"]["value"].shape == (5, net.z_dim)
    assert {n: trace.nodes[n]["log_prob"].shape for n in ("z", "x", "y")} == {n: (5,) for n in ("z", "x", "y")}
    unimodal = {"x": UnimodalGuide(net, "x"), "w": UnimodalGuide(net, "w")}
    for guide in (joint, unimodal["x"], unimodal["w"], ZeroedGuide(joint, "x"), ZeroedGuide(joint, "w")):
        log_w = log_importance_weights(model.model, guide.guide, x, w, num_particles=3)
        assert log_w.shape == (3, 5) and torch.isfinite(log_w).all()
    assert set(poutine.trace(model.model).get_trace(x, None).nodes) >= {"z", "x"}
    assert "x" not in poutine.trace(model.model).get_trace(None, w).nodes
    images, words = model.generate(torch.zeros(2, 3, net.z_dim))
    assert images.shape == (2, 3) + net.image_shape and words.shape == (2, 3, net.text_length)
    assert words.min() >= 1 and words.max() <= net.num_words


def test_paper_mnist_networks():
    net = JMVAEConfig(vocab=MNIST_VOCAB)
    model, joint = JMVAE(net), JointGuide(net)
    widths = [m.out_features for m in model.image_decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 512, 512, 784]
    assert [m.out_features for m in joint.image.modules() if isinstance(m, torch.nn.Linear)] == [512, 512]
    assert joint.head.linear.out_features == 2 * 64
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in joint.modules())


def test_zero_guide_is_the_joint_encoder_with_the_other_input_zeroed():
    net = mnist_net()
    joint = JointGuide(net)
    x, w = data(net)
    qx, qw = ZeroedGuide(joint, "x").distribution(x, None), ZeroedGuide(joint, "w").distribution(None, w)
    by_hand_x = joint.head(torch.cat([joint.image(x), joint.text(torch.zeros(5, 10))], -1))
    by_hand_w = joint.head(torch.cat([joint.image(torch.zeros_like(x)), joint.text(one_hot_words(net, w))], -1))
    assert torch.equal(qx.mean, by_hand_x.mean) and torch.equal(qx.stddev, by_hand_x.stddev)
    assert torch.equal(qw.mean, by_hand_w.mean) and torch.equal(qw.stddev, by_hand_w.stddev)
    assert not torch.allclose(qx.mean, joint.distribution(x, w).mean)  # the label really is left out
    assert torch.equal(one_hot_words(net, w).argmax(-1) + 1, w[:, 0])


def test_gaussian_kl_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    s1, s2 = torch.rand(3, 4, generator=g) + 0.1, torch.rand(3, 4, generator=g) + 0.1
    q, p = pyro.distributions.Normal(m1, s1).to_event(1), pyro.distributions.Normal(m2, s2).to_event(1)
    formula = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum(-1)
    assert torch.allclose(gaussian_kl(q, p), formula, atol=1e-6)
    z = q.sample((20000,))
    assert torch.allclose(gaussian_kl(q, p), (q.log_prob(z) - p.log_prob(z)).mean(0), rtol=0.1)


def test_kl_loss_is_elbo_minus_alpha_kls_and_trains_the_unimodal_encoders():
    net = mnist_net()
    model, guide = JMVAE(net), KLGuide(net)
    x, w = data(net)
    elbo = JMVAEKLELBO(alpha=0.5)
    pyro.set_rng_seed(3)
    loss = elbo(model, guide)(x, w, annealing=0.25)
    pyro.set_rng_seed(3)
    trace_elbo = Trace_ELBO().differentiable_loss(model, guide.joint, x, w, annealing=0.25)  # KL to p(z) scaled
    q = guide.joint.distribution(x, w)
    kls = [(torch.log(p.stddev / q.stddev) + (q.variance + (q.mean - p.mean) ** 2) / (2 * p.variance) - 0.5).sum(-1)
           for p in (guide.image.distribution(x, None), guide.text.distribution(None, w))]
    assert torch.allclose(loss, trace_elbo + 0.5 * (kls[0] + kls[1]).sum(), rtol=1e-5)
    assert torch.allclose(elbo.terms["kl_qx"], kls[0].mean()) and torch.allclose(elbo.terms["kl_qw"], kls[1].mean())
    loss.backward()
    for part in (guide.image, guide.text, guide.joint):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.head.parameters())


@pytest.mark.parametrize("guide", ["kl", "zero", "vae", "mvae", "mmvae"])
def test_a_few_steps_lower_the_loss(guide):
    net = mnist_net()
    config = preset("tiny", "mnist", "jmvae")
    config.net, config.guide = net, guide
    components = build(config)
    x, w = data(net, 16)
    params = [p for m in components.trained().values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    pyro.set_rng_seed(0)
    losses = []
    for step in range(40):
        loss, _ = components.loss(10**6, x, w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 10  # nats per datapoint


@pytest.mark.parametrize("make, message", [
    (lambda x, w: (x[..., :27, :27], w), r"expected images of shape \[1, 28, 28\], got \[1, 27, 27\]"),
    (lambda x, w: (x, w + 10), r"word ids must lie in 0..10"),
    (lambda x, w: (x, w.repeat(1, 2)), "expected texts of 1 word ids, got 2"),
])
def test_bad_input_is_a_clear_error(make, message):
    net = mnist_net()
    x, w = make(*data(net))
    for call in (lambda: JMVAE(net).model(x, w), lambda: JointGuide(net).distribution(x, w)):
        with pytest.raises(ValueError, match=message):
            call()


def test_config_round_trips_and_old_vlvae_json_still_loads():
    config = preset("cpu", "mnist", "jmvae")
    config.net.vocab = MNIST_VOCAB
    again = RunConfig.from_json(config.to_json())
    assert again == config and isinstance(again.net, JMVAEConfig)
    assert (config.train.batch_size, config.train.lr, config.net.z_dim, config.net.hidden) == (100, 1e-3, 64, 512)
    old = json.loads(preset("tiny").to_json())
    del old["train"]["alpha"]  # a config.json written before JMVAE existed
    assert RunConfig.from_json(json.dumps(old)) == preset("tiny")
    conv = preset("tiny", "two_objects", "jmvae")
    assert conv.net.family == "conv" and conv.net.image_shape == preset("tiny").net.image_shape


@pytest.fixture(scope="module")
def kl_run(fake_mnist, tmp_path_factory):
    main = cli("svi")
    out = tmp_path_factory.mktemp("runs") / "jmvae-kl"
    args = ["--model", "jmvae", "--guide", "kl", "--preset", "tiny", "--no-progress",
            "--data-root", str(fake_mnist), "--out", str(out), "--alpha", "0.5"]
    assert main(args) == 0
    return RunDir(out), args


def test_svi_trains_a_run_directory_and_resumes(kl_run):
    run, args = kl_run
    config = run.config()
    assert (config.model, config.guide, config.data.name, config.train.alpha) == ("jmvae", "kl", "mnist", 0.5)
    assert [p.name for p in run.checkpoint_paths()] == ["step_0000002.pt", "step_0000004.pt"]
    assert {"loss", "log_px", "log_py", "kl", "kl_qx", "kl_qw"} <= set(run.metrics()[-1])
    assert {"model", "guide", "image_guide", "text_guide", "optimizer"} <= set(run.latest_checkpoint())
    assert (run.samples / "step_0000004.png").stat().st_size > 1000
    run.checkpoint_paths()[-1].unlink()  # as if stopped after step 2
    assert cli("svi")(args + ["--resume"]) == 0
    assert run.latest_checkpoint()["step"] == 4 and [r["step"] for r in run.metrics()][-2:] == [3, 4]


def test_zero_run_has_no_unimodal_encoders_of_its_own(fake_mnist, tmp_path):
    assert cli("svi")(["--model", "jmvae", "--guide", "zero", "--preset", "tiny", "--no-progress",
                 "--data-root", str(fake_mnist), "--out", str(tmp_path / "zero")]) == 0
    components = load_run(tmp_path / "zero")
    saved = set(RunDir(tmp_path / "zero").latest_checkpoint())
    assert {"model", "guide", "optimizer"} <= saved and not {"image_guide", "text_guide"} & saved
    assert isinstance(components.image_guide, ZeroedGuide) and components.image_guide.joint is components.guide


@pytest.fixture(scope="module")
def vae_run(fake_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "jmvae-vae"
    args = ["--model", "jmvae", "--guide", "vae", "--preset", "tiny", "--no-progress",
            "--data-root", str(fake_mnist), "--out", str(out)]
    assert cli("svi")(args) == 0
    return RunDir(out), args


def test_vae_run_trains_the_image_model_alone_and_resumes(vae_run):
    run, args = vae_run
    assert run.config().guide == "vae"
    assert {"loss", "log_px", "kl"} <= set(run.metrics()[-1]) and "log_py" not in run.metrics()[-1]
    saved = set(run.latest_checkpoint())
    assert {"model", "guide", "optimizer"} <= saved and not {"image_guide", "text_guide"} & saved
    components = load_run(run.path)
    assert isinstance(components.guide, UnimodalGuide) and components.guide.modality == "x"
    assert components.image_guide is components.guide and components.text_guide is None
    run.checkpoint_paths()[-1].unlink()
    assert cli("svi")(args + ["--resume"]) == 0
    assert run.latest_checkpoint()["step"] == 4


def test_vae_bound_is_log_p_x_with_proposal_q_z_given_x(vae_run):
    """With K = 1: log p(x) = log p(x|z) + log p(z) - log q(z|x) at z ~ q(z|x), the only bound of the VAE."""
    components = load_run(vae_run[0].path)
    (x, w), = _test_batch(components)
    pyro.set_rng_seed(2)
    bounds = evaluate_bounds(components, [(x, w)], num_particles=1)
    assert list(bounds) == ["log p(x) multiple"]
    pyro.set_rng_seed(2)
    q = components.image_guide.distribution(x, None)
    z = q.sample()
    expected = components.model.image_likelihood(z).log_prob(x) + components.model.prior_distribution(8).log_prob(z) - q.log_prob(z)
    assert torch.allclose(bounds["log p(x) multiple"].value, expected, atol=1e-3)


def _test_batch(components):
    from mmvae_zoo.datasets.registry import make_dataset
    from mmvae_zoo.evaluation.report import validation_batches

    return list(validation_batches(make_dataset(components.config.data, "val"), 8, 8, "cpu"))


def test_bounds_are_finite_and_ordered(kl_run):
    components = load_run(kl_run[0].path)
    batches = _test_batch(components)
    pyro.set_rng_seed(0)
    many = evaluate_bounds(components, batches, num_particles=200, chunk_size=50)
    pyro.set_rng_seed(0)
    one = evaluate_bounds(components, batches, num_particles=1)
    for name, estimate in many.items():
        assert estimate.value.shape == (8,) and torch.isfinite(estimate.value).all(), name
        assert estimate.value.mean() >= one[name].value.mean() - 0.5, name
    assert (many["log p(x,w)"].value <= many["log p(x) multiple"].value + 1e-3).all()  # p(w|z) <= 1
    assert torch.allclose(many["log p(w)"].value.exp().sum() / 8, torch.tensor(0.1), atol=0.1)
    row = jmvae_row(components, batches, num_particles=30, chunk_size=None)
    assert set(row) == {"log p(x) multiple", "log p(x) single", "log p(x,w)", "log p(x|w) single",
                        "log p(x|w) multiple"}


def test_single_conditional_bound_samples_q_z_given_w(kl_run):
    """With K = 1: log p(x|w) single = log p(x|z) at z ~ q(z|w) (Eq. 9: q(z|w) is prior and proposal)."""
    components = load_run(kl_run[0].path)
    (x, w), = _test_batch(components)
    pyro.set_rng_seed(1)
    value = evaluate_bounds(components, [(x, w)], num_particles=1, names=["log p(x|w) single"])
    pyro.set_rng_seed(1)
    z = components.text_guide.distribution(None, w).sample()
    expected = components.model.image_likelihood(z).log_prob(x)
    assert torch.allclose(value["log p(x|w) single"].value, expected, atol=1e-3)


def test_evaluate_command_writes_the_paper_table(kl_run, tmp_path):
    out = tmp_path / "eval"
    assert cli("evaluate")(["--model", "jmvae", "--runs", str(kl_run[0].path), "--out", str(out), "--particles", "30",
                 "--num-points", "8", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    row = results["rows"]["JMVAE-kl, alpha = 0.5"]
    assert results["num_points"] == 8 and results["num_particles"] == 30
    assert row["log p(x|w) multiple"]["mean"] == pytest.approx(row["log p(x,w)"]["mean"] + 2.3, abs=1.0)
    table = (out / "tables.md").read_text()
    assert "| JMVAE-kl, alpha = 0.5 | " in table and "| JMVAE-zero | - | - | -84.64 | -4838.00 |" in table
    assert "mean PSIS k-hat" in table and "Joint log p(x,w)" in table


def test_evaluate_gives_the_vae_a_marginal_row_only(kl_run, vae_run, tmp_path):
    out = tmp_path / "eval"
    assert cli("evaluate")(["--model", "jmvae", "--runs", str(kl_run[0].path), str(vae_run[0].path), "--out", str(out),
                            "--particles", "30", "--num-points", "8", "--device", "cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert list(rows["VAE"]) == ["log p(x) multiple"] and rows["VAE"]["log p(x) multiple"]["mean"] < 0
    table = (out / "tables.md").read_text()
    marginal, conditional, joint = (table.split(title)[1].split("\n\n")[1]
                                    for title in ("Marginal log p(x)", "Conditional log p(x|w)", "Joint log p(x,w)"))
    vae_line = next(line for line in marginal.splitlines() if line.startswith("| VAE | "))
    assert vae_line.endswith(" | - | -86.91 | - |") and " ± " in vae_line
    assert "| VAE |" not in conditional and "| VAE |" not in joint


def test_evaluate_refuses_a_vlvae_run_as_jmvae(tiny_base_run, tmp_path, capsys):
    assert cli("evaluate")(["--model", "jmvae", "--runs", str(tiny_base_run.path), "--out", str(tmp_path / "e")]) == 2
    assert "is a vlvae run, not a JMVAE run" in capsys.readouterr().err


def test_resolve_fills_mnist_shapes():
    config = resolve(preset("tiny", "mnist", "jmvae"))
    assert config.net.vocab == MNIST_VOCAB and config.net.image_shape == (1, 28, 28) and config.net.text_length == 1


def test_evaluate_gives_seeds_of_one_row_the_mean_and_std_of_their_means(kl_run, tmp_path):
    path, name = kl_run[0].path, "JMVAE-kl, alpha = 0.5"
    seed_1 = copy_run(path, tmp_path / "seed-1", seed=1)  # the same networks, saved as seed 1
    flags = ["--model", "jmvae", "--particles", "30", "--num-points", "8", "--device", "cpu", "--out"]
    assert cli("evaluate")([*flags, str(tmp_path / "one"), "--runs", str(path)]) == 0
    assert cli("evaluate")([*flags, str(tmp_path / "two"), "--runs", str(path), str(seed_1)]) == 0
    one, two = (json.loads((tmp_path / out / "results.json").read_text()) for out in ("one", "two"))
    assert two["runs"][name] == [str(path), str(seed_1)] and set(two["rows"][name]) == set(one["rows"][name])
    for bound, entry in two["rows"][name].items():  # each seed from --seed's stream: equal networks, equal bounds
        assert (entry["runs"], entry["std"]) == (2, 0.0) and entry["mean"] == one["rows"][name][bound]["mean"]
    table = (tmp_path / "two" / "tables.md").read_text()
    assert f"; rows of several seeds, {name} (2): mean ± standard deviation of the seeds' means." in table
    assert f"| {name} | {two['rows'][name]['log p(x,w)']['mean']:.2f} ± 0.00 | - |" in table  # the joint's row


@pytest.mark.parametrize("train, message", [
    ({}, "are both seed 0 of JMVAE-kl, alpha = 0.5; give each seed once"),
    ({"seed": 1, "steps": 3}, "are runs of JMVAE-kl, alpha = 0.5 with different train.steps (4 and 3); the runs of "
                              "one row must differ in their seed alone"),
])
def test_evaluate_refuses_runs_of_one_row_that_are_not_seeds_before_evaluating_any(kl_run, tmp_path, capsys,
                                                                                   monkeypatch, train, message):
    monkeypatch.setattr("mmvae_zoo.evaluation.jmvae.jmvae_row", lambda *a, **k: pytest.fail("evaluated before checking"))
    other = copy_run(kl_run[0].path, tmp_path / "other", **train)
    out = tmp_path / "e"
    assert cli("evaluate")(["--model", "jmvae", "--runs", str(kl_run[0].path), str(other), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
