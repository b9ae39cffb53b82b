"""Epoch time of JMVAE-kl training on MNIST on the CPU: the zoo's training step against the same loss
in plain PyTorch, full epochs over the 50k training images (paper MLPs, batch 100: 500 steps an epoch).

(a) zoo: the scheme's loss (Eq. 4 through Pyro traces, KL warm-up) and Adam, as run/svi.py takes
    a step (Pyro's validation on the first step only; no logging or checkpoints);
(b) plain: ``bench_step.plain_jmvae_loss``, the same loss written directly in PyTorch.

Each has its own copy of the same initial networks and its own Adam, and both read the same
batches (dynamically binarised, as in training). Their epochs are interleaved (zoo and plain
epoch 1, then epoch 2 in the other order, ...) so machine load hits both alike. Prints each epoch's
seconds and the subnormal floats in Adam's state after it, the ratio zoo / plain (median over
epochs 2..E; target <= 1.10) and each one's later-epoch / first-epoch ratio.

Subnormals: Adam's state can fill with subnormal floats after ~1000 steps, which the CPU handles
slowly, so that without flushing epochs 2 on are slower than epoch 1 (measured: 37 s against 24 s an epoch).
``torch.set_flush_denormal(True)`` acts on the calling thread; called before the first parallel
torch op, as here, the intra-op worker threads inherit it (then Adam's state holds none).
``--no-flush-denormal`` leaves them on, to show their count and cost.

On cores busy with other jobs, 2 threads under libgomp's default (spinning) wait policy can be
tens of times slower than 1; ``OMP_WAIT_POLICY=PASSIVE`` in the environment avoids that.

    python bench/bench_epoch.py                         # 3 epochs each, 2 threads, flushing
    python bench/bench_epoch.py --no-flush-denormal     # the same with subnormals
    python bench/bench_epoch.py --epochs 2 --threads 1
    python bench/bench_epoch.py --compile               # both with their blocks compiled (run/svi.py --compile)
    python bench/bench_epoch.py --precision bf16        # both with bf16 blocks (run/svi.py --precision bf16)

``--compile`` and ``--precision`` act on the networks, which both implementations share in kind (each
has its copy), so the ratio stays like for like; the epochs compare with a run without them.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro  # noqa: E402
import torch  # noqa: E402

from bench_step import plain_jmvae_loss  # noqa: E402
from mmvae_zoo.datasets.loader import BatchLoader  # noqa: E402
from mmvae_zoo.datasets.registry import make_dataset  # noqa: E402
from mmvae_zoo.models.blocks import PRECISIONS, compile_blocks, set_precision  # noqa: E402
from mmvae_zoo.training.config import preset, resolve  # noqa: E402
from mmvae_zoo.training.schemes import build, warmup  # noqa: E402
from output import write_json  # noqa: E402


def subnormals(optimizer: torch.optim.Optimizer) -> int:
    """Subnormal float32 entries in the optimizer's state, read from the bits (flushing would hide them)."""
    count = 0
    for state in optimizer.state.values():
        for value in state.values():
            if value.dtype == torch.float32 and value.dim():
                bits = value.view(torch.int32) & 0x7FFFFFFF
                count += int(((bits > 0) & (bits < 0x00800000)).sum())
    return count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs E timed for each implementation (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--no-flush-denormal", action="store_true",
                   help="leave subnormal floats on (default: torch.set_flush_denormal(True) before the first op)")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="what the networks' blocks compute in, for both (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile both copies' blocks (compiled in epoch 1)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2: the ratios compare epochs 2..E with epoch 1")
    flush = not args.no_flush_denormal
    if flush:  # before any parallel op, so the intra-op worker threads inherit it
        torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    config = resolve(preset("cpu", "mnist", "jmvae"))
    t = config.train
    torch.manual_seed(t.seed)
    zoo = build(config)
    implementations = {"zoo": zoo, "plain": copy.deepcopy(zoo)}  # the same initial networks
    for c in implementations.values():
        for m in c.modules():
            set_precision(m, args.precision)
            if args.compile:
                compile_blocks(m)
    optimizers = {name: torch.optim.Adam([q for m in c.trained().values() for q in m.parameters()], lr=t.lr)
                  for name, c in implementations.items()}
    loader = BatchLoader(make_dataset(config.data, "train"), t.batch_size, seed=t.seed)

    def loss(name, step, x, y):
        if name == "zoo":
            with pyro.validation_enabled(step == 0):
                return zoo.loss(step, x, y)[0]
        return plain_jmvae_loss(implementations["plain"], x, y, warmup(step, t.warmup_steps), t.alpha)

    def epoch(name, e):
        optimizer = optimizers[name]
        start = time.perf_counter()
        for step in range(e * loader.steps_per_epoch, (e + 1) * loader.steps_per_epoch):
            value = loss(name, step, *loader.batch(step))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        return time.perf_counter() - start

    print(f"JMVAE-kl on MNIST, paper MLPs, batch {t.batch_size}, {loader.steps_per_epoch} steps an epoch; "
          f"torch threads {torch.get_num_threads()}, flush denormal {'on' if flush else 'off'}, "
          f"precision {args.precision}, compiled {'yes' if args.compile else 'no'}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    seconds = {name: [] for name in implementations}
    for e in range(args.epochs):
        for name in (("zoo", "plain") if e % 2 == 0 else ("plain", "zoo")):
            seconds[name].append(epoch(name, e))
            print(f"epoch {e + 1} {name:5s} {seconds[name][-1]:7.2f} s; subnormals in Adam's state "
                  f"{subnormals(optimizers[name])}", flush=True)
    later = {name: statistics.median(s[1:]) for name, s in seconds.items()}
    ratio = later["zoo"] / later["plain"]
    print(f"ratio zoo/plain {ratio:.3f} (median of epochs 2..{args.epochs}; target <= 1.10)")
    for name, s in seconds.items():
        print(f"{name}: later / first epoch {later[name] / s[0]:.3f}")
    result = {"threads": torch.get_num_threads(), "flush_denormal": flush, "epochs": args.epochs,
              "precision": args.precision, "compile": args.compile,
              "zoo_epoch_s": [round(s, 1) for s in seconds["zoo"]],
              "plain_epoch_s": [round(s, 1) for s in seconds["plain"]], "ratio": round(ratio, 3),
              "zoo_later_over_first": round(later["zoo"] / seconds["zoo"][0], 3),
              "plain_later_over_first": round(later["plain"] / seconds["plain"][0], 3),
              "zoo_subnormals": subnormals(optimizers["zoo"]), "plain_subnormals": subnormals(optimizers["plain"])}
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
