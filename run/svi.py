"""Train a model of the zoo with stochastic variational inference.

    python run/svi.py --model vlvae --guide image        # the VLVAE with q(z|x) (Eq. 1)
    python run/svi.py --model vlvae --guide text_agg     # q(z|y) as aggregate posterior (Eq. 5)
    python run/svi.py --model vlvae --guide text_true    # q(z|y) as true posterior (Eq. 3)
    python run/svi.py --model vlvae --guide prior_agg    # learned aggregate prior q(z) (Table 2)
    python run/svi.py --model jmvae --guide kl --dataset mnist    # JMVAE-kl (Eq. 4; --alpha)
    python run/svi.py --model jmvae --guide zero --dataset mnist  # JMVAE-zero
    python run/svi.py --model jmvae --guide vae --dataset mnist   # the image-only VAE baseline
    python run/svi.py --model jmvae --guide mvae --dataset mnist  # MVAE: product of experts (also on vlvae)
    python run/svi.py --model jmvae --guide mmvae --dataset mnist --particles 10  # MMVAE: mixture of experts

Text guides and the prior are fitted to a trained VLVAE (``--base``); if that run is not
trained to the end yet, the command trains it first (phase 1 of 2), then the guide (phase 2).
Stopped with Ctrl-C or SIGTERM, it checkpoints and prints the command that continues it (the
same with ``--resume``), which finishes whatever phase was stopped and starts those after it.
Every run writes a run directory (config.json, checkpoints, metrics.jsonl, sample grids) that
``mmvae_zoo.training.runs.load_run`` loads back in one call.

Data parallel on N GPUs (or N CPU processes with gloo): ``torchrun --nproc_per_node=N run/svi.py ...``;
--batch-size is then per process (see training/distributed.py).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmvae_zoo.datasets.cache import default_root  # noqa: E402
from mmvae_zoo.datasets.registry import DATASETS  # noqa: E402
from mmvae_zoo.datasets.render import check_image_size  # noqa: E402
from mmvae_zoo.models.blocks import PRECISIONS  # noqa: E402
from mmvae_zoo.training import distributed  # noqa: E402
from mmvae_zoo.training.config import FROZEN_MODEL_GUIDES, LR_DECAYS, PRESETS, RunConfig, check_train, preset  # noqa: E402
from mmvae_zoo.training.rundir import (REPORTED_ERRORS, RunDir, RunError, check_finite, check_folder, check_seed,  # noqa: E402
                            error_message, load_file, parse_device)
from mmvae_zoo.training.schemes import MODELS, scheme_of, schemes_of  # noqa: E402
from mmvae_zoo.training.trainer import RESUMABLE_FLAGS, Interrupted, train  # noqa: E402

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
    p.add_argument("--alpha", type=float, help="kl (JMVAE-kl): weight of the KL terms of Eq. 4 (default 0.1; paper "
                                               "0.01, 0.1, 1)")
    p.add_argument("--particles", type=int, help="mmvae: draws from each expert in the importance-weighted "
                                                 "objective, K (default 1; each costs a decoder pass)")
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
                        "products; likelihoods, KLs, flows and every sum stay fp32. Default fp32: bf16 is about 12x "
                        "slower on a CPU without bf16 units (AVX-512 BF16, AMX), and its speed on CUDA is not "
                        "measured yet; may change on --resume")
    p.add_argument("--seed", type=int, help="random seed for initialisation and batch order (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", help="run directory to write (default runs/<model>-<guide>-<preset>)")
    p.add_argument("--base", help="trained VLVAE run for text guides and the prior (default "
                                  "runs/<model>-image-<preset>; trained first if missing, finished first if "
                                  "partly trained)")
    p.add_argument("--no-train-base", action="store_true",
                   help="fail instead of training a missing or partly trained base run")
    p.add_argument("--resume", action="store_true",
                   help=f"continue a stopped command: the run in --out (and a text guide's base) from its last "
                        f"checkpoint, and a run not started yet (a text guide's, when its base was stopped) from the "
                        f"start; a run trained to the end is left as it is. Only {RESUMABLE_FLAGS} may differ from "
                        f"the run's settings")
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
    "particles": ("train", "particles"),
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
        if data.num_train is not None or data.num_val is not None:  # set by --num-train / --num-val
            raise ValueError(f"--num-train and --num-val set how many images to render ({', '.join(RENDERED)}); "
                             f"{data.name} uses the split sizes of its files, drop them")
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
    return Path(args.base or f"runs/{config.model}-{scheme_of(config).base}-{config.preset}")


# Seconds per step of the main command's two phases with the cpu preset on 2 CPU cores, as measured
# (docs/training.md: the base VLVAE about 95 minutes for 11k steps, q_Agg about 7 for 6k): the only
# runs whose time the command estimates.
MEASURED_SECONDS_PER_STEP = {("cpu", "image"): 95 * 60 / 11_000, ("cpu", "text_agg"): 7 * 60 / 6_000}
TITLES = {"text_true": "q_True", "text_agg": "q_Agg", "prior_agg": "learned prior q(z)"}  # phase 2 of each


class Phase:
    """One run of the command: the base VLVAE a text guide or the prior needs (phase 1 of 2), or the
    run in --out. ``action`` is train (a new run), resume (from the checkpoint of step ``start``)
    or done (nothing to train; ``note`` says why). (A plain class: tests load this script without a
    module entry, which dataclasses need.)"""

    def __init__(self, config: RunConfig, run: RunDir, title: str, action: str, start: int = 0,
                 base: RunDir | None = None, note: str = ""):
        self.config, self.run, self.title, self.action = config, run, title, action
        self.start, self.base, self.note = start, base, note
        self.number = self.total = 1  # its place in the command, once planned
        self.seconds = None  # how long it trained, once it has

    @property
    def label(self) -> str:
        """What the progress bar and every line about the phase call it."""
        where = f"{self.title} -> {self.run.path}"
        return f"phase {self.number}/{self.total}: {where}" if self.total > 1 else where


def plan(config: RunConfig, out: Path, args) -> list[Phase]:
    """The runs this command trains, in order, each checked before any data is made or a network
    trained: a run to start must be new; one to resume whole (config, metrics, last checkpoint).

    With --resume, what has not started yet starts: the base VLVAE of a text guide or the prior is
    resumed if partly trained and reused if trained to the end (or not needed when the run in --out
    holds its weights already), and a missing run in --out is made. Only where nothing of the
    command exists is there nothing to resume.
    """
    check_folder(out, "--out")
    final = RunDir(out)
    resumed = args.resume and final.exists()
    if resumed:
        latest = check_resumable(final, config)
    elif not args.resume:
        final.check_fresh()
    scheme = scheme_of(config)
    phases = []
    if scheme.base:
        phases.append(base_phase(config, args, final if resumed else None))
    elif args.base is not None:
        raise RunError(f"--base is the trained run a text guide or the prior is fitted to; --guide {config.guide} "
                       f"trains its own model, so leave --base out")
    if args.resume and not resumed and not (phases and phases[0].run.exists()):
        where = f"{out} is not a run directory (no config.json)" + (
            f", nor is its base {phases[0].run.path}" if phases else "")
        raise RunError(f"{where}: nothing to resume; start it with: {command_line(args.argv, resume=False)}")
    title = TITLES.get(config.guide, f"{config.model}/{config.guide}") + (f" ({config.guide})" if phases else "")
    if not resumed:
        phases.append(Phase(config, final, title, "train", base=phases[0].run if phases else None))
    elif latest >= config.num_steps:
        phases.append(Phase(config, final, title, "done", latest, note=f"trained to step {latest}"))
    else:
        phases.append(Phase(config, final, title, "resume", latest, base=phases[0].run if phases else None))
    for number, phase in enumerate(phases, 1):
        phase.number, phase.total = number, len(phases)
    check_folder(config.data.root or default_root(), "--data-root", writable=False)
    return phases


def check_resumable(run: RunDir, config: RunConfig) -> int:
    """The step of the last checkpoint of ``run`` (0 if none yet), once it is checked whole and of ``config``'s
    scheme."""
    run.check()
    stored = run.config()
    if (stored.model, stored.guide) != (config.model, config.guide):
        raise RunError(f"{run.path} is a {stored.model} {stored.guide} run; resume it with --model {stored.model} "
                       f"--guide {stored.guide} (and the flags it was started with)")
    latest = run.latest_checkpoint()["step"] if run.checkpoint_paths() else 0
    if run.base_path.exists():
        load_file(run.base_path, "base weights")
    return latest


def base_phase(config: RunConfig, args, final: RunDir | None) -> Phase:
    """Phase 1 of a text guide or the prior: its base VLVAE, trained, resumed or reused. Not needed when the
    run it is resumed for (``final``) holds the base weights already. Sets ``config.base_run``."""
    scheme = scheme_of(config)
    base_config = copy.deepcopy(config)
    base_config.guide, base_config.base_run = scheme.base, None
    base = RunDir(check_folder(base_dir(config, args), "--base"))
    if base.exists():
        base.check()
        if base.config().guide != scheme.base:
            raise RunError(f"base run {base.path} trained guide {base.config().guide!r}; text guides and the "
                           f"prior need a base trained with --guide {scheme.base}")
    config.base_run = str(base.path.resolve())
    title = f"base {config.model.upper()} ({scheme.base})"
    if final is not None and final.base_path.exists():  # its base is read no more: the steps from file names
        latest = max(base.checkpoint_steps(), default=0) if base.exists() else 0
        done = base.exists() and latest >= base.config().num_steps
        return Phase(base_config, base, title, "done", latest, note=f"trained to step {latest}" if done else
                     f"not needed: {final.path} holds the base weights it was fitted to")
    latest = base.latest_checkpoint()["step"] if base.exists() and base.checkpoint_paths() else 0
    if base.exists() and latest >= base.config().num_steps:
        return Phase(base_config, base, title, "done", latest, note=f"trained to step {latest}, reused")
    if args.no_train_base:
        raise RunError(f"no trained base {config.model.upper()} in {base.path}"
                       + (f" (its last checkpoint is step {latest} of {base.config().num_steps})" if base.exists()
                          else "")
                       + f"; train one with `python run/svi.py --model {config.model} --guide {scheme.base} --out "
                         f"{base.path}{' --resume' if base.exists() else ''}` or drop --no-train-base")
    return Phase(base_config, base, title, "resume" if base.exists() else "train", latest)


def estimate(config: RunConfig, steps: int, device) -> str:
    """About how long ``steps`` steps take, where measured: the main command's phases with the cpu preset
    as it is (network, data, batch) on the CPU; otherwise nothing."""
    rate = MEASURED_SECONDS_PER_STEP.get((config.preset, config.guide))
    if rate is None or device.type != "cpu" or config.model != "vlvae" or config.data.name != "two_objects":
        return ""
    reference = preset(config.preset, config.data.name, config.model)
    as_measured = (config.net == reference.net and config.data.image_size == reference.data.image_size
                   and config.train.batch_size == reference.train.batch_size
                   and config.train.num_flows == reference.train.num_flows and config.train.precision == "fp32")
    minutes = rate * steps / 60
    return f", about {minutes:.0f} minutes on 2 CPU cores as measured" if as_measured and minutes >= 1 else ""


def announce(phases: list[Phase], device) -> None:
    """Each phase up front: its run directory and what it trains."""
    if len(phases) > 1:
        print(f"this command trains in {len(phases)} phases, one after the other:")
    for phase in phases:
        steps = phase.config.num_steps
        if phase.action == "done":
            what = f"nothing to train ({phase.note})"
        elif phase.action == "resume" and phase.start:
            what = (f"resume from step {phase.start}: {steps - phase.start} of {steps} steps left"
                    + estimate(phase.config, steps - phase.start, device))
        elif phase.action == "resume":
            what = f"start over (it has no checkpoint yet): {steps} steps" + estimate(phase.config, steps, device)
        else:
            what = f"train {steps} steps" + estimate(phase.config, steps, device)
        print(("  " if len(phases) > 1 else "") + f"{phase.label}: {what}")


def run_phases(phases: list[Phase], args, device):
    """Train each phase that is not done, in order; the components of the last one."""
    components = None
    for phase in phases:
        if phase.action == "done":
            continue
        started = time.time()
        try:
            components = train(phase.config, phase.run, device=device, base=phase.base,
                               resume=phase.action == "resume", progress=not args.no_progress, label=phase.label)
        except Interrupted as e:
            e.phase = phase
            raise
        phase.seconds = time.time() - started
    return components


def summarize(phases: list[Phase], device) -> None:
    """What each phase did, the last logged values, and where the run is."""
    final = phases[-1]
    config = final.config
    print(f"\n{config.model}/{config.guide} ({config.preset} preset) on {device}:")
    for phase in phases:
        steps = phase.config.num_steps
        did = (f"trained steps {phase.start + 1}-{steps} in {phase.seconds:.0f} s" if phase.seconds is not None
               else phase.note)
        print(f"  {phase.label}: {did}")
    last = (final.run.metrics() or [{}])[-1]
    print("last logged: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step"))
    print(f"run directory: {final.run.path}  (samples in {final.run.samples}, load with "
          f"mmvae_zoo.training.runs.load_run('{final.run.path}'))")


def nothing_to_train(phases: list[Phase]) -> str:
    """The line that says a resumed command had nothing left to train, and what one may do instead."""
    final = phases[-1]
    flag = "--guide-steps" if final.config.guide in FROZEN_MODEL_GUIDES else "--steps"
    runs = ", ".join(str(phase.run.path) for phase in phases if phase.run.exists())
    return (f"nothing to train: {'every phase' if len(phases) > 1 else 'the run'} is trained to the end ({runs}); "
            f"load {final.run.path} with mmvae_zoo.training.runs.load_run('{final.run.path}'), or train it longer with "
            f"--resume and a larger {flag}")


def python_name() -> str:
    """How the user called this Python: ``python`` or ``python3`` where that is the one on the PATH, else
    its full path."""
    here = os.path.abspath(sys.executable)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and os.path.abspath(found) == here:
            return name
    return sys.executable


def command_line(argv: list[str], resume: bool) -> str:
    """This command as the user can paste it, with --resume or without: the same launcher (python, or
    torchrun on one machine), script and flags."""
    flags = [a for a in argv if not (a.startswith("--re") and "--resume".startswith(a))]
    flags += ["--resume"] if resume else []
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).resolve() == Path(__file__).resolve() else \
        _shortest(Path(__file__).resolve())
    if not distributed.launched():
        return shlex.join([python_name(), script, *flags])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if local == world:
        return shlex.join(["torchrun", "--standalone", f"--nproc_per_node={local}", script, *flags])
    return "the same torchrun command on every machine, of: " + shlex.join([script, *flags])


def _shortest(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def made_anything(phases: list[Phase] | None) -> bool:
    return bool(phases) and any(phase.run.exists() for phase in phases)


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM outside training (where the loop checkpoints first) stops the command as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def stop(signum, frame):
        if os.getpid() == owner:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)  # a forked worker (rendering data) ends as it would have
        os.kill(os.getpid(), signum)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    config = phases = None
    try:
        with sigterm_as_ctrl_c():
            device = parse_device(args.device)  # every name is checked, under torchrun too
            if distributed.launched():
                device = distributed.setup(args.device)
            config = make_config(args, device)
            out = Path(args.out or f"runs/{config.model}-{config.guide}-{config.preset}")
            phases = plan(config, out, args)
            if distributed.is_main():
                announce(phases, device)
            if all(phase.action == "done" for phase in phases):
                if distributed.is_main():
                    print(nothing_to_train(phases))
                return 0
            run_phases(phases, args, device)
            if distributed.is_main():
                summarize(phases, device)
    except Interrupted as e:  # all ranks agreed on it: rank 0 says it
        if distributed.is_main():
            phase = getattr(e, "phase", None)
            where = f" in phase {phase.number}/{phase.total}, {phase.title}" if phase and phase.total > 1 else ""
            print(f"interrupted{where}: {e.stopped}; continue with: {command_line(argv, resume=True)}",
                  file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside the training loop (rendering data, say): no checkpoint to write
        if made_anything(phases):
            print(f"interrupted outside the training steps; continue with: {command_line(argv, resume=True)}",
                  file=sys.stderr)
        else:
            print(f"interrupted before training started; run the command again: {command_line(argv, args.resume)}",
                  file=sys.stderr)
        return 130
    except REPORTED_ERRORS as e:  # a bad flag, file or folder; an OS error; a corrupt data file
        rank = distributed.context().rank
        line = error_message(e)
        print(f"error{f' (rank {rank})' if rank else ''}: {line}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    return 0


def cli() -> int:
    """The command (``python run/svi.py`` and the ``mmvae-svi`` console script)."""
    # Adam's state fills with subnormal floats that the CPU handles slowly (bench/bench_epoch.py).
    # Flush them to zero before the first parallel torch op: the intra-op worker threads are made
    # later from this thread and inherit its floating-point mode (tests/test_training.py checks it).
    # Set here, not in main(), as it is process-wide state that callers of main() should not inherit.
    torch.set_flush_denormal(True)
    return main()


if __name__ == "__main__":
    sys.exit(cli())
