"""Time of the JMVAE's joint bound on MNIST test images on the CPU, the zoo's evaluation path against
the same bound written in plain PyTorch, measured in one run with the two interleaved batch by batch
so machine noise hits both alike.

    log p(x,w) >= logmeanexp_k [log p(x|z_k) + log p(w|z_k) + log p(z_k) - log q(z_k|x,w)],  z_k ~ q(z|x,w)

(a) zoo: ``evaluation.bounds.evaluate_bounds(..., names=["log p(x,w)"])`` as ``run/evaluate.py
    --model jmvae`` calls it (Pyro traces, no autograd; ESS and PSIS k-hat included);
(b) plain: one encoder call per batch, then per chunk of particles the decoders on K x B rows,
    inference mode. Both draw the same z (same seeds): the bounds printed must agree.

JMVAE-kl with the paper's MLPs (random weights: timing does not depend on training), batch and
chunk sizes of ``run/evaluate.py`` (50 and 50). Prints seconds per 1000 test images for each and
their ratio (target: zoo <= plain; plain took about 19 s on 2 idle cores).

    python bench/bench_jmvae_eval.py                       # K = 1000, 1000 test images, 2 threads
    python bench/bench_jmvae_eval.py --num-points 200      # quicker
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Normal  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from bench_step import _gaussian  # noqa: E402
from mmvae_zoo.datasets.registry import make_dataset  # noqa: E402
from mmvae_zoo.evaluation.bounds import evaluate_bounds  # noqa: E402
from mmvae_zoo.evaluation.report import validation_batches  # noqa: E402
from mmvae_zoo.models.jmvae import one_hot_words  # noqa: E402
from mmvae_zoo.training.config import preset, resolve  # noqa: E402
from mmvae_zoo.training.schemes import build  # noqa: E402
from output import write_json  # noqa: E402


@torch.inference_mode()
def plain_log_pxw(c, x, w, num_particles: int, chunk: int) -> torch.Tensor:
    """The joint bound [B] in plain PyTorch: q(z|x,w) once, then K x B decoder rows per chunk."""
    q = _gaussian(c.guide.head, torch.cat([c.guide.image(x), c.guide.text(one_hot_words(c.model.config, w))], -1))
    prior = Normal(torch.zeros_like(q.loc), 1.0)
    classes, present = (w - 1).clamp(min=0), w != 0
    rows = []
    for start in range(0, num_particles, chunk):
        z = q.sample((min(chunk, num_particles - start),))
        logits = c.model.image_decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum((-3, -2, -1))
        log_words = torch.log_softmax(c.model.text_decoder(z), -1)
        log_pw = (log_words.gather(-1, classes.expand(log_words.shape[:-1])[..., None])[..., 0] * present).sum(-1)
        rows.append(log_px + log_pw + (prior.log_prob(z) - q.log_prob(z)).sum(-1))
    return torch.logsumexp(torch.cat(rows), 0) - math.log(num_particles)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--particles", type=int, default=1000, help="importance samples K (default 1000)")
    p.add_argument("--num-points", type=int, default=1000, help="MNIST test images (default 1000)")
    p.add_argument("--batch-size", type=int, default=50, help="test images per pass (default 50, as run/evaluate.py)")
    p.add_argument("--chunk", type=int, default=50, help="particles per vectorised pass (default 50, as "
                                                         "run/evaluate.py)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)  # as run/evaluate.py; before the first parallel op, so every thread has it
    torch.set_num_threads(args.threads)
    config = resolve(preset("cpu", "mnist", "jmvae"))
    torch.manual_seed(0)
    components = build(config)
    batches = list(validation_batches(make_dataset(config.data, "val"), args.num_points, args.batch_size, "cpu"))

    def zoo(x, w):
        bounds = evaluate_bounds(components, [(x, w)], args.particles, args.chunk, names=["log p(x,w)"])
        return bounds["log p(x,w)"].value

    def plain(x, w):
        return plain_log_pxw(components, x, w, args.particles, args.chunk)

    runs = {"zoo": zoo, "plain": plain}
    for run in runs.values():  # warm-up, untimed
        run(*batches[0])
    seconds, values = {name: 0.0 for name in runs}, {name: [] for name in runs}
    for i, (x, w) in enumerate(batches):
        for name in (("zoo", "plain") if i % 2 == 0 else ("plain", "zoo")):
            pyro.set_rng_seed(i)
            start = time.perf_counter()
            with pyro.validation_enabled(i == 0):  # as evaluate_bounds over all batches: the first one only
                values[name].append(runs[name](x, w))
            seconds[name] += time.perf_counter() - start
    points = sum(len(x) for x, _ in batches)
    zoo_value, plain_value = torch.cat(values["zoo"]), torch.cat(values["plain"])
    per_1000 = {name: s * 1000 / points for name, s in seconds.items()}
    print(f"JMVAE-kl, paper MLPs, K = {args.particles}, {points} test images in batches of {args.batch_size}, "
          f"chunks of {args.chunk} particles; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"zoo (evaluate_bounds) {per_1000['zoo']:7.2f} s / 1000 images; mean bound {zoo_value.mean():.3f}")
    print(f"plain PyTorch         {per_1000['plain']:7.2f} s / 1000 images; mean bound {plain_value.mean():.3f}")
    difference = (zoo_value - plain_value).abs().max().item()
    print(f"ratio zoo/plain {per_1000['zoo'] / per_1000['plain']:.3f} (target <= 1); largest difference of the "
          f"bounds {difference:.2e} nats")
    result = {"threads": torch.get_num_threads(), "particles": args.particles, "num_points": points,
              "batch_size": args.batch_size, "chunk": args.chunk, "zoo_s_per_1000": round(per_1000["zoo"], 2),
              "plain_s_per_1000": round(per_1000["plain"], 2),
              "ratio": round(per_1000["zoo"] / per_1000["plain"], 3), "max_difference_nats": float(f"{difference:.2e}")}
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
