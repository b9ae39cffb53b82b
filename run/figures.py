"""Draw the VLVAE paper's figures (Cremer & Kushman) from trained run directories, as PNGs.

Train the runs first (cpu preset; the first four names are run/svi.py's defaults):

    python run/svi.py --guide image          # runs/vlvae-image-cpu
    python run/svi.py --guide text_true      # runs/vlvae-text_true-cpu
    python run/svi.py --guide text_agg       # runs/vlvae-text_agg-cpu
    python run/svi.py --guide joint          # runs/vlvae-joint-cpu
    python run/svi.py --dataset single_object --guide image --out runs/single-image-cpu
    python run/svi.py --dataset single_object --guide text_true --base runs/single-image-cpu --out runs/single-text_true-cpu
    python run/svi.py --dataset single_object --guide text_agg --base runs/single-image-cpu --out runs/single-text_agg-cpu

then draw (each writes figures/<name>.png unless --out says otherwise):

    python run/figures.py latent runs/single-image-cpu runs/single-text_true-cpu runs/single-text_agg-cpu  # Fig. 1
    python run/figures.py reconstructions runs/vlvae-image-cpu                          # Fig. 3 (5 on CelebA)
    python run/figures.py conditionals runs/vlvae-text_true-cpu runs/vlvae-text_agg-cpu  # Fig. 4 (6 on CelebA)
    python run/figures.py joint runs/vlvae-joint-cpu runs/vlvae-image-cpu               # Fig. 7
    python run/figures.py curves runs/vlvae-text_agg-cpu                               # training curves

`python run/figures.py FIGURE --help` explains each figure's options.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from mmvae_zoo.evaluation import figures  # noqa: E402
from mmvae_zoo.training.rundir import (REPORTED_ERRORS, RunDir, RunError, check_count, check_output_file,  # noqa: E402
                            check_seed, error_message, parse_device)

IMAGE_TYPES = tuple(FigureCanvasBase.get_supported_filetypes())  # what --out may end in: png, pdf, svg, ...
COUNTS = ("resolution", "max_texts", "num", "num_texts", "num_samples")  # each figure's flags of these: >= 1
RUNS = ("run", "text_runs", "joint_run", "marginal_run")  # each figure's run directories
TEXT_GUIDES = ("text_true", "text_agg")  # the runs with a q(z|y)


def _latent(args, device):
    c = figures.components(args.run, device)
    return figures.latent_posteriors(c, args.out, [figures.components(r, device) for r in args.text_runs],
                                     resolution=args.resolution, max_texts=args.max_texts)


def _reconstructions(args, device):
    return figures.reconstructions(figures.components(args.run, device), args.out, num=args.num)


def _conditionals(args, device):
    runs = [figures.components(r, device) for r in args.text_runs]
    return figures.text_conditionals(runs, args.out, texts=args.text, num_texts=args.num_texts,
                                     num_samples=args.num_samples)


def _joint(args, device):
    return figures.joint_vs_marginal(figures.components(args.joint_run, device),
                                     figures.components(args.marginal_run, device), args.out, num=args.num)


def _curves(args, device):
    return figures.training_curves(args.run, args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cpu", help="cpu (default), auto (CUDA when present), cuda or cuda:N")
    common.add_argument("--seed", type=int, default=0, help="random seed for the sampled z (default 0)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing PNG at --out (default: refuse)")
    sub = p.add_subparsers(dest="figure", required=True, metavar="FIGURE")

    def figure(name, draw, help, out):
        s = sub.add_parser(name, parents=[common], help=help, description=help)
        s.add_argument("--out", default=out, help=f"PNG to write (default {out})")
        s.set_defaults(draw=draw)
        return s

    s = figure("latent", _latent, "Fig. 1: in a 2-d latent space, the level sets of the text posterior p(z|y) "
               "(and of learned q(z|y)) over the shaded aggregate of the image posteriors q(z|x) of each text",
               "figures/fig1_latent_posteriors.png")
    s.add_argument("run", help="a run with a 2-d latent (--dataset single_object): its VLVAE and q(z|x)")
    s.add_argument("text_runs", nargs="*", help="text_true / text_agg runs fitted to RUN: their q(z|y), one row each")
    s.add_argument("--resolution", type=int, default=100, help="grid points per latent axis (default 100)")
    s.add_argument("--max-texts", type=int, default=4, help="the most common validation texts shown (default 4)")

    s = figure("reconstructions", _reconstructions, "Fig. 3 / 5: training and validation pairs, reconstructions "
               "from the mean of q(z|x) with decoded text and its word distributions, and prior samples",
               "figures/fig3_reconstructions.png")
    s.add_argument("run", help="any VLVAE run (a text guide or prior run uses its base VLVAE and q(z|x))")
    s.add_argument("--num", type=int, default=6, help="pairs and samples per row (default 6)")

    s = figure("conditionals", _conditionals, "Fig. 4 / 6: images and texts decoded from z ~ q(z|y) of given "
               "texts, text guides side by side", "figures/fig4_text_conditionals.png")
    s.add_argument("text_runs", nargs="+", help="text_true and/or text_agg runs, shown left to right")
    s.add_argument("--text", action="append", help="a text to condition on (repeat for more; default: the first "
                                                   "--num-texts distinct validation texts, with an image each)")
    s.add_argument("--num-texts", type=int, default=4, help="validation texts when no --text is given (default 4)")
    s.add_argument("--num-samples", type=int, default=3, help="z samples per text and run (default 3, as the paper)")

    s = figure("joint", _joint, "Fig. 7: reconstructions from joint inference q(z|x,y) vs marginal inference "
               "q(z|x) on the same validation pairs, with word distributions", "figures/fig7_joint_vs_marginal.png")
    s.add_argument("joint_run", help="a run trained with --guide joint")
    s.add_argument("marginal_run", help="a run trained with --guide image")
    s.add_argument("--num", type=int, default=6, help="validation pairs (default 6)")

    s = figure("curves", _curves, "training curves: the loss and each logged term of a run's metrics.jsonl "
               "against the step", "figures/training_curves.png")
    s.add_argument("run", help="any run directory")
    return p


def check_args(args) -> torch.device:
    """Every flag, --out and the runs' settings, before any run is loaded or image rendered: the device."""
    for name in COUNTS:
        check_count(getattr(args, name, None), "--" + name.replace("_", "-"))
    check_seed(args.seed)
    check_output_file(args.out, "--out", args.overwrite, IMAGE_TYPES)
    device = parse_device(args.device)
    for name in RUNS:
        paths = getattr(args, name, None)
        for path in [paths] if isinstance(paths, str) else paths or []:
            config = RunDir(path).config()
            if config.model != "vlvae":
                raise RunError(f"{path} is a {config.model} run; the figures draw VLVAE runs")
            if name == "text_runs" and config.guide not in TEXT_GUIDES:
                raise RunError(f"{path} is a {config.guide} run, which has no q(z|y); give {' or '.join(TEXT_GUIDES)} "
                               f"runs")
    return device


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        device = check_args(args)
        torch.manual_seed(args.seed)
        path = args.draw(args, device)
    except KeyboardInterrupt:
        print(f"interrupted; {args.out} not written", file=sys.stderr)
        return 130
    except REPORTED_ERRORS as e:  # a bad flag, run or file; an OS error; a corrupt data file
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
