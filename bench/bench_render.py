"""Images per second of the Two Objects generator (scene sampling + ray casting + texts), no cache.

    python bench/bench_render.py                    # 64 and 112 px, 1 process and all cores
    python bench/bench_render.py --sizes 112 --num 4000 --workers 1 2

Each figure is the best of --repeats runs of ``two_objects.generate`` on --num images of the
train split, pool start-up included. Other busy processes on the machine lower the figures:
the load average is printed before and after.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import time

from mmvae_zoo.datasets.two_objects import SingleObject, TwoObjects, generate
from output import write_json

DATASETS = {"two_objects": TwoObjects, "single_object": SingleObject}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="two_objects", help="which generator to time")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112], help="image sides in pixels")
    parser.add_argument("--num", type=int, default=2000, help="images generated per run")
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count()}),
                        help="worker process counts to time (default: 1 and all cores)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the fastest is reported")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    rows = []

    print(f"{args.dataset}: {args.num} images per run, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} before")
    print(f"{'size':>6} {'workers':>8} {'images/s':>10} {'ms/image':>9}")
    for size in args.sizes:
        for workers in args.workers:
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                generate(DATASETS[args.dataset], "train", args.num, size, 0, workers, progress=False)
                best = min(best, time.perf_counter() - start)
            print(f"{size:>6} {workers:>8} {args.num / best:>10.0f} {1000 * best / args.num:>9.2f}")
            rows.append({"dataset": args.dataset, "image_size": size, "workers": workers,
                         "images_per_s": round(args.num / best, 1)})
    print(f"load average {os.getloadavg()[0]:.2f} after")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
