"""run/evaluate.py --runs for the VLVAE: runs of the schemes that train the whole VLVAE with their own q(z|x)
and q(z|y) (``kl``, ``mvae``, ``mmvae``) as rows of Table 1, beside q_True and q_Agg, each with its own
log p(x|y) bound (evaluation/bounds.py) and its own ceiling; bad --runs refused in one line."""
import json
import shutil

import pyro
import pytest
import torch

from mmvae_zoo.datasets.registry import make_dataset
from mmvae_zoo.evaluation.bounds import bound_pairs, evaluate_bounds
from mmvae_zoo.evaluation.correctness import ClassifierConfig, load_classifier, save_classifier, train_classifier
from mmvae_zoo.evaluation.report import ceiling, markdown, validation_batches
from mmvae_zoo.models.vlvae import PIXEL_EPS
from mmvae_zoo.training.config import preset, resolve
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.runs import load_run
from mmvae_zoo.training.schemes import build
from mmvae_zoo.training.trainer import train
from tests.helpers import copy_run, tiny_config
from tests import test_bad_input
from tests.test_bad_input import _forbid_long_work, _main, _snapshot

templates = test_bad_input.templates  # fixture: tiny fake runs "run" (base), "agg" (text_agg), "jm" (JMVAE kl)
POINTS = 16  # every validation pair of the tiny preset, one batch
SEED = 3


def direct_conditional_bound(components, x, y, z):
    """log p(x|z) + log q(z|y) - log q(z|x) per datapoint, from the run's networks: the K = 1 weight of Eq. 6
    with the run's q(z|y) in the prior's place and its q(z|x) as proposal."""
    model = components.model
    log_px_z = model.image_likelihood(model.decoder(z)).log_prob(x.clamp(PIXEL_EPS, 1 - PIXEL_EPS))
    return (log_px_z + components.text_guide.distribution(None, y).log_prob(z)
            - components.image_guide.distribution(x, None).log_prob(z))


@pytest.mark.parametrize("guide", ["kl", "mvae", "mmvae"])
def test_every_objective_defines_the_conditional_bound_with_its_own_networks(guide, tiny_scenes):
    """K = 1, same seed: log p(x|y) is log p(x|z) + log q(z|y) - log q(z|x) at z ~ q(z|x), all the run's own."""
    config = preset("tiny")
    config.guide, config.train.particles = guide, 2
    components = build(resolve(config))
    x, y = tiny_scenes
    assert "log p(x|y)" in bound_pairs(components)
    pyro.set_rng_seed(0)
    bound = evaluate_bounds(components, [(x, y)], num_particles=1, names=["log p(x|y)"])["log p(x|y)"].value
    pyro.set_rng_seed(0)
    with torch.no_grad():
        z = components.image_guide.distribution(x, None).sample()
        expected = direct_conditional_bound(components, x, y, z)
    assert torch.isfinite(bound).all() and bound.shape == (len(x),)
    assert torch.allclose(bound, expected, rtol=1e-5, atol=1e-2)


