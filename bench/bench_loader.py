"""Does the data pipeline keep up? Batches per second of the loader alone against training
steps per second of the same preset, measured in one run.

    python bench/bench_loader.py --preset cpu
    python bench/bench_loader.py --preset paper --device cuda

The loader (``datasets.loader.BatchLoader``) copies the cached uint8 arrays to the device
once; a batch is then an index and a float conversion on the device, so no worker
processes, pinned memory or host copies remain per step. The ratio loader/training says
how many times faster than training the data arrives (>> 1: never the bottleneck).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from mmvae_zoo.datasets.loader import BatchLoader  # noqa: E402
from mmvae_zoo.datasets.registry import make_dataset  # noqa: E402
from mmvae_zoo.training.config import preset, resolve  # noqa: E402
from mmvae_zoo.training.schemes import build  # noqa: E402
from output import write_json  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(preset_name: str, device: torch.device, batches: int, steps: int) -> dict:
    config = resolve(preset(preset_name))
    data = make_dataset(config.data, "train", progress=True)
    loader = BatchLoader(data, config.train.batch_size, device, seed=0)
    loader.batch(0)
    _sync(device)
    start = time.perf_counter()
    for step in range(batches):
        loader.batch(step)
    _sync(device)
    loader_rate = batches / (time.perf_counter() - start)

    components = build(config).to(device)
    optimizer = torch.optim.Adam([p for m in components.trained().values() for p in m.parameters()])
    times = []
    for step in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        loss, _ = components.loss(step, *loader.batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= 2:  # the first steps warm up kernels and allocators
            times.append(time.perf_counter() - start)
    step_rate = 1 / statistics.median(times)
    return {"preset": preset_name, "device": str(device), "batch_size": config.train.batch_size,
            "image_shape": list(config.net.image_shape), "loader_batches_per_s": round(loader_rate, 1),
            "train_steps_per_s": round(step_rate, 2), "loader_over_training": round(loader_rate / step_rate, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", help="cpu, paper or tiny (default cpu)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--batches", type=int, default=500, help="loader batches timed (default 500)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed, median taken (default 20)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    result = measure(args.preset, torch.device(args.device), args.batches, args.steps)
    print(f"preset {result['preset']} on {result['device']}, batch {result['batch_size']}: "
          f"loader {result['loader_batches_per_s']} batches/s, training {result['train_steps_per_s']} steps/s, "
          f"loader {result['loader_over_training']}x faster than training")
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
