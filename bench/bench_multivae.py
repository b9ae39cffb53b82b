"""The zoo's MVAE and MMVAE side by side with MultiVae's (PyPI ``multivae``, the best-known peer library),
in one process on the same MNIST image + label setting: training time per epoch and the joint bound
log p(x, w) at K = 1000 importance samples on the same test images after the same training.

Setting (``run/svi.py --model jmvae --dataset mnist --preset cpu --guide mvae|mmvae``): the JMVAE paper's
MNIST networks (z 64; each expert an encoder of two dense layers of 512 with leaky ReLU and a linear map to
mean and softplus scale; decoders of three dense layers of 512), Bernoulli pixels on dynamically binarised
MNIST (50k training images), a categorical label, batch 100, Adam 1e-3, no gradient clipping.

(a) zoo: ``training.schemes.build`` and ``Components.loss``, the step of run/svi.py (Pyro traces; Pyro's
    validation on the first step only; no logging or checkpoints), then
    ``evaluation.bounds.evaluate_bounds(..., names=["log p(x,w)"])`` as run/evaluate.py calls it
    (batches of 50 test images, chunks of 50 particles).
(b) MultiVae: its ``MVAE`` / ``MMVAE`` classes and their own losses (``model(inputs).loss``, what its
    ``BaseTrainer`` backpropagates) and Adam, then their own ``compute_joint_nll`` (and, for MMVAE,
    ``compute_joint_nll_paper``). Its encoders and decoders are the zoo's very modules (an untrained copy
    of (a)'s, so both start from the same weights) inside pythae ``BaseEncoder`` / ``BaseDecoder``
    wrappers, MultiVae's documented way of giving custom architectures; an encoder hands MultiVae
    log_covariance = 2 log(softplus(.) + 1e-4), so its std is the zoo's scale.

Both read the same batches (``datasets.loader.BatchLoader``; the label as the zoo's word id or as
MultiVae's one-hot vector) and draw their own random numbers. Per model, the epochs are interleaved
(zoo then MultiVae in epoch 1, the other order in epoch 2, ...), and so are the bounds, batch by batch,
so machine load hits both alike. Epochs are timed in wall-clock seconds and in this process's CPU seconds
(one torch thread by default): on cores shared with other jobs the CPU time is the steadier figure. Each
bound is computed on both trained networks (a 2 x 2: trained by x estimated by), which separates a
difference of training from one of the estimators; the difference of the two trainings is also given
paired over the same test images, with its standard error. That error covers the test images and the
estimator's draws, not the training's own randomness: ``--replicates 1`` trains the zoo once more from
the same weights on the same batches with other random draws (interleaved with the other two), and the
bound of that replicate shows how far two trainings of one implementation already differ.

What MultiVae does differently, and what is set here to match the zoo (``make_multivae``):

- Both: MultiVae's label likelihood ``"categorical"`` is sum(one_hot * log_softmax(logits + 1e-6)), the
  zoo's Categorical; its ``"bernoulli"`` is torch's Bernoulli(logits), the zoo's too. No likelihood
  rescaling in either. The label enters the encoder as a one-hot vector in both.
- MVAE: MultiVae's KL is the closed form, the zoo's the one-sample estimate log q(z) - log p(z) of Pyro's
  Trace_ELBO (the same expectation and gradient in expectation, other variance). The product of experts
  includes the N(0, I) prior expert in both. MultiVae's KL warm-up counts epochs (beta = (epoch - 1 +
  batch_ratio) / warmup, 1 from epoch ``warmup`` on); it is driven here with epoch 1 and batch_ratio =
  2 x the zoo's KL weight of that step (config warmup 2), so both use the zoo's weight at every step:
  (step + 1) / warmup_steps, capped at 1. ``use_subsampling=True, k=0``: joint + unimodal ELBOs, as the zoo.
- MMVAE: MultiVae's defaults are Laplace posteriors and prior with softmax scales, a learned prior
  variance, K = 10 and the DReG gradient; set here to ``prior_and_posterior_dist="normal"``,
  ``learn_prior=False``, ``K=--particles`` and ``loss="iwae_looser"`` (the plain stratified IWAE gradient
  of the zoo's MMVAEELBO, which has no DReG: docs/design.md says why). MultiVae's loss is summed over the
  batch, the zoo's averaged; Adam is (up to its eps) invariant to that scale.
- The joint bound. MVAE: both estimators sample q(z|x,w), the product of experts, K times: the same
  estimator. MMVAE: the zoo samples the mixture (q(z|x) + q(z|w)) / 2, K draws in all. MultiVae's
  ``compute_joint_nll`` draws all K from ONE expert picked at random (``encode`` picks one modality per
  call) but weights by the mixture density: not an importance-sampling estimate of p(x, w) (too high by up
  to log 2 when the image expert is picked, far too low when the label expert is); the figures say which
  expert each datapoint got. ``compute_joint_nll_paper`` draws K from EACH expert (2K draws), the
  stratified estimate of the MMVAE paper; given several datapoints and K > batch_size_K it averages over the
  particle chunks the product of the batch's per-chunk estimates (a looser bound of the batch's sum), so
  it is called one datapoint at a time here, as is ``compute_joint_nll`` (for per-datapoint values).

    python bench/bench_multivae.py                 # 2 epochs each, MVAE and MMVAE (K 10), 1000 test images
    python bench/bench_multivae.py --replicates 1 --num-points 500   # with a second zoo training: about 30 min
    python bench/bench_multivae.py --model mvae --epochs 2 --steps-per-epoch 50 --num-points 50   # a quick look
    python bench/bench_multivae.py --particles 1 --json out.json

On 2 shared CPU cores (one thread) the first command took about 21 minutes with 500 test images; a
report is docs/bench/multivae-2026-12-06.md.

Needs ``multivae`` importable beside the zoo (it is not a dependency of the zoo: ``pip install multivae`` in
a venv of its own; the zoo from this checkout is found without installing).
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import math
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from mmvae_zoo.datasets.loader import BatchLoader  # noqa: E402
from mmvae_zoo.datasets.registry import make_dataset  # noqa: E402
from mmvae_zoo.evaluation.bounds import evaluate_bounds  # noqa: E402
from mmvae_zoo.evaluation.report import validation_batches  # noqa: E402
from mmvae_zoo.training.config import preset, resolve  # noqa: E402
from mmvae_zoo.training.schemes import build, warmup  # noqa: E402
from output import write_json  # noqa: E402

IMPLEMENTATIONS = ("zoo", "multivae")
MODELS = ("mvae", "mmvae")
NUM_CLASSES = 10
EVAL_BATCH = 50   # test images per pass, as run/evaluate.py
EVAL_CHUNK = 50   # the zoo's particles per vectorised pass, as run/evaluate.py
MULTIVAE_CHUNK = 100  # MultiVae's batch_size_K (its default)


def import_multivae():
    """MultiVae's modules, imported only here; one clear line when it is not installed."""
    try:
        from multivae.data.datasets.base import MultimodalBaseDataset
        from multivae.models import MMVAE, MMVAEConfig, MVAE, MVAEConfig
        from multivae.models.mmvae import mmvae_model
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder
    except ImportError as e:
        raise SystemExit(f"bench_multivae.py needs MultiVae ({e}): `pip install multivae` in a venv of its own "
                         f"(python3 -m venv /work/mvenv && /work/mvenv/bin/pip install multivae) and run this "
                         f"script with that venv's python") from None
    return dict(version=importlib.metadata.version("multivae"), Dataset=MultimodalBaseDataset, MVAE=MVAE,
                MVAEConfig=MVAEConfig, MMVAE=MMVAE, MMVAEConfig=MMVAEConfig, mmvae_module=mmvae_model,
                ModelOutput=ModelOutput, BaseEncoder=BaseEncoder, BaseDecoder=BaseDecoder)