def test_runs_without_q_z_given_y_have_no_conditional_bound():
    config = preset("tiny")
    config.guide = "joint"
    assert "log p(x|y)" not in bound_pairs(build(resolve(config)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base_run):
    """Tiny trained runs on the base run's data: ``mvae``, ``mmvae`` (K = 2) and ``text_agg`` (fitted to the
    base), and a tiny correctness classifier ``clf``."""
    root = tmp_path_factory.mktemp("objectives")
    data_root = tiny_base_run.config().data.root
    for guide in ("mvae", "mmvae", "text_agg"):
        config = tiny_config(root, guide)
        config.data.root, config.train.particles = data_root, 2
        train(config, RunDir(root / guide), device=torch.device("cpu"), base=tiny_base_run if guide == "text_agg"
              else None, progress=False)
    data = tiny_base_run.config().data
    classifier = train_classifier(data, ClassifierConfig(channels=4, hidden=16, steps=3, batch_size=8), progress=False)
    save_classifier(classifier, root / "clf")
    return root


def evaluate(trained, out, *args):
    """run/evaluate.py in-process on the validation pairs in one batch, K = 1: results.json and tables.md."""
    status = _main("evaluate")([*map(str, args), "--num-points", str(POINTS), "--batch-size", str(POINTS),
                                "--particles", "1", "--seed", str(SEED), "--device", "cpu",
                                "--classifier", str(trained / "clf"), "--out", str(out)])
    assert status == 0
    return json.loads((out / "results.json").read_text()), (out / "tables.md").read_text()


@pytest.fixture(scope="module")
def with_base(trained, tiny_base_run):
    return evaluate(trained, trained / "eval", "--base", tiny_base_run.path, "--text-agg", trained / "text_agg",
                    "--runs", trained / "mvae")


def test_an_mvae_run_is_a_table_1_row_scored_with_its_own_networks(with_base, trained, tiny_base_run):
    results, table = with_base
    assert list(results["table_1"]) == ["text_agg", "MVAE"]
    row = results["table_1"]["MVAE"]
    assert set(row) == {"correctness", "log p(x|y)", "ceiling"} and row["correctness"]["runs"] == 1
    assert 0 <= row["correctness"]["mean"] <= 100  # a percentage
    # the bound: K = 1, the row's seed, after the one z ~ q(z|y) per text that the correctness drew
    run = load_run(trained / "mvae")
    batches = list(validation_batches(make_dataset(run.config.data, "val"), POINTS, POINTS, "cpu"))
    (x, y), = batches
    pyro.set_rng_seed(SEED)
    with torch.no_grad():
        run.text_guide.distribution(None, y).sample()
        z = run.image_guide.distribution(x, None).sample()
        expected = direct_conditional_bound(run, x, y, z).mean().item()
    bound = row["log p(x|y)"]["mean"]
    assert bound == pytest.approx(expected, rel=1e-5) and abs(bound) < float("inf")
    # the ceiling: the MVAE row's is that of its own q(z|x) and VLVAE; q_Agg's is the base run's
    classifier = load_classifier(trained / "clf")
    own, base = ceiling(run, classifier, batches), ceiling(load_run(tiny_base_run.path), classifier, batches)
    assert own != base  # else the test below could not tell them apart
    assert row["ceiling"]["mean"] == pytest.approx(own)
    assert results["table_1"]["text_agg"]["ceiling"]["mean"] == pytest.approx(base) == results["ceiling"]
    assert results["runs"]["MVAE"] == [str(trained / "mvae")]
    # tables.md: an MVAE column beside q_True and q_Agg, its ceiling in the ceiling row
    assert markdown(results) == table
    assert "| | q_True (ours) | q_Agg (ours) | MVAE (ours) | q_True (paper) | q_Agg (paper) |" in table
    assert f"| Ceiling (%) | - | {base:.2f} | {own:.2f} | - | - |" in table
    assert "| log p(x\\|y) | - | " in table and f" | {bound:.2f} | 75716.48 | 75739.79 |" in table
    assert "| Table 1 MVAE | log p(x|y) |" in table  # its importance-sampling diagnostics


def test_runs_alone_need_no_base_and_seeds_group_by_label(with_base, trained):
    seed_1 = copy_run(trained / "mmvae", trained / "mmvae-seed-1", seed=1)  # the same networks as seed 1
    results, table = evaluate(trained, trained / "eval-runs", "--runs", trained / "mmvae", trained / "mvae", seed_1)
    assert list(results["table_1"]) == ["MMVAE, K = 2", "MVAE"]
    mmvae = results["table_1"]["MMVAE, K = 2"]
    assert mmvae["correctness"]["runs"] == 2 and mmvae["correctness"]["std"] == 0  # each seed from --seed's stream
    assert results["runs"]["MMVAE, K = 2"] == [str(trained / "mmvae"), str(seed_1)]
    assert results["table_1"]["MVAE"] == with_base[0]["table_1"]["MVAE"]  # each row from --seed, base or not
    assert "ceiling" not in results and "table_2" not in results and results["runs"]["base"] is None
    assert "Table 2" not in table and "MMVAE, K = 2 (ours)" in table and markdown(results) == table


@pytest.fixture(scope="module")
def other_data_run(templates, tmp_path_factory):
    """An untrained mvae run on 64x64 images (other data than the templates' 32x32 ``run``)."""
    config = preset("tiny")
    config.guide, config.data.image_size, config.data.root = "mvae", 64, str(templates / "data")
    config = resolve(config)
    components = build(config)
    run = RunDir(tmp_path_factory.mktemp("other") / "mvae64")
    run.create(config)
    run.save_checkpoint(4, {**{k: m.state_dict() for k, m in components.trained().items()}, "world_size": 1}, keep=0)
    return run.path


REFUSED = [  # (arguments, what the last line of stderr says)
    (["--base", "run", "--runs", "run"], "run is a vlvae image run; --runs takes VLVAE runs trained with --guide kl, "
                                         "mvae or mmvae (give it with --base)"),
    (["--runs", "agg"], "agg is a vlvae text_agg run; --runs takes VLVAE runs trained with --guide kl, mvae or mmvae "
                        "(give it with --text-agg)"),
    (["--runs", "jm"], "jm is a jmvae kl run; --runs takes VLVAE runs trained with --guide kl, mvae or mmvae "
                       "(evaluate JMVAE runs with --model jmvae)"),
    (["--runs", "nowhere"], "nowhere is not a run directory (no config.json)"),
    (["--text-agg", "agg", "--runs", "mvae64"], "give the trained VLVAE run with --base: the --text-agg runs were "
                                                "fitted to it"),
    (["--base", "run", "--runs", "mvae64"], "mvae64 was trained on other data than the base run run"),
    (["--base", "run", "--ceiling-only", "--runs", "mvae64"], "--ceiling-only evaluates --base alone; leave out"),
]


@pytest.mark.parametrize("args, message", REFUSED, ids=[" ".join(args) for args, _ in REFUSED])
def test_bad_runs_are_refused_in_one_line(args, message, templates, other_data_run, tmp_path, monkeypatch,
                                          capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("run", "agg", "jm"):
        shutil.copytree(templates / name, tmp_path / name)
    shutil.copytree(other_data_run, tmp_path / "mvae64")
    before = _snapshot(tmp_path)
    _forbid_long_work(monkeypatch)
    assert _main("evaluate")([*args, "--out", "eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and message in err[0], err
    assert _snapshot(tmp_path) == before  # nothing written
