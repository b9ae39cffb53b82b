"""Evaluate runs: the VLVAE paper's Tables 1 and 2, or the JMVAE paper's MNIST Tables 1 and 3,
ours beside the paper's.

    python run/evaluate.py --base runs/vlvae-image-cpu \\
        --text-true runs/vlvae-text_true-cpu --text-agg runs/vlvae-text_agg-cpu \\
        --prior runs/vlvae-prior_agg-cpu --runs runs/vlvae-kl-cpu runs/vlvae-mvae-cpu runs/vlvae-mmvae-cpu \\
        --out runs/eval-cpu
    python run/evaluate.py --model jmvae --runs runs/jmvae-zero-cpu runs/jmvae-kl-cpu runs/jmvae-vae-cpu \\
        --out runs/eval-jmvae

VLVAE (validation set): give several runs per kind (e.g. seeds) to get mean and standard
deviation; the correctness classifier (paper 5.4) is trained first if there is none for the data
(``--classifier``). ``--runs`` adds runs of the schemes that train the whole VLVAE with their own
q(z|x) and q(z|y) (``--guide kl``, ``mvae``, ``mmvae``) to Table 1, a row per scheme (by label:
several runs of one label are seeds), each scored with its own networks, its ceiling from its own
q(z|x); they need no base run: given alone, the tables have no Table 2 and no base ceiling.

JMVAE (test set): marginal, conditional (multiple and single bounds) and joint log-likelihoods
of each run (of a ``vae`` run, the paper's VAE baseline, the marginal only), K = 1000 importance
samples by default (the authors' code used 1000 for marginal and 5000 for conditional bounds);
several runs of one row are seeds, as for the VLVAE.
Writes ``results.json`` and ``tables.md`` in ``--out`` and prints the tables.

``--base RUN --ceiling-only`` evaluates the ceiling alone (overall and per word) at every
checkpoint kept in RUN: which attributes a base VLVAE keeps, and how that grows with training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pyro  # noqa: E402
import torch  # noqa: E402

from mmvae_zoo.datasets.cache import default_root  # noqa: E402
from mmvae_zoo.datasets.registry import make_dataset  # noqa: E402
from mmvae_zoo.evaluation import jmvae as jmvae_report  # noqa: E402
from mmvae_zoo.evaluation.correctness import CONFIG_FILE, default_classifier_dir, get_or_train_classifier  # noqa: E402
from mmvae_zoo.evaluation.report import (OBJECTIVES, aggregate, ceiling_curve_markdown, ceiling_row, markdown,  # noqa: E402
                                         objective_row, prior_row, semi_amortised, text_guide_row, validation_batches)
from mmvae_zoo.training.rundir import (REPORTED_ERRORS, RunDir, RunError, atomic_write_text, check_count,  # noqa: E402
                            check_folder, check_seed, error_message, parse_device)
from mmvae_zoo.training.runs import load_run  # noqa: E402


# Per model: test points and importance samples when --num-points and --particles are not given.
DEFAULTS = {"vlvae": {"num_points": 500, "particles": 100}, "jmvae": {"num_points": 1000, "particles": 1000}}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(DEFAULTS), default="vlvae", help="which paper's tables (default vlvae)")
    p.add_argument("--base", help="vlvae: the trained VLVAE run (--guide image), the N(0, I) column of "
                                  "Table 2 and the ceiling (required unless only --runs are given)")
    p.add_argument("--runs", nargs="*", default=[],
                   help="vlvae: VLVAE runs trained with --guide kl, mvae or mmvae, each scheme a Table 1 row scored "
                        "with the run's own q(z|y), q(z|x) and model. jmvae: trained JMVAE runs (zero, kl, mvae, mmvae "
                        "or vae), a row each. Several runs of one row = seeds, which must differ in their seed alone")
    p.add_argument("--text-true", nargs="*", default=[], help="text_true runs (Table 1, q_True); several = seeds")
    p.add_argument("--text-agg", nargs="*", default=[], help="text_agg runs (Table 1, q_Agg); several = seeds")
    p.add_argument("--prior", nargs="*", default=[], help="prior_agg runs (Table 2, learned q(z)); several = seeds")
    p.add_argument("--ceiling-only", action="store_true",
                   help="vlvae: only the ceiling (correctness of reconstructions from q(z|x)), overall and per "
                        "word, at every checkpoint kept in --base: how it grows with training")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="make q(z|x) semi-amortised: its mean refined per image by this many Adam steps on "
                        "log p(x|z) + log p(z), the networks frozen (guides/semi_amortised.py). The tables then use "
                        "it for the ceiling and as the bounds' proposal; with --ceiling-only it adds a row \"z "
                        "refined\" under the amortised one, whose difference is the amortisation gap (default 0: off)")
    p.add_argument("--num-points", type=int, help="validation (vlvae) or test (jmvae) pairs evaluated "
                                                   "(default 500 vlvae, 1000 jmvae)")
    p.add_argument("--particles", type=int, help="importance samples K per bound (default 100 vlvae, 1000 jmvae)")
    p.add_argument("--chunk", type=int, default=50, help="particles per vectorised pass; bounds memory (default 50)")
    p.add_argument("--batch-size", type=int, default=50, help="validation pairs per pass (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the samples and bounds; every row starts "
                   "from it, so a row does not depend on which other runs are given (default 0)")
    p.add_argument("--classifier", help="correctness classifier folder (default runs/classifier-<dataset>-<size>; "
                                        "trained there if missing)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--out", required=True, help="folder for results.json and tables.md")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out (default: refuse)")
    return p



VLVAE_FLAGS = ("base", "text_true", "text_agg", "prior", "ceiling_only", "classifier")  # what --model jmvae leaves out
RESULTS = ("results.json", "tables.md")


def check_args(args) -> torch.device:
    """Every flag and --out, before any run is loaded, classifier trained or image rendered: the device."""
    for name, value in DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model == "jmvae":
        if args.refine_steps:
            raise RunError("--refine-steps refines the VLVAE's q(z|x); leave it out with --model jmvae")
        given = [name for name in VLVAE_FLAGS if getattr(args, name)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise RunError(f"{flag} is for the VLVAE's tables; leave it out with --model jmvae, or drop --model jmvae")
    elif args.ceiling_only and (args.text_true or args.text_agg or args.prior or args.runs):
        raise RunError("--ceiling-only evaluates --base alone; leave out --text-true, --text-agg, --prior and --runs")
    check_count(args.refine_steps, "--refine-steps", 0)
    for name in ("num_points", "particles", "chunk", "batch_size"):
        check_count(getattr(args, name), "--" + name.replace("_", "-"))
    check_seed(args.seed)
    device = parse_device(args.device)
    out = check_folder(args.out, "--out")
    for name in RESULTS:
        if (out / name).is_dir():
            raise RunError(f"{out / name} is a folder; move it away or choose another --out")
    if (out / "results.json").exists() and not args.overwrite:
        raise RunError(f"{out} already holds results; pass --overwrite to replace them or choose another --out")
    return device


def check_data_and_classifier(data, args, run) -> None:
    """The data root of ``run``'s data and the classifier folder, before a classifier is trained there."""
    check_folder(data.root or default_root(), f"the data root of {run}", writable=False)
    if args.model == "jmvae":
        return
    path = Path(args.classifier) if args.classifier else default_classifier_dir(data)
    held = path / CONFIG_FILE
    check_folder(path, "--classifier", writable=not held.exists())
    if held.exists() and not held.is_file():
        raise RunError(f"{held} is a folder, not a classifier description; delete {path} and train one again "
                       f"(run/classifier.py), or pass another --classifier")


