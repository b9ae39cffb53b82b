"""The paper's figures (evaluation/figures.py, run/figures.py) and the quickstart notebook, on tiny runs.

Pixel sizes are figsize * dpi of each figure's layout for the tiny runs (figures.DPI = 100).
"""
import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmvae_zoo.evaluation import figures
from mmvae_zoo.training.config import preset
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_base_run):
    """Tiny runs (2 steps each): Two Objects text_true, text_agg and joint beside the shared base,
    and a Single Object base with a 2-d latent and its two text guides (Fig. 1)."""
    root = tmp_path_factory.mktemp("figure_runs")

    def run(name, guide, base=None, dataset="two_objects"):
        config = preset("tiny", dataset)
        config.guide = guide
        config.train.steps = config.train.guide_steps = 2
        config.data.root = tiny_base_run.config().data.root
        out = RunDir(root / name)
        train(config, out, device=torch.device("cpu"), base=base, progress=False)
        return out.path

    single = RunDir(run("single", "image", dataset="single_object"))
    return {"base": tiny_base_run.path, "true": run("true", "text_true", tiny_base_run),
            "agg": run("agg", "text_agg", tiny_base_run), "joint": run("joint", "joint"), "single": single.path,
            "single_true": run("single_true", "text_true", single, "single_object"),
            "single_agg": run("single_agg", "text_agg", single, "single_object")}


def _size(path: Path) -> tuple:
    assert path.stat().st_size > 0
    return Image.open(path).size


def test_fig1_latent_posteriors(runs, tmp_path):
    path = figures.latent_posteriors(runs["single"], tmp_path / "fig1.png", [runs["single_true"], runs["single_agg"]],
                                     resolution=40)
    assert _size(path) == (1200, 780)  # 5 columns (all texts, 4 texts) x 3 rows of 2.4 in, + 0.6 in title


def test_fig1_needs_a_2d_latent(runs, tmp_path):
    with pytest.raises(ValueError, match="2-d latent"):
        figures.latent_posteriors(runs["base"], tmp_path / "fig1.png")


def test_fig3_reconstructions(runs, tmp_path):
    # width: 9 word charts of 1.2 in + 1.2 in of labels; height: 5 image rows of 2.25 in, 2 chart rows of
    # 0.5 + 0.11 * 19 words in, 0.6 in title
    assert _size(figures.reconstructions(runs["base"], tmp_path / "fig3.png")) == (1200, 1703)


def test_fig4_text_conditionals(runs, tmp_path):
    path = figures.text_conditionals([runs["true"], runs["agg"]], tmp_path / "fig4.png")
    assert _size(path) == (1309, 946)  # save_grid: 7 columns of 1.7 in, 4 rows of 2.15 in, at 110 dpi
    typed = figures.text_conditionals([runs["agg"]], tmp_path / "typed.png", texts=["large red metal cube left "
                                                                                   "small blue rubber sphere"])
    assert _size(typed) == (748, 236)


def test_fig7_joint_vs_marginal(runs, tmp_path):
    assert _size(figures.joint_vs_marginal(runs["joint"], runs["base"], tmp_path / "fig7.png")) == (1200, 1253)
    with pytest.raises(ValueError, match="--guide joint"):
        figures.joint_vs_marginal(runs["base"], runs["base"], tmp_path / "wrong.png")


def test_training_curves(runs, tmp_path):
    keys = [k for k in RunDir(runs["base"]).metrics()[0] if k not in ("step", "seconds")]
    rows = -(-len(keys) // 3)
    assert _size(figures.training_curves(runs["base"], tmp_path / "curves.png")) == (1008, 240 * rows + 60)


def test_cli_draws_each_figure(runs, tmp_path, capsys):
    from mmvae_zoo.run.figures import main

    commands = [["latent", str(runs["single"]), str(runs["single_agg"]), "--resolution", "30"],
                ["reconstructions", str(runs["base"]), "--num", "2"],
                ["conditionals", str(runs["true"]), str(runs["agg"]), "--text", "small red rubber cube left large "
                 "blue metal sphere", "--num-samples", "1"],
                ["joint", str(runs["joint"]), str(runs["base"]), "--num", "2"],
                ["curves", str(runs["agg"])]]
    for k, command in enumerate(commands):
        out = tmp_path / f"{k}.png"
        assert main(command + ["--out", str(out)]) == 0 and out.stat().st_size > 0
    assert main(["joint", str(runs["base"]), str(runs["base"]), "--out", str(tmp_path / "x.png")]) == 2
    assert "train one with --guide joint" in capsys.readouterr().err


def test_quickstart_notebook_runs(runs, monkeypatch):
    """Every code cell of notebooks/quickstart.ipynb, in order, in one namespace (IPython magics skipped)."""
    import matplotlib.pyplot as plt

    monkeypatch.setenv("MMVAE_RUN", str(runs["agg"]))
    notebook = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text())
    assert notebook["nbformat"] == 4
    namespace = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(line for line in cell["source"] if not line.lstrip().startswith("%"))
                exec(compile(source, "quickstart.ipynb", "exec"), namespace)
    plt.close("all")
    assert namespace["RUN"] == runs["agg"]
    assert "log p(x|y)" in namespace["bounds"]
    assert (runs["agg"] / "figures" / "reconstructions.png").stat().st_size > 0
