"""run/evaluate.py: the paper's tables from tiny runs, with a tiny classifier."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmvae_zoo.datasets.registry import make_dataset
from mmvae_zoo.evaluation.correctness import SLOT_NAMES, ClassifierConfig, save_classifier, train_classifier
from mmvae_zoo.evaluation.report import (aggregate, ceiling, ceiling_by_slot, ceiling_row, markdown, semi_amortised,
                               validation_batches)
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.runs import load_run
from mmvae_zoo.training.trainer import train
from tests.helpers import bare_env, tiny_config
from tests.test_correctness import Oracle

ROOT = Path(__file__).resolve().parents[1]


def run_evaluate(tmp_path, *args):
    """run/evaluate.py as a user runs it, with tmp_path as the environment's home."""
    return subprocess.run([sys.executable, str(ROOT / "run" / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=bare_env(tmp_path))


def test_aggregate_gives_mean_and_spread_over_seeds():
    rows = [{"correctness": 60.0, "log p(x|y)": {"mean": 10.0, "khat": 0.5, "khat_above_0.7": 0.0, "ess": 5.0}},
            {"correctness": 70.0, "log p(x|y)": {"mean": 12.0, "khat": 0.9, "khat_above_0.7": 1.0, "ess": 3.0}}]
    out = aggregate(rows)
    assert out["correctness"] == {"mean": 65.0, "std": pytest.approx(7.0711, abs=1e-3), "runs": 2}
    assert out["log p(x|y)"]["mean"] == 11.0 and out["log p(x|y)"]["khat"] == pytest.approx(0.7)


class ColourBlind(Oracle):
    """Names every word of a scene's text right except the two colours."""

    def forward(self, images, relation):
        logits = super().forward(images, relation)
        colours = [i for i, name in enumerate(SLOT_NAMES) if name.startswith("colour")]
        logits[:, colours] *= -1
        return logits


def test_ceiling_scores_reconstructions_against_the_real_text_per_word(scenes):
    """A VLVAE that reconstructs every image exactly scores what the classifier does on real images."""
    data, images, tokens = scenes
    def reconstruct_with(texts):  # the image itself, and the given text of the scene
        scene_of = lambda z: torch.cdist(z.flatten(1), images.flatten(1)).argmin(1)
        return SimpleNamespace(image_guide=SimpleNamespace(distribution=lambda x, y: SimpleNamespace(mean=x)),
                               model=SimpleNamespace(generate=lambda z: (z, texts[scene_of(z)])))
    exact = reconstruct_with(tokens)
    batches = [(images[:5], tokens[:5]), (images[5:], tokens[5:])]
    assert ceiling(exact, Oracle(data), batches) == 100
    assert ceiling(exact, ColourBlind(data), batches) == 75
    by_slot = ceiling_by_slot(exact, ColourBlind(data), batches)
    assert by_slot == {name: 0 if name.startswith("colour") else 100 for name in SLOT_NAMES}
    assert ceiling_row(exact, ColourBlind(data), batches)["text"] == {"ceiling": 100,
                                                                      "by_slot": dict.fromkeys(SLOT_NAMES, 100)}
    sizes_swapped = tokens.clone()
    sizes_swapped[:, [0, 5]] = tokens[:, [5, 0]]
    text = ceiling_row(reconstruct_with(sizes_swapped), Oracle(data), batches)["text"]["by_slot"]
    differ = 100 * (tokens[:, 0] != tokens[:, 5]).float().mean().item()
    assert text == pytest.approx({name: 100 - differ if name.startswith("size") else 100 for name in SLOT_NAMES})


def test_evaluate_command_writes_the_paper_tables(tmp_path, tiny_base_run):
    runs = {}
    for guide in ("text_true", "text_agg", "prior_agg"):
        config = tiny_config(tmp_path, guide)
        config.data.root = tiny_base_run.config().data.root
        runs[guide] = RunDir(tmp_path / guide)
        train(config, runs[guide], device=torch.device("cpu"), base=tiny_base_run, progress=False)
    data = tiny_base_run.config().data
    classifier = train_classifier(data, ClassifierConfig(channels=4, hidden=16, steps=3, batch_size=8), progress=False)
    save_classifier(classifier, tmp_path / "classifier")
    bounds = ("--num-points", 8, "--particles", 30, "--chunk", 10, "--refine-steps", 2,
              "--classifier", tmp_path / "classifier")
    out = run_evaluate(tmp_path, "--base", tiny_base_run.path, "--text-true", runs["text_true"].path,
                       "--text-agg", runs["text_agg"].path, "--prior", runs["prior_agg"].path, *bounds,
                       "--out", tmp_path / "eval")
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["table_1"]) == {"text_true", "text_agg"} and set(results["table_2"]) == {"prior", "prior_agg"}
    assert 0 <= results["table_1"]["text_agg"]["correctness"]["mean"] <= 100
    table = (tmp_path / "eval" / "tables.md").read_text()
    assert "| Correctness (%) |" in table and "72.75" in table and "75739.79" in table and "k-hat" in table
    assert list(results["ceiling_by_slot"]) == list(SLOT_NAMES) and "Ceiling by word: size 1 " in table
    assert list(results["ceiling_text"]["by_slot"]) == list(SLOT_NAMES)
    assert f"Text decoded from the same z names {results['ceiling_text']['ceiling']:.2f}% " in table
    assert markdown(results) == table
    # --refine-steps: the ceiling is that of the semi-amortised q(z|x), and the table says so
    batches = list(validation_batches(make_dataset(data, "val"), 8, 50, "cpu"))
    base = load_run(tiny_base_run.path)
    assert results["refine_steps"] == 2 and results["ceiling"] == pytest.approx(
        ceiling(semi_amortised(base, 2), classifier, batches))
    assert "its mean refined per image by 2 steps: semi-amortised): " in table
    # every row starts from --seed: the N(0, I) row is the same without the other runs
    alone = run_evaluate(tmp_path, "--base", tiny_base_run.path, *bounds, "--out", tmp_path / "eval-alone")
    assert alone.returncode == 0, alone.stderr
    prior_alone = json.loads((tmp_path / "eval-alone" / "results.json").read_text())["table_2"]["prior"]
    assert prior_alone == results["table_2"]["prior"]


def test_ceiling_only_gives_each_kept_checkpoints_ceiling(tmp_path, tiny_base_run):
    data = tiny_base_run.config().data
    classifier = train_classifier(data, ClassifierConfig(channels=4, hidden=16, steps=3, batch_size=8), progress=False)
    save_classifier(classifier, tmp_path / "classifier")
    out = run_evaluate(tmp_path, "--base", tiny_base_run.path, "--ceiling-only", "--num-points", 8,
                       "--refine-steps", 3, "--classifier", tmp_path / "classifier", "--out", tmp_path / "eval")
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["ceiling_curve"]
    batches = list(validation_batches(make_dataset(data, "val"), 8, 50, "cpu"))
    for row, step in zip(rows, (2, 4), strict=True):
        checkpoint = load_run(tiny_base_run.path, step=step)
        assert row["step"] == step
        assert row["ceiling"] == pytest.approx(ceiling(checkpoint, classifier, batches))
        assert row["by_slot"] == pytest.approx(ceiling_by_slot(checkpoint, classifier, batches))
        assert row["text"] == ceiling_row(checkpoint, classifier, batches)["text"]  # greedy texts: exact shares
        refined = ceiling_row(semi_amortised(checkpoint, 3), classifier, batches)
        assert row["refined"]["ceiling"] == pytest.approx(refined["ceiling"])
        assert row["refined"]["by_slot"] == pytest.approx(refined["by_slot"])
        assert row["refined"]["text"] == refined["text"]
    table = (tmp_path / "eval" / "tables.md").read_text()
    assert "| step | ceiling (%) | size 1 |" in table and f"| 4 | {rows[1]['ceiling']:.2f} |" in table
    assert f"| 4, z refined (3 steps) | {rows[1]['refined']['ceiling']:.2f} |" in table
    assert f"| 4, text from z | {rows[1]['text']['ceiling']:.2f} |" in table
    assert f"| 4, z refined, text from z | {rows[1]['refined']['text']['ceiling']:.2f} |" in table


def test_evaluate_refuses_a_run_of_the_wrong_kind(tmp_path, tiny_base_run):
    out = run_evaluate(tmp_path, "--base", tiny_base_run.path, "--text-agg", tiny_base_run.path,
                       "--out", tmp_path / "eval")
    assert out.returncode == 2 and "is a image run, given as --text-agg" in out.stderr


def test_ceiling_only_refuses_a_run_that_is_not_a_base(tmp_path, tiny_base_run):
    config = tiny_base_run.config()
    config.guide = "text_agg"
    (tmp_path / "agg").mkdir()
    (tmp_path / "agg" / "config.json").write_text(config.to_json())
    out = run_evaluate(tmp_path, "--base", tmp_path / "agg", "--ceiling-only", "--out", tmp_path / "eval")
    assert out.returncode == 2 and "is a vlvae text_agg run; --ceiling-only takes a VLVAE base run" in out.stderr
    assert not (tmp_path / "eval").exists()