FLAGS = {"image": "--base", "text_true": "--text-true", "text_agg": "--text-agg", "prior_agg": "--prior"}  # vlvae


def check_base(path, c) -> None:
    if (c.config.model, c.config.guide) != ("vlvae", "image"):
        raise RunError(f"{path} is a {c.config.model} {c.config.guide} run; --base takes a VLVAE base run (--guide image)")


def check_objective(path, c) -> None:
    """A --runs entry of the VLVAE's tables: a VLVAE run of a scheme that trains its own q(z|x) and q(z|y)."""
    model, guide = c.config.model, c.config.guide
    if model == "vlvae" and guide in OBJECTIVES:
        return
    hint = (f" (give it with {FLAGS[guide]})" if model == "vlvae" and guide in FLAGS else
            " (evaluate JMVAE runs with --model jmvae)" if model == "jmvae" else "")
    raise RunError(f"{path} is a {model} {guide} run; --runs takes VLVAE runs trained with --guide "
                   f"{', '.join(OBJECTIVES[:-1])} or {OBJECTIVES[-1]}{hint}")


def evaluate(args, device) -> dict:
    if args.model == "jmvae":
        return evaluate_jmvae(args, device)
    fitted = {"text_true": args.text_true, "text_agg": args.text_agg, "prior_agg": args.prior}  # fitted to --base
    if args.base is None:
        given = [FLAGS[kind] for kind, paths in fitted.items() if paths]
        if given:
            raise RunError(f"give the trained VLVAE run with --base: the {given[0]} runs were fitted to it")
        if args.ceiling_only or not args.runs:
            raise RunError("give the trained VLVAE run with --base, or VLVAE runs of --guide kl, mvae or mmvae with "
                           "--runs (or --model jmvae --runs ...)")
    if args.ceiling_only:
        return evaluate_ceiling(args, device)

    checked = []  # (path, components) of every run, to compare their data

    def load(path, check):
        """The run at ``path``, checked by ``check`` (a RunError) before its q(z|x) is made semi-amortised."""
        components = load_run(path, device)
        check(path, components)
        checked.append((path, components))
        return semi_amortised(components, args.refine_steps) if args.refine_steps else components

    def given_as(kind):
        def check(path, c):
            if c.config.guide != kind:
                raise RunError(f"{path} is a {c.config.guide} run, given as {FLAGS[kind]}")
        return check

    base = load(args.base, check_base) if args.base else None
    loaded = {kind: [] for kind in fitted}  # kind -> [(path, components)]: runs of one kind are seeds
    for kind, paths in fitted.items():
        for path in paths:
            add_seed(loaded, kind, path, load(path, given_as(kind)))
    objectives = {}  # Table 1 row label -> [(path, components)]: runs of one label are seeds
    for path in args.runs:
        c = load(path, check_objective)
        add_seed(objectives, jmvae_report.label(c.config), path, c)
    reference, first = checked[0]  # the base run, else the first of --runs
    data = first.config.data
    for path, c in checked[1:]:
        if c.config.data != data:
            raise RunError(f"{path} was trained on other data than {'the base run ' if base else ''}{reference}")
    check_data_and_classifier(data, args, reference)
    classifier = get_or_train_classifier(data, args.classifier, device)
    batches = list(validation_batches(make_dataset(data, "val"), args.num_points, args.batch_size, device))

    def seeded(row, components, *more):
        """One row, from the same random stream whichever other runs are evaluated."""
        pyro.set_rng_seed(args.seed)
        return row(components, classifier, batches, *more)

    bound_args = (args.particles, args.chunk)
    config = first.config
    results = {
        "dataset": data.name, "num_points": sum(len(x) for x, _ in batches), "num_particles": args.particles,
        "setting": f"{data.image_size}x{data.image_size} {data.name}, preset {config.preset}, "
                   f"z = {config.net.z_dim}, {config.train.steps} steps of batch {config.train.batch_size}",
        "classifier_accuracy": 100 * classifier.record["accuracy"]["word"], "refine_steps": args.refine_steps,
        "runs": {"base": args.base, **fitted, **{label: [path for path, _ in runs] for label, runs in objectives.items()}},
        "table_1": {},
    }
    if base is not None:
        base_ceiling = seeded(ceiling_row, base)
        results["ceiling"] = base_ceiling["ceiling"]
        for kind in ("text_true", "text_agg"):  # their q(z|x) and VLVAE are the base's, and so is their ceiling
            if loaded[kind]:
                row = aggregate([seeded(text_guide_row, c, *bound_args) for _, c in loaded[kind]])
                results["table_1"][kind] = {**row, **aggregate([{"ceiling": base_ceiling["ceiling"]}])}
    for label, runs in objectives.items():  # each with its own model, q(z|x) and q(z|y)
        results["table_1"][label] = aggregate([seeded(objective_row, c, *bound_args) for _, c in runs])
    if base is not None:
        results["table_2"] = {"prior": aggregate([seeded(prior_row, base, *bound_args)])}
        if "by_slot" in base_ceiling:
            results["ceiling_by_slot"] = base_ceiling["by_slot"]
            results["ceiling_text"] = base_ceiling["text"]
        if loaded["prior_agg"]:
            results["table_2"]["prior_agg"] = aggregate([seeded(prior_row, c, *bound_args)
                                                         for _, c in loaded["prior_agg"]])
    return results


