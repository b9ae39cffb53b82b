"""Evaluate VLVAE runs on the validation set: the paper's Tables 1 and 2, ours beside the paper's.

    python run/evaluate.py --base runs/vlvae-image-cpu \\
        --text-true runs/vlvae-text_true-cpu --text-agg runs/vlvae-text_agg-cpu \\
        --prior runs/vlvae-prior_agg-cpu --out runs/eval-cpu

Give several runs per kind (e.g. seeds) to get mean and standard deviation. Writes
``results.json`` and ``tables.md`` in ``--out`` and prints the tables. The correctness
classifier (paper 5.4) is trained first if there is none for the data (``--classifier``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro  # noqa: E402

from datasets.registry import make_dataset  # noqa: E402
from evaluation.report import aggregate, ceiling, markdown, prior_row, text_guide_row, validation_batches  # noqa: E402
from metrics.correctness import get_or_train_classifier  # noqa: E402
from training.rundir import RunError  # noqa: E402
from training.trainer import load_run, pick_device  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the trained VLVAE run (--guide image): the N(0, I) column of "
                                                 "Table 2 and the ceiling")
    p.add_argument("--text-true", nargs="*", default=[], help="text_true runs (Table 1, q_True); several = seeds")
    p.add_argument("--text-agg", nargs="*", default=[], help="text_agg runs (Table 1, q_Agg); several = seeds")
    p.add_argument("--prior", nargs="*", default=[], help="prior_agg runs (Table 2, learned q(z)); several = seeds")
    p.add_argument("--num-points", type=int, default=500, help="validation pairs evaluated (default 500)")
    p.add_argument("--particles", type=int, default=100, help="importance samples K per bound (default 100)")
    p.add_argument("--chunk", type=int, default=50, help="particles per vectorised pass; bounds memory (default 50)")
    p.add_argument("--batch-size", type=int, default=50, help="validation pairs per pass (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the samples and bounds (default 0)")
    p.add_argument("--classifier", help="correctness classifier folder (default runs/classifier-<dataset>-<size>; "
                                        "trained there if missing)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--out", required=True, help="folder for results.json and tables.md")
    return p


def evaluate(args) -> dict:
    device = pick_device(args.device)
    base = load_run(args.base, device)
    data = base.config.data
    runs = {"text_true": args.text_true, "text_agg": args.text_agg, "prior_agg": args.prior}
    loaded = {kind: [load_run(path, device) for path in paths] for kind, paths in runs.items()}
    for kind, components in loaded.items():
        for c, path in zip(components, runs[kind]):
            if c.config.guide != kind:
                raise RunError(f"{path} is a {c.config.guide} run, given as --{kind.replace('_', '-')}")
            if c.config.data != data:
                raise RunError(f"{path} was trained on other data than the base run {args.base}")
    classifier = get_or_train_classifier(data, args.classifier, device)
    batches = list(validation_batches(make_dataset(data, "val"), args.num_points, args.batch_size, device))
    bound_args = (args.particles, args.chunk)
    pyro.set_rng_seed(args.seed)
    results = {
        "dataset": data.name, "num_points": sum(len(x) for x, _ in batches), "num_particles": args.particles,
        "setting": f"{data.image_size}x{data.image_size} {data.name}, preset {base.config.preset}, "
                   f"z = {base.config.net.z_dim}, {base.config.train.steps} steps of batch {base.config.train.batch_size}",
        "classifier_accuracy": 100 * classifier.record["accuracy"]["word"],
        "ceiling": ceiling(base, classifier, batches),
        "runs": {"base": args.base, **runs},
        "table_1": {kind: aggregate([text_guide_row(c, classifier, batches, *bound_args) for c in loaded[kind]])
                    for kind in ("text_true", "text_agg") if loaded[kind]},
        "table_2": {"prior": aggregate([prior_row(base, classifier, batches, *bound_args)])},
    }
    if loaded["prior_agg"]:
        results["table_2"]["prior_agg"] = aggregate([prior_row(c, classifier, batches, *bound_args)
                                                     for c in loaded["prior_agg"]])
    return results


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        results = evaluate(args)
    except (RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "tables.md").write_text(table)
    print(table)
    print(f"wrote {out / 'results.json'} and {out / 'tables.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