def make_multivae(mv: dict, kind: str, components, particles: int):
    """MultiVae's MVAE or MMVAE whose encoders and decoders are ``components``' own modules (shared, not copied)."""
    ModelOutput = mv["ModelOutput"]

    class Expert(mv["BaseEncoder"]):
        """The zoo's unimodal encoder (branch, then the linear head): mean and log variance of its Gaussian."""

        def __init__(self, guide):
            super().__init__()
            self.guide = guide

        def forward(self, x):
            loc, raw_scale = self.guide.head.linear(self.guide.branch(x)).chunk(2, dim=-1)
            return ModelOutput(embedding=loc, log_covariance=2 * torch.log(F.softplus(raw_scale) + 1e-4))

    class Decoder(mv["BaseDecoder"]):
        """The zoo's decoder: pixel logits [N, 1, 28, 28], or the label's logits [N, 10] (``flat``)."""

        def __init__(self, net, flat: bool):
            super().__init__()
            self.net, self.flat = net, flat

        def forward(self, z):
            out = self.net(z)
            return ModelOutput(reconstruction=out.flatten(-2) if self.flat else out)

    guide, model = components.guide, components.model
    encoders = {"image": Expert(guide.image), "label": Expert(guide.text)}
    decoders = {"image": Decoder(model.image_decoder, False), "label": Decoder(model.text_decoder, True)}
    common = dict(n_modalities=2, latent_dim=model.config.z_dim,
                  input_dims={"image": tuple(model.config.image_shape), "label": (NUM_CLASSES,)},
                  decoders_dist={"image": "bernoulli", "label": "categorical"})
    if kind == "mvae":
        config = mv["MVAEConfig"](**common, use_subsampling=True, k=0, warmup=2, beta=1.0)
        return mv["MVAE"](config, encoders=encoders, decoders=decoders)
    config = mv["MMVAEConfig"](**common, K=particles, prior_and_posterior_dist="normal", learn_prior=False,
                               loss="iwae_looser")
    return mv["MMVAE"](config, encoders=encoders, decoders=decoders)