def evaluate_ceiling(args, device) -> dict:
    """The ceiling, overall and per word, at each checkpoint kept in --base."""
    run = RunDir(args.base)
    config, steps = run.config(), run.checkpoint_steps()
    if (config.model, config.guide) != ("vlvae", "image"):
        raise RunError(f"{args.base} is a {config.model} {config.guide} run; --ceiling-only takes a VLVAE base run "
                       f"(--guide image)")
    if not steps:
        raise RunError(f"{args.base} has no checkpoint to evaluate; train it first")
    for step in steps:  # every checkpoint loads into the networks before the long work starts
        load_run(args.base, "cpu", step)
    check_data_and_classifier(config.data, args, args.base)
    classifier = get_or_train_classifier(config.data, args.classifier, device)
    batches = list(validation_batches(make_dataset(config.data, "val"), args.num_points, args.batch_size, device))

    def ceiling_at(components, step):
        row = {"step": step, **ceiling_row(components, classifier, batches)}
        if args.refine_steps:
            row["refined"] = ceiling_row(semi_amortised(components, args.refine_steps), classifier, batches)
        return row

    return {
        "dataset": config.data.name, "num_points": sum(len(x) for x, _ in batches),
        "setting": f"{config.data.image_size}x{config.data.image_size} {config.data.name}, preset {config.preset}, "
                   f"batch {config.train.batch_size}",
        "classifier_accuracy": 100 * classifier.record["accuracy"]["word"], "runs": {"base": args.base},
        "refine_steps": args.refine_steps,
        "ceiling_curve": [ceiling_at(load_run(args.base, device, step), step) for step in steps],
    }


