"""Every benchmark of the project in one command, written as JSON and Markdown with the machine.

    python bench/report.py                       # bench/results/report.{json,md}
    python bench/report.py --quick               # smaller sizes: a few minutes
    python bench/report.py --end-to-end          # also time the main command (cpu preset, 100-140 min)

Runs, each in its own process (so one's threads and memory don't colour the next):
renderer (images/s), loader vs training (batches/s against steps/s), Pyro vs plain PyTorch
training step (VLVAE on Two Objects, JMVAE-kl on MNIST shapes), JMVAE-kl training epochs on
MNIST against plain PyTorch (2 epochs each: first and later epoch), IWAE vectorised vs a loop of
single-particle passes with peak memory at K = 5000, and the JMVAE's joint bound (K = 1000) through
the evaluation code against plain PyTorch. On CUDA the step and loader figures are taken at the
``paper`` preset too, with peak GPU memory.
Timings depend on what else the machine does: the load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    import pyro

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
            "load_average_before": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M")}


def benchmarks(quick: bool, cuda: bool) -> dict[str, list[str]]:
    """name -> command line (without the interpreter and --json)."""
    presets = ["cpu"] + (["paper"] if cuda else [])
    jobs = {"render": ["bench/bench_render.py", "--num", "300" if quick else "2000", "--repeats", "1"]}
    for p in presets:
        jobs[f"loader_{p}"] = ["bench/bench_loader.py", "--preset", p, "--steps", "5" if quick else "20"]
        jobs[f"step_vlvae_{p}"] = ["bench/bench_step.py", "--preset", p, "--steps", "5" if quick else "30"]
    jobs["likelihood"] = ["bench/bench_likelihood.py", "--repeats", "3" if quick else "20"]
    jobs["step_jmvae_cpu"] = ["bench/bench_step.py", "--model", "jmvae", "--steps", "5" if quick else "30"]
    jobs["epoch_jmvae"] = ["bench/bench_epoch.py", "--epochs", "2"]
    jobs["iwae"] = ["bench/bench_iwae.py"] + (["--k", "200", "--loop-repeats", "1", "--mem-k", "1000"] if quick else [])
    jobs["eval_jmvae"] = ["bench/bench_jmvae_eval.py"] + (["--num-points", "200"] if quick else [])
    return jobs


def end_to_end(workdir: Path) -> dict:
    """Wall time of the README's main command on a fresh data root (base VLVAE included)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "run" / "svi.py"), "--model", "vlvae", "--guide", "text_agg",
                          "--preset", "cpu", "--no-progress"], cwd=workdir, capture_output=True, text=True,
                         env={**os.environ, "MMVAE_DATA_ROOT": str(workdir / "data")})
    return {"command": "python run/svi.py --model vlvae --guide text_agg --preset cpu", "returncode": out.returncode,
            "minutes": round((time.perf_counter() - start) / 60, 1)}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Benchmarks ({m['date']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), "
             f"GPU {m['gpu'] or 'none'}; Python {m['python']}, torch {m['torch']}, pyro {m['pyro']}; "
             f"load average {m['load_average_before']} before.", ""]
    for name, result in report["results"].items():
        lines.append(f"## {name}")
        lines.append("")
        rows = result if isinstance(result, list) else [result]
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results", help="folder for report.json and report.md")
    p.add_argument("--quick", action="store_true", help="smaller sizes (minutes instead of tens of minutes)")
    p.add_argument("--end-to-end", action="store_true", help="also time the main command with the cpu preset")
    p.add_argument("--only", nargs="*", help="run only these benchmarks (names as in the report)")
    args = p.parse_args(argv)
    report = {"machine": machine(), "results": {}, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in benchmarks(args.quick, torch.cuda.is_available()).items():
            if args.only and name not in args.only:
                continue
            target = Path(tmp) / f"{name}.json"
            print(f"== {name}: python {' '.join(command)}", flush=True)
            out = subprocess.run([sys.executable, *command, "--json", str(target)], cwd=ROOT)
            report["commands"][name] = "python " + " ".join(command)
            report["results"][name] = json.loads(target.read_text()) if out.returncode == 0 and target.exists() \
                else {"error": f"exit status {out.returncode}"}
        if args.end_to_end:
            print("== end_to_end: the main command, cpu preset (100 to 140 minutes on 2 CPU cores)", flush=True)
            report["results"]["end_to_end"] = end_to_end(Path(tmp))
    report["machine"]["load_average_after"] = round(os.getloadavg()[0], 2)
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