def one_hot(tokens: torch.Tensor) -> torch.Tensor:
    """Word ids [B, 1] (1..10) as MultiVae's label modality, one-hot [B, 10]."""
    return F.one_hot(tokens[:, 0] - 1, NUM_CLASSES).float()


@contextmanager
def recording_expert_choice(mv: dict, picks: list):
    """Records which modality MultiVae's MMVAE ``encode`` draws from (it calls np.random.choice once per call)."""
    module = mv["mmvae_module"]
    original = module.np.random.choice

    def choice(a, *args, **kwargs):
        picked = original(a, *args, **kwargs)
        picks.append(str(picked))
        return picked

    module.np.random.choice = choice
    try:
        yield
    finally:
        module.np.random.choice = original


def mean_sem(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan


def train(kind: str, args, mv: dict) -> dict:
    """Trains the zoo's and MultiVae's ``kind`` from the same initial weights on the same batches, interleaved."""
    config = resolve(preset("cpu", "mnist", "jmvae"))
    config.guide = kind
    t = config.train
    t.particles = args.particles
    loader = BatchLoader(make_dataset(config.data, "train"), t.batch_size, seed=t.seed)
    steps = min(args.steps_per_epoch or loader.steps_per_epoch, loader.steps_per_epoch)
    total = steps * args.epochs
    # Set before the copies below: each copy of the components keeps its own config, and the warm-up is read from it.
    t.warmup_steps = args.warmup_steps if args.warmup_steps is not None else min(t.warmup_steps, total // 2)
    torch.manual_seed(args.seed)
    zoo = build(config)
    twin = copy.deepcopy(zoo)  # the same initial networks, for MultiVae to train
    zoos = {"zoo": zoo, **{f"zoo{r + 2}": copy.deepcopy(zoo) for r in range(args.replicates)}}  # and the replicates
    names = IMPLEMENTATIONS + tuple(zoos)[1:]
    if any(c.config.train != t for c in zoos.values()):
        raise RuntimeError("the zoo's copies do not train with the same settings")
    model = make_multivae(mv, kind, twin, args.particles)
    trained = {name: [q for m in c.trained().values() for q in m.parameters()] for name, c in zoos.items()}
    trained["multivae"] = [q for q in model.parameters() if q.requires_grad]
    if len({id(q) for q in trained["zoo"]}) != len({id(q) for q in trained["multivae"]}):
        raise RuntimeError("the MultiVae model does not train the same parameters as the zoo's")
    optimizers = {name: torch.optim.Adam(params, lr=t.lr) for name, params in trained.items()}

    def loss(name, step, x, y):
        if name in zoos:
            with pyro.validation_enabled(step == 0):  # as run/svi.py: Pyro's checks on the first step only
                return zoos[name].loss(step, x, y)[0], 1  # Components.loss is per datapoint
        # pyro.validation_enabled also switches torch.distributions' argument checks, which MultiVae's classes use
        with pyro.validation_enabled(args.multivae_validation):
            inputs = mv["Dataset"](data={"image": x, "label": one_hot(y)})
            # epoch 1 and batch_ratio = 2 x the zoo's KL weight make MultiVae's beta (config warmup 2) the zoo's
            out = model(inputs, epoch=1, batch_ratio=2 * warmup(step, t.warmup_steps))
            return out.loss, (len(x) if kind == "mmvae" else 1)  # MMVAE's loss is summed over the batch

    def epoch(name, e):
        optimizer, total = optimizers[name], 0.0
        start, cpu = time.perf_counter(), time.process_time()
        for step in range(e * steps, (e + 1) * steps):
            x, y = loader.batch(e * loader.steps_per_epoch + step - e * steps)
            value, per = loss(name, step, x, y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += value.detach() / per
        return time.perf_counter() - start, time.process_time() - cpu, float(total) / steps

    objective = ("MVAE: ELBO(x,w) + ELBO(x) + ELBO(w)" if kind == "mvae" else
                 f"MMVAE: stratified IWAE, K = {t.particles}")
    print(f"\n== {kind}: {objective}; {steps} steps of batch {t.batch_size} an epoch, KL warm-up over "
          f"{t.warmup_steps} steps (MMVAE: none); load average {os.getloadavg()[0]:.2f}", flush=True)
    seconds, cpu_seconds, losses = ({name: [] for name in names} for _ in range(3))
    for e in range(args.epochs):
        for name in (names if e % 2 == 0 else names[::-1]):
            s, cpu, value = epoch(name, e)
            seconds[name].append(s)
            cpu_seconds[name].append(cpu)
            losses[name].append(value)
            print(f"epoch {e + 1} {name:8s} {s:8.2f} s wall {cpu:8.2f} s CPU   loss per datapoint {value:9.3f}  "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    return dict(config=config, zoo=zoo, zoos=zoos, twin=twin, model=model, seconds=seconds, cpu_seconds=cpu_seconds,
                losses=losses, steps=steps, warmup_steps=t.warmup_steps)


def evaluate(kind: str, run: dict, args, mv: dict) -> dict:
    """log p(x,w) of both trained networks under the zoo's and MultiVae's estimators, interleaved batch by batch."""
    config = run["config"]
    networks = {**run["zoos"], "multivae": run["twin"]}  # by who trained them (zoo2, ...: replicates)
    replicates = [name for name in run["zoos"] if name != "zoo"]
    # MultiVae's estimators run on MultiVae models; the zoo-trained networks get one wrapping them (no training).
    mv_models = {"zoo": make_multivae(mv, kind, run["zoo"], args.particles), "multivae": run["model"]}
    batches = list(validation_batches(make_dataset(config.data, "test"), args.num_points, EVAL_BATCH, "cpu"))
    K = args.eval_particles
    picks = []

    def zoo_estimator(trainer, x, y, first):
        with pyro.validation_enabled(first):
            return evaluate_bounds(networks[trainer], [(x, y)], K, EVAL_CHUNK, names=["log p(x,w)"])["log p(x,w)"].value

    def per_point(method):
        def estimate(trainer, x, y, first):
            model, label = mv_models[trainer], one_hot(y)
            with pyro.validation_enabled(False), torch.no_grad():
                values = [-getattr(model, method)(mv["Dataset"](data={"image": x[i:i + 1], "label": label[i:i + 1]}),
                                                   K=K, batch_size_K=MULTIVAE_CHUNK) for i in range(len(x))]
            return torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(()) for v in values])
        return estimate

    estimators = {"zoo": zoo_estimator, "multivae": per_point("compute_joint_nll")}
    if kind == "mmvae":
        estimators["multivae_paper"] = per_point("compute_joint_nll_paper")
    cells = [(est, trainer) for est in estimators for trainer in ("zoo", "multivae")]
    cells += [("zoo", name) for name in replicates]  # the replicates under the zoo's estimator only
    values = {cell: [] for cell in cells}
    seconds = {est: 0.0 for est in estimators}
    cpu_seconds = {est: 0.0 for est in estimators}
    context = recording_expert_choice(mv, picks) if kind == "mmvae" else nullcontext()
    with context:
        for i, (x, y) in enumerate(batches):
            order = cells[i % len(cells):] + cells[:i % len(cells)]  # rotate, so no cell always runs first
            for est, trainer in order:
                pyro.set_rng_seed(args.seed * 7919 + i)
                start, cpu = time.perf_counter(), time.process_time()
                picks_before = len(picks)
                values[(est, trainer)].append(estimators[est](trainer, x, y, i == 0))
                seconds[est] += time.perf_counter() - start
                cpu_seconds[est] += time.process_time() - cpu
                if est == "multivae" and kind == "mmvae":
                    run.setdefault("picks", {}).setdefault(trainer, []).extend(picks[picks_before:])
    points = sum(len(x) for x, _ in batches)
    values = {cell: torch.cat(v) for cell, v in values.items()}
    table = {}
    for (est, trainer), v in values.items():
        mean, sem = mean_sem(v)
        table[f"{est}|{trainer}"] = {"mean": mean, "sem": sem}
    paired = {}
    for est in estimators:
        mean, sem = mean_sem(values[(est, "zoo")] - values[(est, "multivae")])
        paired[est] = {"zoo_minus_multivae": mean, "sem": sem}
    for name in replicates:  # training noise: the same training with other random draws
        mean, sem = mean_sem(values[("zoo", name)] - values[("zoo", "zoo")])
        paired[f"{name}_minus_zoo"] = {"mean": mean, "sem": sem}
    runs = {est: sum(1 for e, _ in cells if e == est) * points / 1000 for est in estimators}
    result = dict(num_points=points, particles=K, bounds=table, paired=paired,
                  s_per_1000_points={est: s / runs[est] for est, s in seconds.items()},
                  cpu_s_per_1000_points={est: s / runs[est] for est, s in cpu_seconds.items()})
    if kind == "mmvae":  # MultiVae's compute_joint_nll by the expert it drew from
        split = {}
        for trainer in ("zoo", "multivae"):
            chosen = np.array(run["picks"][trainer])
            v, ours = values[("multivae", trainer)].numpy(), values[("zoo", trainer)].numpy()
            split[trainer] = {m: {"count": int((chosen == m).sum()),
                                  "mean": float(v[chosen == m].mean()) if (chosen == m).any() else math.nan,
                                  "zoo_mean": float(ours[chosen == m].mean()) if (chosen == m).any() else math.nan}
                              for m in ("image", "label")}
        result["multivae_by_expert"] = split
    return result


def later_ratio(seconds: dict) -> float:
    """zoo / MultiVae of the median epoch, epoch 1 left out when there are more."""
    later = {name: statistics.median(s[1:]) if len(s) > 1 else s[0] for name, s in seconds.items()}
    return later["zoo"] / later["multivae"]


def report(kind: str, run: dict, ev: dict) -> dict:
    seconds, cpu_seconds, losses = run["seconds"], run["cpu_seconds"], run["losses"]
    ratio, cpu_ratio = later_ratio(seconds), later_ratio(cpu_seconds)
    epochs = f"{'2..' if len(seconds['zoo']) > 1 else ''}{len(seconds['zoo'])}"
    print(f"\n{kind}: epoch seconds (wall) zoo {[round(s, 1) for s in seconds['zoo']]}, MultiVae "
          f"{[round(s, 1) for s in seconds['multivae']]}; ratio zoo/MultiVae {ratio:.3f} wall, {cpu_ratio:.3f} CPU "
          f"(median of epochs {epochs}; the CPU time of this process is what other jobs on the cores disturb least)")
    print(f"log p(x,w), K = {ev['particles']}, {ev['num_points']} MNIST test images (mean +- standard error):")
    print(f"  {'estimator':<34s} {'trained by zoo':>20s} {'trained by MultiVae':>20s} {'zoo - MultiVae (paired)':>26s}"
          f" {'s / 1000 images, wall, CPU':>27s}")
    names = {"zoo": "zoo evaluate_bounds", "multivae": "MultiVae compute_joint_nll",
             "multivae_paper": "MultiVae compute_joint_nll_paper"}
    for est, name in names.items():
        if f"{est}|zoo" not in ev["bounds"]:
            continue
        a, b, d = ev["bounds"][f"{est}|zoo"], ev["bounds"][f"{est}|multivae"], ev["paired"][est]
        print(f"  {name:<34s} {a['mean']:10.2f} +- {a['sem']:5.2f} {b['mean']:12.2f} +- {b['sem']:5.2f} "
              f"{d['zoo_minus_multivae']:15.2f} +- {d['sem']:5.2f} {ev['s_per_1000_points'][est]:16.1f} "
              f"{ev['cpu_s_per_1000_points'][est]:10.1f}")
    for name in seconds:
        if name not in IMPLEMENTATIONS:
            b, d = ev["bounds"][f"zoo|{name}"], ev["paired"][f"{name}_minus_zoo"]
            print(f"  replicate {name} (the zoo's training again, other random draws; epochs "
                  f"{[round(s, 1) for s in cpu_seconds[name]]} s CPU): zoo estimator {b['mean']:.2f} +- "
                  f"{b['sem']:.2f}, "
                  f"{name} - zoo (paired) {d['mean']:.2f} +- {d['sem']:.2f}")
    for trainer, split in ev.get("multivae_by_expert", {}).items():
        parts = ", ".join(f"{m} expert {s['count']} images, mean {s['mean']:.2f} (zoo estimator on them "
                          f"{s['zoo_mean']:.2f})" for m, s in split.items())
        print(f"  MultiVae compute_joint_nll on the {trainer}-trained network by the expert it drew from: {parts}")
    return {"epoch_s": {name: [round(s, 2) for s in v] for name, v in seconds.items()},
            "epoch_cpu_s": {name: [round(s, 2) for s in v] for name, v in cpu_seconds.items()},
            "cpu_ratio_zoo_over_multivae": round(cpu_ratio, 3),
            "loss_per_datapoint": {name: [round(s, 3) for s in v] for name, v in losses.items()},
            "ratio_zoo_over_multivae": round(ratio, 3), "steps_per_epoch": run["steps"],
            "warmup_steps": run["warmup_steps"], **ev}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=MODELS, help="which to compare (default both)")
    p.add_argument("--epochs", type=int, default=2,
                   help="epochs E trained and timed for each implementation (default 2)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="steps an epoch (default: all of it, 500 batches of 100); fewer for a short run")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="MVAE's KL warm-up, for both (default: the preset's 1000 steps, at most half the run)")
    p.add_argument("--particles", type=int, default=10, help="MMVAE's draws per expert K in training, for both "
                                                              "(default 10, MultiVae's default; run/svi.py's is 1)")
    p.add_argument("--replicates", type=int, default=0,
                   help="extra zoo trainings from the same weights and batches with other random draws, whose "
                        "bound (zoo estimator) shows the training noise a zoo - MultiVae difference compares with "
                        "(default 0)")
    p.add_argument("--eval-particles", type=int, default=1000, help="importance samples K of the joint bound "
                                                                    "(default 1000)")
    p.add_argument("--num-points", type=int, default=1000, help="MNIST test images of the bound (default 1000)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and the estimators' draws (default 0)")
    p.add_argument("--multivae-validation", action="store_true",
                   help="train MultiVae with torch.distributions' argument checks on (torch's default, which "
                        "MultiVae's trainer keeps); default off, as the zoo after its first step")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.replicates < 0:
        p.error("--replicates must not be negative")
    mv = import_multivae()
    torch.set_flush_denormal(True)  # as run/svi.py; before the first parallel op, so every thread has it
    torch.set_num_threads(args.threads)
    print(f"MultiVae {mv['version']} against the zoo; torch {torch.__version__}, pyro {pyro.__version__}, "
          f"torch threads {torch.get_num_threads()}, MultiVae validation {'on' if args.multivae_validation else 'off'}",
          flush=True)
    result = {"multivae": mv["version"], "torch": torch.__version__, "pyro": pyro.__version__,
              "threads": torch.get_num_threads(), "epochs": args.epochs, "particles": args.particles,
              "replicates": args.replicates,
              "multivae_validation": args.multivae_validation}
    for kind in args.model:
        run = train(kind, args, mv)
        result[kind] = report(kind, run, evaluate(kind, run, args, mv))
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
