"""The other multimodal objectives as training schemes (training/schemes.py MULTIMODAL): JMVAE-kl on the VLVAE,
MVAE and MMVAE on both models, trained through run/svi.py, loaded back, generating across modalities and
evaluated with the JMVAE bounds; bad combinations of --model and --guide refused in one line."""
import json

import pytest
import torch

from mmvae_zoo.evaluation.bounds import evaluate_bounds
from mmvae_zoo.guides.experts import GivenOnly, MixtureOfExperts, ProductOfExperts
from mmvae_zoo.guides.jmvae import KLGuide
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.runs import load_run
from tests.test_jmvae import _test_batch, cli

GUIDES = {"kl": KLGuide, "mvae": ProductOfExperts, "mmvae": MixtureOfExperts}


@pytest.mark.parametrize("guide", ["kl", "mvae", "mmvae"])
def test_a_vlvae_run_trains_loads_and_draws_images_from_text(guide, tmp_path):
    out = tmp_path / guide
    assert cli("svi")(["--model", "vlvae", "--guide", guide, "--preset", "tiny", "--no-progress", "--particles", "3",
                       "--data-root", str(tmp_path / "data"), "--out", str(out)]) == 0
    components = load_run(out)
    assert isinstance(components.guide, GUIDES[guide]) and components.trains_model
    assert components.config.train.particles == 3
    assert components.image_guide.inputs == "x" and components.text_guide.inputs == "y"
    images, texts = components.sample_from_text(["large red cube"], num_samples=2)
    assert images.shape[:2] == (1, 2) and torch.isfinite(images).all() and len(texts[0]) == 2
    (x, y), = _test_batch(components)
    bounds = evaluate_bounds(components, [(x, y)], num_particles=5)
    assert {"log p(x,y)", "log p(x)", "log p(y)"} <= set(bounds)
    assert all(torch.isfinite(b.value).all() for b in bounds.values())


@pytest.fixture(scope="module")
def runs(fake_mnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for guide in ("mvae", "mmvae"):
        assert cli("svi")(["--model", "jmvae", "--guide", guide, "--preset", "tiny", "--no-progress", "--particles",
                           "2", "--data-root", str(fake_mnist), "--out", str(root / guide)]) == 0
    return root


def test_mvae_and_mmvae_runs_give_every_jmvae_bound(runs, tmp_path):
    mvae, mmvae = load_run(runs / "mvae"), load_run(runs / "mmvae")
    assert isinstance(mvae.image_guide, GivenOnly) and mvae.image_guide.combined is mvae.guide
    assert mmvae.image_guide is mmvae.guide.image and mmvae.text_guide is mmvae.guide.text
    saved = set(RunDir(runs / "mvae").latest_checkpoint())
    assert {"model", "guide", "optimizer"} <= saved and not {"image_guide", "text_guide"} & saved
    out = tmp_path / "eval"
    assert cli("evaluate")(["--model", "jmvae", "--runs", str(runs / "mvae"), str(runs / "mmvae"), "--out", str(out),
                            "--particles", "20", "--num-points", "8", "--device", "cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert set(rows) == {"MVAE", "MMVAE, K = 2"}
    for row in rows.values():
        assert set(row) == {"log p(x) multiple", "log p(x) single", "log p(x,w)", "log p(x|w) single",
                            "log p(x|w) multiple"}
        assert all(entry["mean"] < 0 for entry in row.values())
    assert "| MVAE | " in (out / "tables.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--model", "vlvae", "--guide", "zero"], "unknown guide 'zero' for model vlvae; choose one of"),
    (["--model", "jmvae", "--guide", "text_agg"], "unknown guide 'text_agg' for model jmvae; choose one of"),
    (["--model", "vlvae", "--guide", "mmvae", "--particles", "0"], "particles must be positive, got 0"),
])
def test_bad_combinations_are_refused_in_one_line(args, message, tmp_path, capsys):
    assert cli("svi")(args + ["--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
