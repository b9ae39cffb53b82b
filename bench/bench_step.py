"""Step time of the Pyro training step against the same networks and loss written in plain
PyTorch, measured in one run with the two interleaved so machine noise hits both alike:
the VLVAE's Eq. 1 on Two Objects, or JMVAE-kl's Eq. 4 on MNIST-shaped data. With ``--guide
text_agg``, q_Agg's step (Eq. 5) with the frozen image encoder run at each step against q(z|x)
looked up from the table the trainer caches (``Components.cache_image_posteriors``).

    python bench/bench_step.py --preset cpu                  # VLVAE, 64x64, batch 128
    python bench/bench_step.py --preset paper                # VLVAE, 112x112, batch 20 (use a GPU)
    python bench/bench_step.py --model jmvae --preset cpu    # JMVAE-kl, paper MLPs, batch 100
    python bench/bench_step.py --precision fp32 bf16         # also the Pyro step with bf16 networks
    python bench/bench_step.py --guide text_agg              # q_Agg's step, encoder run or q(z|x) cached

Prints the median step time of each and their ratio (target: Pyro <= 1.10x plain). Both run with
validation off, as the trainer runs every step after its first. With several ``--precision``s the
Pyro step runs once per precision in each round (``models.blocks.set_precision``); the plain
reference runs in fp32.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Normal, kl_divergence  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from mmvae_zoo.models.blocks import PRECISIONS, set_precision  # noqa: E402
from mmvae_zoo.models.jmvae import one_hot_words  # noqa: E402
from mmvae_zoo.models.vlvae import ALPHA_EPS, PIXEL_EPS  # noqa: E402
from mmvae_zoo.training.config import preset, resolve  # noqa: E402
from mmvae_zoo.training.schemes import build  # noqa: E402
from output import write_json  # noqa: E402


def plain_loss(model, guide, x, y, annealing, x_weight, y_weight):
    """-Eq. 1 per datapoint, written directly in PyTorch (the reference)."""
    loc, scale = guide.head(guide.encoder(x))
    z = loc + scale * torch.randn_like(loc)
    kl = (Normal(loc, scale).log_prob(z) - Normal(torch.zeros_like(z), 1.0).log_prob(z)).sum(-1)
    h = model.decoder(z)
    alpha = torch.sigmoid(model.image_decoder(h)).clamp(ALPHA_EPS, 1 - ALPHA_EPS)
    c = model.config.concentration
    a, b, target = c * alpha, c * (1 - alpha), x.clamp(PIXEL_EPS, 1 - PIXEL_EPS)  # Beta(a, b), written out
    log_px = ((a - 1) * target.log() + (b - 1) * torch.log1p(-target) - torch.lgamma(a) - torch.lgamma(b)
              + math.lgamma(c)).sum((-3, -2, -1))
    logits = model.text_decoder(h, y)
    log_py = -(F.cross_entropy(logits.transpose(1, 2), y, reduction="none") * (y != 0)).sum(-1)
    return -(x_weight * log_px + y_weight * log_py - annealing * kl).mean()


def _gaussian(head, h):
    loc, raw_scale = head.linear(h).chunk(2, dim=-1)
    return Normal(loc, F.softplus(raw_scale) + 1e-4)


def plain_jmvae_loss(c, x, y, annealing, alpha):
    """-Eq. 4 of the JMVAE paper (JMVAE-kl) per datapoint, written directly in PyTorch."""
    words = one_hot_words(c.model.config, y)
    q = _gaussian(c.guide.joint.head, torch.cat([c.guide.joint.image(x), c.guide.joint.text(words)], dim=-1))
    z = q.rsample()
    kl = (q.log_prob(z) - Normal(torch.zeros_like(z), 1.0).log_prob(z)).sum(-1)
    log_px = -F.binary_cross_entropy_with_logits(c.model.image_decoder(z), x, reduction="none").sum((-3, -2, -1))
    logits = c.model.text_decoder(z)
    log_py = -(F.cross_entropy(logits.transpose(1, 2), (y - 1).clamp(min=0), reduction="none") * (y != 0)).sum(-1)
    q_x = _gaussian(c.image_guide.head, c.image_guide.branch(x))
    q_w = _gaussian(c.text_guide.head, c.text_guide.branch(words))
    kls = kl_divergence(q, q_x).sum(-1) + kl_divergence(q, q_w).sum(-1)
    return -(log_px + log_py - annealing * kl).mean() + alpha * kls.mean()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vlvae", choices=("vlvae", "jmvae"),
                   help="vlvae (Eq. 1, Two Objects) or jmvae (JMVAE-kl, MNIST shapes); default vlvae")
    p.add_argument("--preset", default="cpu", help="network and batch preset: cpu, paper or tiny (default cpu)")
    p.add_argument("--steps", type=int, default=30, help="timed steps of each kind (default 30)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=list(PRECISIONS),
                   help="the Pyro step's precision(s), timed in turn in each round (default fp32)")
    p.add_argument("--guide", default="image", choices=("image", "text_agg"),
                   help="image (the model's step, against plain PyTorch) or text_agg (q_Agg's step with the image "
                        "encoder run at each step against q(z|x) cached for the preset's training set size)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.guide == "text_agg" and (args.model != "vlvae" or args.precision != ["fp32"]):
        p.error("--guide text_agg times the VLVAE's q_Agg in fp32: leave --model and --precision out")
    if args.model == "jmvae":  # MNIST's shapes without reading MNIST: 10 one-word labels
        config = preset(args.preset, "mnist", "jmvae")
        config.net.vocab, config.net.text_length = [str(d) for d in range(10)], 1
    else:
        config = resolve(preset(args.preset))
        config.guide = args.guide
    device = torch.device(args.device)
    components = build(config).to(device)
    components.freeze()
    model, guide = components.model, components.guide
    t = config.train
    params = [p for m in components.trained().values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=t.lr)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((t.batch_size,) + config.net.image_shape, generator=g)
    x = (x.round() if args.model == "jmvae" else x).to(device)
    y = torch.randint(1, len(config.net.vocab) + 1, (t.batch_size, config.net.text_length), generator=g).to(device)

    def pyro_step(precision):
        def step():
            for m in components.modules():
                set_precision(m, precision)
            return components.loss(t.warmup_steps // 2, x, y)[0]
        return step

    def plain_step():
        for m in components.modules():
            set_precision(m, "fp32")
        if args.model == "jmvae":
            return plain_jmvae_loss(components, x, y, 0.5, t.alpha)
        return plain_loss(model, guide, x, y, 0.5, t.x_weight, t.y_weight)

    if args.guide == "text_agg":  # the frozen q(z|x) of a training set of the preset's size, one random batch of it
        images = torch.randint(0, 256, (config.data.num_train,) + config.net.image_shape, generator=g,
                               dtype=torch.uint8).to(device)
        index = torch.randperm(config.data.num_train, generator=g)[:t.batch_size].to(device)
        x = images[index].float().div_(255)
        start = time.perf_counter()
        components.cache_image_posteriors(images, chunk=t.batch_size)
        cache_seconds = time.perf_counter() - start
        steps = {"encoded": lambda: components.loss(0, x, y)[0],
                 "cached": lambda: components.loss(0, x, y, index=index)[0]}
    else:
        steps = {("pyro" if p == "fp32" else f"pyro_{p}"): pyro_step(p) for p in args.precision}
        steps["plain"] = plain_step
    times = {name: [] for name in steps}
    for i in range(args.steps + 3):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with pyro.validation_enabled(False):  # as the trainer runs every step after its first
                loss = step()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:  # warm-up steps are not timed
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"{args.model} {config.guide}, preset {args.preset}, batch {t.batch_size}, image {config.net.image_shape}, "
          f"device {device}, torch threads {torch.get_num_threads()}")
    result = {"model": args.model, "guide": config.guide, "preset": args.preset, "device": str(device),
              "batch_size": t.batch_size, "threads": torch.get_num_threads()}
    for name, seconds in median.items():
        print(f"{name + ' step':16s} {seconds * 1000:8.1f} ms (median of {args.steps})")
        result[f"{name}_ms"] = round(seconds * 1000, 2)
    if "pyro" in median:
        print(f"ratio pyro/plain {median['pyro'] / median['plain']:.3f} (target <= 1.10)")
        result.update(ratio=round(median["pyro"] / median["plain"], 3), pyro_steps_per_s=round(1 / median["pyro"], 2))
    if "cached" in median:
        print(f"ratio cached/encoded {median['cached'] / median['encoded']:.3f}; the cache of "
              f"{config.data.num_train} images took {cache_seconds:.1f} s")
        result.update(ratio=round(median["cached"] / median["encoded"], 3), cache_s=round(cache_seconds, 2),
                      num_train=config.data.num_train)
    for name in median.keys() - {"pyro", "plain"}:
        if "pyro" in median:
            print(f"ratio {name}/pyro {median[name] / median['pyro']:.3f}")
            result[f"{name}_over_fp32"] = round(median[name] / median["pyro"], 3)
        result[f"{name}_steps_per_s"] = round(1 / median[name], 2)
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        print(f"peak GPU memory {result['peak_gpu_mib']} MiB")
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
