"""Train a model of the zoo with stochastic variational inference.

    python run/svi.py --model vlvae --guide image        # the VLVAE with q(z|x) (Eq. 1)
    python run/svi.py --model vlvae --guide text_agg     # q(z|y) as aggregate posterior (Eq. 5)
    python run/svi.py --model vlvae --guide text_true    # q(z|y) as true posterior (Eq. 3)
    python run/svi.py --model vlvae --guide prior_agg    # learned aggregate prior q(z) (Table 2)
    python run/svi.py --model jmvae --guide kl --dataset mnist    # JMVAE-kl (Eq. 4; --alpha)
    python run/svi.py --model jmvae --guide zero --dataset mnist  # JMVAE-zero
    python run/svi.py --model jmvae --guide vae --dataset mnist   # the image-only VAE baseline

Text guides and the prior are fitted to a trained VLVAE (``--base``); if that run does not
exist yet it is trained first. Every run writes a run directory (config.json, checkpoints,
metrics.jsonl, sample grids) that ``training.trainer.load_run`` loads back in one call.

Data parallel on N GPUs (or N CPU processes with gloo): ``torchrun --nproc_per_node=N run/svi.py ...``;
--batch-size is then per process (see training/distributed.py).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from datasets.cache import default_root  # noqa: E402
from datasets.registry import DATASETS  # noqa: E402
from datasets.render import check_image_size  # noqa: E402
from models.blocks import PRECISIONS  # noqa: E402
from training import distributed  # noqa: E402
from training.config import LR_DECAYS, PRESETS, RunConfig, check_train, preset  # noqa: E402
from training.rundir import (REPORTED_ERRORS, RunDir, RunError, check_finite, check_folder, check_seed,  # noqa: E402
                            error_message, load_file, parse_device)
from training.schemes import MODELS, SCHEMES, schemes_of  # noqa: E402
from training.trainer import RESUMABLE_FLAGS, Interrupted, train  # noqa: E402

DEFAULTS = {"vlvae": ("image", "two_objects"), "jmvae": ("kl", "mnist")}  # model -> (guide, dataset)
RENDERED = ("two_objects", "single_object")  # the datasets made here, of any size and number of images


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vlvae", help=f"generative model: {', '.join(MODELS)} (default vlvae)")
    p.add_argument("--guide", help="what to train (the training scheme); " + "; ".join(
        f"{model} (default {DEFAULTS[model][0]}): " + "; ".join(f"{k}: {s.summary}" for k, s in schemes_of(model).items())
        for model in MODELS))
    p.add_argument("--preset", choices=list(PRESETS),
                   help="paper: 112x112, the paper's networks and 400k steps; cpu: 64x64, narrower convolutions, "
                        "batch 128, 11k steps, base VLVAE about 95 minutes on 2 CPU cores; tiny: a smoke test (jmvae on "
                        "mnist: the paper's MLPs, batch 100, paper 100 epochs, cpu 8 epochs). "
                        "Default: paper on CUDA, cpu otherwise")
    p.add_argument("--dataset", help=f"one of: {'; '.join(f'{k} ({v})' for k, v in DATASETS.items())} "
                                     "(default two_objects; mnist for jmvae)")
    p.add_argument("--data-root", help="where datasets are cached or found (default $MMVAE_DATA_ROOT or "
                                       "~/.cache/mmvae-zoo)")
    p.add_argument("--image-size", type=int, help="image height and width (default: the preset's)")
    p.add_argument("--num-train", type=int, help="training images to render (Two Objects; default: the preset's)")
    p.add_argument("--num-val", type=int, help="validation images to render (Two Objects; default: the preset's)")
    p.add_argument("--num-down", type=int, help="stride-2 convolutions in the image encoder, and upsamplings in "
                                                "the decoder (default: the preset's, paper 2, cpu 1; at 64x64 "
                                                "with the cpu preset's strided stem, 2 leaves an 8x8 grid, 1 a "
                                                "16x16 one)")
    p.add_argument("--steps", type=int, help="optimisation steps of the VLVAE (guides image, joint; default: "
                                             "the preset's)")
    p.add_argument("--guide-steps", type=int, help="optimisation steps of a text guide or the prior (default: "
                                                   "the preset's)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (and sample grids; default: the "
                                                        "preset's, cpu 1k)")
    p.add_argument("--keep-checkpoints", type=int, help="latest checkpoints kept in the run directory (default 3; 0 "
                                                        "keeps every one, e.g. for evaluate.py --ceiling-only's curve)")
    p.add_argument("--batch-size", type=int, help="images per step and process (default: the preset's; paper 20); "
                                                  "under torchrun the global batch is this times the processes")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's; paper 4e-4)")
    p.add_argument("--lr-decay", choices=LR_DECAYS, help="learning-rate schedule: constant, cosine (annealed to 0 "
                                                         "over the run) or step (a tenth of --lr for the last 10%% of "
                                                         "the steps; default: the preset's)")
    p.add_argument("--warmup-steps", type=int, help="steps over which the KL weight rises from ~0 to 1 "
                                                    "(default: the preset's; paper 20k)")
    p.add_argument("--x-weight", type=float, help="weight of the image likelihood in Eq. 1 (paper's code 0.02)")
    p.add_argument("--y-weight", type=float, help="weight of the text likelihood in Eq. 1 (paper's code 200)")
    p.add_argument("--num-flows", type=int, help="coupling flows in q(z|y) and q(z) (default 6; 0 gives a "
                                                 "Gaussian q(z|y))")
    p.add_argument("--alpha", type=float, help="JMVAE-kl: weight of the KL terms of Eq. 4 (default 0.1; paper "
                                               "0.01, 0.1, 1)")
    p.add_argument("--text-true-weighted", action="store_true",
                   help="train text_true with the text likelihood weighted by --y-weight (default: Eq. 3 unweighted)")
    p.add_argument("--skip-bad-steps", action="store_true",
                   help="skip and count steps whose loss or gradient is NaN or inf (default: stop with a checkpoint "
                        "of the last good state)")
    p.add_argument("--clip-grad-norm", type=float, help="rescale each step's gradient to at most this norm (default: "
                                                          "no clipping); with --lr and --skip-bad-steps, may change "
                                                          "on --resume")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks' convolutional and dense blocks before training (compiled at the "
                        "first step, about 80 s on 2 CPU cores; then the cpu preset's VLVAE step is about 15%% "
                        "faster); may change on --resume")
    p.add_argument("--precision", choices=list(PRECISIONS),
                   help="what the networks compute in: fp32, or bf16 autocast for their convolutions and matrix "
                        "products; likelihoods, KLs, flows and every sum stay fp32. Default fp32: bf16 is about 9x "
                        "slower on a CPU without bf16 units (AVX-512 BF16, AMX), and its speed on CUDA is not "
                        "measured yet; may change on --resume")
    p.add_argument("--seed", type=int, help="random seed for initialisation and batch order (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", help="run directory to write (default runs/<model>-<guide>-<preset>)")
    p.add_argument("--base", help="trained VLVAE run for text guides and the prior "
                                  "(default runs/<model>-image-<preset>; trained first if missing)")
    p.add_argument("--no-train-base", action="store_true", help="fail instead of training a missing base run")
    p.add_argument("--resume", action="store_true", help=f"continue the run in --out from its last checkpoint; only "
                                                          f"{RESUMABLE_FLAGS} may differ from the run's settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


OVERRIDES = {  # flag -> (config section, field)
    "data_root": ("data", "root"), "image_size": ("data", "image_size"),
    "num_train": ("data", "num_train"), "num_val": ("data", "num_val"), "num_down": ("net", "num_down"),
    "steps": ("train", "steps"), "guide_steps": ("train", "guide_steps"),
    "checkpoint_every": ("train", "checkpoint_every"), "keep_checkpoints": ("train", "keep_checkpoints"),
    "batch_size": ("train", "batch_size"), "lr": ("train", "lr"), "lr_decay": ("train", "lr_decay"),
    "warmup_steps": ("train", "warmup_steps"), "x_weight": ("train", "x_weight"), "y_weight": ("train", "y_weight"),
    "num_flows": ("train", "num_flows"), "seed": ("train", "seed"), "alpha": ("train", "alpha"),
    "precision": ("train", "precision"),
}


def make_config(args, device) -> RunConfig:
    if args.model not in MODELS:
        raise RunError(f"unknown model {args.model!r}; choose one of {', '.join(MODELS)}")
    guide, dataset = args.guide or DEFAULTS[args.model][0], args.dataset or DEFAULTS[args.model][1]
    if guide not in schemes_of(args.model):
        raise RunError(f"unknown guide {guide!r} for model {args.model}; choose one of "
                       f"{', '.join(schemes_of(args.model))}")
    name = args.preset or ("paper" if device.type == "cuda" else "cpu")
    if not args.preset and distributed.is_main():
        print(f"preset: {name} (on {device.type}; pick another with --preset)")
    config = preset(name, dataset, args.model)
    config.model, config.guide = args.model, guide
    for flag, (section, field) in OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(getattr(config, section), field, value)
    if config.net.num_down < 0:
        raise RunError(f"--num-down must not be negative, got {config.net.num_down}")
    config.train.text_true_weighted = args.text_true_weighted
    config.train.skip_bad_steps = args.skip_bad_steps
    config.train.compile = args.compile
    config.train.clip_grad_norm = args.clip_grad_norm
    check_train(config.train)
    check_data(config)
    for flag in ("lr", "x_weight", "y_weight", "alpha", "clip_grad_norm"):
        check_finite(getattr(args, flag), "--" + flag.replace("_", "-"))
    check_seed(config.train.seed)
    return config


def check_data(config: RunConfig) -> None:
    """The data settings, before any network is built or image rendered (a rendered dataset checks them
    again, but only once the training set is made)."""
    data = config.data
    if data.name not in RENDERED:
        return
    check_image_size(data.image_size)
    for name in ("num_train", "num_val"):
        if getattr(data, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(data, name)}; pass "
                             f"--{name.replace('_', '-')} > 0")
    if config.train.batch_size > data.num_train:
        raise ValueError(f"the dataset has {data.num_train} items, fewer than one batch of "
                         f"{config.train.batch_size}; use a smaller --batch-size or more data (--num-train)")


def base_dir(config: RunConfig, args) -> Path:
    """The base run of a text guide or the prior: --base, or the default name of one."""
    return Path(args.base or f"runs/{config.model}-{SCHEMES[config.guide].base}-{config.preset}")


def check_run_dirs(config: RunConfig, out: Path, args) -> None:
    """The run directory, its base and the data root, before any data is made or a network trained:
    a run to resume must be whole (config, metrics, last checkpoint), one to start must be new."""
    check_folder(out, "--out")
    run = RunDir(out)
    if args.resume:
        run.check()
        stored = run.config()
        if (stored.model, stored.guide) != (config.model, config.guide):
            raise RunError(f"{out} is a {stored.model} {stored.guide} run; resume it with --model {stored.model} "
                           f"--guide {stored.guide} (and the flags it was started with)")
        if run.checkpoint_paths():
            run.latest_checkpoint()
        if run.base_path.exists():
            load_file(run.base_path, "base weights")
    else:
        run.check_fresh()
    scheme = SCHEMES[config.guide]
    if scheme.base:
        base = RunDir(check_folder(base_dir(config, args), "--base"))
        if base.exists():
            base.check()
            if base.config().guide != scheme.base:
                raise RunError(f"base run {base.path} trained guide {base.config().guide!r}; text guides and the "
                               f"prior need a base trained with --guide {scheme.base}")
    elif args.base is not None:
        raise RunError(f"--base is the trained run a text guide or the prior is fitted to; --guide {config.guide} "
                       f"trains its own model, so leave --base out")
    check_folder(config.data.root or default_root(), "--data-root", writable=False)


def run_training(config: RunConfig, out: Path, args, device) -> None:
    run = RunDir(out)
    base = None
    scheme = SCHEMES[config.guide]
    if scheme.base:
        base_config = copy.deepcopy(config)
        base_config.guide, base_config.base_run = scheme.base, None
        base_out = base_dir(config, args)
        base = RunDir(base_out)
        finished = base.exists() and base.checkpoint_paths() and \
            base.latest_checkpoint()["step"] >= base.config().num_steps
        if not finished:
            if args.no_train_base:
                raise RunError(f"no trained base VLVAE in {base_out}; train one with "
                               f"`python run/svi.py --model {config.model} --guide {scheme.base} --out {base_out}` "
                               f"or drop --no-train-base")
            if distributed.is_main():
                print(f"no trained base VLVAE in {base_out}: {'resuming' if base.exists() else 'training'} it first")
            train(base_config, base, device=device, resume=base.exists(), progress=not args.no_progress)
        config.base_run = str(base_out.resolve())
    started = time.time()
    components = train(config, run, device=device, base=base, resume=args.resume, progress=not args.no_progress)
    if not distributed.is_main():
        return components
    last = (run.metrics() or [{}])[-1]
    print(f"\n{config.model}/{config.guide} ({config.preset} preset) trained {config.num_steps} steps "
          f"in {time.time() - started:.0f} s on {device}")
    print("last logged: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step"))
    print(f"run directory: {run.path}  (samples in {run.samples}, load with "
          f"training.trainer.load_run('{run.path}'))")
    return components


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    config = None
    try:
        device = parse_device(args.device)  # every name is checked, under torchrun too
        if distributed.launched():
            device = distributed.setup(args.device)
        config = make_config(args, device)
        out = Path(args.out or f"runs/{config.model}-{config.guide}-{config.preset}")
        check_run_dirs(config, out, args)
        run_training(config, out, args, device)
    except Interrupted as e:  # all ranks agreed on it: rank 0 says it
        if distributed.is_main():
            print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started (rendering data, say): no checkpoint to write
        print("interrupted before training started; run the command again", file=sys.stderr)
        return 130
    except REPORTED_ERRORS as e:  # a bad flag, file or folder; an OS error; a corrupt data file
        rank = distributed.context().rank
        line = error_message(e, config and (config.data.root or default_root()))
        print(f"error{f' (rank {rank})' if rank else ''}: {line}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    # Adam's state fills with subnormal floats that the CPU handles slowly (bench/bench_epoch.py).
    # Flush them to zero before the first parallel torch op: the intra-op worker threads are made
    # later from this thread and inherit its floating-point mode (tests/test_training.py checks it).
    # Set here, not in main(), as it is process-wide state that callers of main() should not inherit.
    torch.set_flush_denormal(True)
    sys.exit(main())
