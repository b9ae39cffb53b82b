"""Benchmark of metrics.iwae: vectorised particles vs a loop of single-particle passes.

A VAE-like Pyro model with random weights (784-d Bernoulli x, z of 64 dims, encoder
and decoder MLPs with two hidden layers of 512 units, the JMVAE MNIST sizes), B
datapoints drawn from the model itself. Its p(x|z) is the zoo's Bernoulli
(``models.jmvae.Bernoulli``, the JMVAE's), whose log-density is torch's -BCE with logits
in one temporary: torch's ``Bernoulli.log_prob`` negates the whole [K, B, 784] tensor
once more, which on 2 CPU cores made the same estimator 1.2x the plain loop below (a
cost of the likelihood, not of the estimator). It prints:

1. seconds per 1000 datapoints for the IWAE bound at K particles, computed
   (a) vectorised: ``iwae_log_likelihood(..., num_particles=K, chunk_size=C)`` and
   (b) as a Python loop of K single-particle passes
       (``log_importance_weights(..., num_particles=1)`` K times, then logsumexp;
       Pyro validation off, so only the vectorisation differs),
   (c) in plain PyTorch with the same chunking (no Pyro, one encoder call): the
       compute floor,
   and the speed ratio loop / vectorised. Note that (a) and (b) do the same decoder
   FLOPs (K x B rows); on a CPU, where the decoder dominates, the ratio is bounded
   by what batching buys over B-row matmuls, not by Python overhead;
2. peak memory of the vectorised estimator at a large K with chunking, measured in a
   fresh subprocess (CPU: peak RSS from ``resource.getrusage`` minus the RSS after
   setup; CUDA: ``torch.cuda.max_memory_allocated``).

Run from the repository root: ``python bench/bench_iwae.py`` (``--help`` for flags).
A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import time

# Not pip-installed yet: make the repo root importable when run as a script.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmvae_zoo.metrics.diagnostics import psis_backend_name  # noqa: E402
from mmvae_zoo.metrics.iwae import iwae_log_likelihood, log_importance_weights  # noqa: E402
from mmvae_zoo.models.jmvae import Bernoulli  # noqa: E402
from output import write_json  # noqa: E402


class MLPVAE(nn.Module):
    def __init__(self, x_dim: int = 784, z_dim: int = 64, hidden: int = 512):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * z_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, x_dim),
        )

    def model(self, x: torch.Tensor) -> None:
        n = x.shape[-2]
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(n, self.z_dim), 1.0).to_event(1))
            pyro.sample("x", Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        n = x.shape[-2]
        with pyro.plate("data", n, dim=-1):
            loc, log_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.clamp(-3, 1).exp()).to_event(1))

    @torch.no_grad()
    def simulate(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.z_dim, device=next(self.parameters()).device)
        return torch.bernoulli(torch.sigmoid(self.decoder(z)))


def setup(args: argparse.Namespace) -> tuple[MLPVAE, torch.Tensor]:
    torch.manual_seed(args.seed)
    vae = MLPVAE().to(args.device).eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae, vae.simulate(args.batch)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_vectorised(vae, x, args) -> tuple[float, torch.Tensor]:
    """One timed call of the estimator."""
    sync(args.device)
    start = time.perf_counter()
    value = iwae_log_likelihood(vae.model, vae.guide, x, num_particles=args.k, chunk_size=args.chunk_size).value
    sync(args.device)
    return time.perf_counter() - start, value


def time_loop(vae, x, args) -> tuple[float, torch.Tensor]:
    # Pyro validation off for the loop: the vectorised estimator validates only its
    # first pass, so this isolates the gain from vectorising (a conservative baseline).
    best, value = math.inf, None
    for _ in range(args.loop_repeats):
        sync(args.device)
        start = time.perf_counter()
        with pyro.validation_enabled(False):
            rows = [
                log_importance_weights(vae.model, vae.guide, x, num_particles=1)
                for _ in range(args.k)
            ]
        value = torch.logsumexp(torch.cat(rows), dim=0) - math.log(args.k)
        sync(args.device)
        best = min(best, time.perf_counter() - start)
    return best, value


@torch.no_grad()
def time_plain_torch(vae, x, args) -> tuple[float, torch.Tensor]:
    """One timed computation of the same IWAE bound without Pyro: the floor for (a)."""
    chunk = args.chunk_size or args.k
    sync(args.device)
    start = time.perf_counter()
    loc, log_scale = vae.encoder(x).chunk(2, dim=-1)
    q = torch.distributions.Normal(loc, log_scale.clamp(-3, 1).exp())
    prior = torch.distributions.Normal(torch.zeros_like(loc), 1.0)
    rows, done = [], 0
    while done < args.k:
        k = min(chunk, args.k - done)
        z = q.sample((k,))
        logits = vae.decoder(z)
        lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        rows.append(lik + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
        done += k
    value = torch.logsumexp(torch.cat(rows), dim=0) - math.log(args.k)
    sync(args.device)
    return time.perf_counter() - start, value


def rss_mib() -> float:
    """Current resident set size (Linux), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: prints one line 'MEM <baseline> <peak> <seconds>'."""
    vae, x = setup(args)
    # warm up kernels with a tiny pass and import the PSIS backend (arviz pulls in
    # xarray/scipy, ~100 MiB), so the baseline includes them
    iwae_log_likelihood(vae.model, vae.guide, x, num_particles=2)
    psis_backend_name()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    else:
        baseline = rss_mib()
    start = time.perf_counter()
    iwae_log_likelihood(
        vae.model, vae.guide, x, num_particles=args.mem_k, chunk_size=args.mem_chunk_size
    )
    sync(args.device)
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device.startswith("cuda")
        else peak_rss_mib()
    )
    print(f"MEM {baseline:.1f} {peak:.1f} {seconds:.2f}")


def measure_memory(args: argparse.Namespace, k: int, chunk: int | None) -> tuple[float, ...]:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--memory-child",
        "--device", args.device, "--batch", str(args.batch), "--seed", str(args.seed),
        "--threads", str(args.threads),
        "--mem-k", str(k), "--mem-chunk-size", str(chunk if chunk else 0),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(row for row in out.splitlines() if row.startswith("MEM "))
    baseline, peak, seconds = map(float, line.split()[1:])
    return baseline, peak, seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--k", type=int, default=1000, help="particles for the timing (default 1000)")
    add("--batch", type=int, default=100, help="datapoints per call (default 100)")
    add("--chunk-size", type=int, default=100,
        help="particles per vectorised pass in the timing; 0 = all K at once (default 100)")
    add("--repeats", type=int, default=3,
        help="vectorised and plain timings, interleaved: best of N of each (default 3)")
    add("--loop-repeats", type=int, default=2, help="loop timing: best of N (default 2)")
    add("--mem-k", type=int, default=5000, help="particles for the memory run (default 5000)")
    add("--mem-chunk-size", type=int, default=100,
        help="particles per pass in the memory run; 0 = all at once (default 100)")
    add("--skip-loop", action="store_true", help="do not time the single-particle loop")
    add("--skip-memory", action="store_true", help="do not run the memory measurement")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda when available)")
    add("--threads", type=int, default=0,
        help="torch intra-op threads; 0 = torch's default (one per core)")
    add("--seed", type=int, default=0, help="seed for weights, data and draws (default 0)")
    add("--json", help="also write the figures to this JSON file")
    add("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.chunk_size = args.chunk_size or None
    args.mem_chunk_size = args.mem_chunk_size or None
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return

    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, device {args.device}, "
        f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}; "
        f"B={args.batch}, K={args.k}, chunk={args.chunk_size or 'all'}"
    )
    vae, x = setup(args)
    iwae_log_likelihood(vae.model, vae.guide, x, num_particles=4)  # warm-up
    psis_backend_name()  # imports arviz
    per_1000 = 1000.0 / args.batch
    result = {"device": args.device, "threads": torch.get_num_threads(), "batch": args.batch, "k": args.k,
              "chunk": args.chunk_size}

    def report(label: str, seconds: float, value: torch.Tensor, repeats: int) -> None:
        print(f"{label:<40s} {seconds * per_1000:8.2f} s / 1000 datapoints "
              f"(best of {repeats}); mean bound {value.mean().item():.2f} nats")

    best = {time_vectorised: (math.inf, None), time_plain_torch: (math.inf, None)}
    for _ in range(args.repeats):  # interleaved, so that the machine's drift hits both alike
        for timer in best:
            seconds, value = timer(vae, x, args)
            if seconds < best[timer][0]:
                best[timer] = seconds, value
    (t_vec, v_vec), (t_plain, v_plain) = best[time_vectorised], best[time_plain_torch]
    report("vectorised (iwae_log_likelihood)", t_vec, v_vec, args.repeats)
    report("plain torch, same chunks (floor)", t_plain, v_plain, args.repeats)
    print(f"ratio vectorised / plain: {t_vec / t_plain:.3f}")
    result.update(vectorised_s_per_1000=round(t_vec * per_1000, 2), plain_s_per_1000=round(t_plain * per_1000, 2),
                  vectorised_over_plain=round(t_vec / t_plain, 3))
    if not args.skip_loop:
        torch.manual_seed(args.seed + 1)
        t_loop, v_loop = time_loop(vae, x, args)
        report(f"loop of {args.k} single-particle passes", t_loop, v_loop, args.loop_repeats)
        print(f"speed ratio loop / vectorised: {t_loop / t_vec:.1f}x")
        result.update(loop_s_per_1000=round(t_loop * per_1000, 2), loop_over_vectorised=round(t_loop / t_vec, 1))

    if not args.skip_memory:
        unit = "GPU MiB allocated" if args.device.startswith("cuda") else "MiB RSS"
        for k, chunk in ((args.mem_k, args.mem_chunk_size), (args.k, None)):
            base, peak, seconds = measure_memory(args, k, chunk)
            print(f"memory K={k}, chunk={chunk or 'all'}: peak {peak:.0f} {unit} "
                  f"(after setup {base:.0f}, +{peak - base:.0f}); "
                  f"{seconds:.1f} s for B={args.batch}")
            result[f"memory_k{k}_chunk{chunk or 'all'}_mib"] = round(peak - base)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