def evaluate_jmvae(args, device) -> dict:
    if not args.runs:
        raise RunError("give the JMVAE runs to evaluate with --runs")
    loaded = {}  # row name -> [(path, components)]: runs of one row are seeds; every run is checked first
    for path in args.runs:
        c = load_run(path, device)
        if c.config.model != "jmvae":
            raise RunError(f"{path} is a {c.config.model} run, not a JMVAE run")
        if loaded and c.config.data != next(iter(loaded.values()))[0][1].config.data:
            raise RunError(f"{path} was trained on other data than {args.runs[0]}")
        add_seed(loaded, jmvae_report.label(c.config), path, c)
    config = next(iter(loaded.values()))[0][1].config
    check_data_and_classifier(config.data, args, args.runs[0])
    batches = list(validation_batches(make_dataset(config.data, "val"), args.num_points, args.batch_size, device))

    def seeded(components):
        """One run's bounds, from the same random stream whichever other runs are evaluated."""
        pyro.set_rng_seed(args.seed)
        return jmvae_report.jmvae_row(components, batches, args.particles, args.chunk)

    rows = {name: jmvae_report.over_seeds([seeded(c) for _, c in runs]) for name, runs in loaded.items()}
    return {
        "model": "jmvae", "dataset": config.data.name, "num_points": sum(len(x) for x, _ in batches),
        "num_particles": args.particles,
        "setting": f"{config.data.name} test set, preset {config.preset}, z = {config.net.z_dim}, "
                   f"{config.train.steps} steps of batch {config.train.batch_size}",
        "runs": {name: [path for path, _ in runs] for name, runs in loaded.items()}, "rows": rows,
    }


# TrainConfig fields that do not change what a run learns: seeds of one row may differ in these.
BOOKKEEPING = ("seed", "log_every", "checkpoint_every", "keep_checkpoints")


def _setting(config) -> dict:
    """What a run learns from: its model, guide, data, networks and training, flattened (``train.lr``)."""
    flat = {"model": config.model, "guide": config.guide}
    for part in ("data", "net", "train"):
        flat.update({f"{part}.{k}": v for k, v in dataclasses.asdict(getattr(config, part)).items()
                     if not (part == "train" and k in BOOKKEEPING)})
    return flat


def add_seed(rows: dict, label: str, path, c) -> None:
    """Adds run ``c`` at ``path`` to the row ``label`` of ``rows`` (label -> [(path, components)]).

    The runs of one row are seeds of one setting, reported as mean and standard deviation: each must
    have a seed of its own and differ from the others in nothing else that changes what it learns.
    """
    seed, mine = c.config.train.seed, _setting(c.config)
    for other_path, other in rows.get(label, []):
        if other.config.train.seed == seed:
            raise RunError(f"{other_path} and {path} are both seed {seed} of {label}; give each seed once")
        theirs = _setting(other.config)
        differ = [key for key in mine if mine[key] != theirs.get(key)]
        if differ:
            key = differ[0]
            raise RunError(f"{other_path} and {path} are runs of {label} with different {key} ({theirs.get(key)} "
                           f"and {mine[key]}); the runs of one row must differ in their seed alone")
    rows.setdefault(label, []).append((path, c))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    try:
        results = evaluate(args, check_args(args))
        if args.model == "jmvae":
            table = jmvae_report.markdown(results)
        else:
            table = ceiling_curve_markdown(results) if args.ceiling_only else markdown(results)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
        atomic_write_text(out / "tables.md", table)
    except KeyboardInterrupt:
        print(f"interrupted; nothing written to {out}", file=sys.stderr)
        return 130
    except REPORTED_ERRORS as e:  # a bad flag, run or file; an OS error; a corrupt data file
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 2
    print(table)
    print(f"wrote {out / 'results.json'} and {out / 'tables.md'}")
    return 0


def cli() -> int:
    """The command (``python run/evaluate.py`` and the ``mmvae-evaluate`` console script)."""
    torch.set_flush_denormal(True)  # as in run/svi.py: before any parallel op, so every thread
    return main()


if __name__ == "__main__":
    sys.exit(cli())
