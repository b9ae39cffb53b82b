"""The VLVAE's pixel likelihood, Beta(c alpha, c (1 - alpha)), forward and backward: the zoo's written-out
``models.vlvae.MeanBeta`` against torch's ``Beta`` (through Pyro), interleaved in one run.

    python bench/bench_likelihood.py               # the cpu preset's batch: [128, 3, 64, 64]
    python bench/bench_likelihood.py --batch 20 --size 112   # the paper preset's

Prints the median time of each (log-density of a batch, summed, and its gradient) and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

from mmvae_zoo.models.vlvae import ALPHA_EPS, PIXEL_EPS, MeanBeta  # noqa: E402
from output import write_json  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="images per batch (default 128)")
    p.add_argument("--size", type=int, default=64, help="image height and width (default 64)")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of each (default 20)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch, 3, args.size, args.size, generator=g).requires_grad_()
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g).clamp(PIXEL_EPS, 1 - PIXEL_EPS)
    c = 100.0
    likelihoods = {
        "torch Beta": lambda alpha: dist.Beta(c * alpha, c * (1 - alpha)),
        "MeanBeta": lambda alpha: MeanBeta(alpha, c),
    }
    times = {name: [] for name in likelihoods}
    for i in range(args.repeats + 2):
        for name, likelihood in likelihoods.items():
            start = time.perf_counter()
            alpha = torch.sigmoid(logits).clamp(ALPHA_EPS, 1 - ALPHA_EPS)
            torch.autograd.grad(likelihood(alpha).to_event(3).log_prob(x).sum(), logits)
            if i >= 2:  # warm-up repeats are not timed
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"batch {args.batch} x 3 x {args.size} x {args.size}, torch threads {torch.get_num_threads()}")
    for name, seconds in medians.items():
        print(f"{name:10s} {seconds * 1000:7.1f} ms forward + backward (median of {args.repeats})")
    ratio = medians["MeanBeta"] / medians["torch Beta"]
    print(f"ratio MeanBeta / torch Beta {ratio:.3f}")
    result = {"batch": args.batch, "size": args.size, **{f"{k.replace(' ', '_')}_ms": round(v * 1000, 2)
                                                        for k, v in medians.items()}, "ratio": round(ratio, 3)}
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
