"""The JMVAE paper's MNIST tables (Suzuki et al., Table 1 and Table 3) from run directories.

For each run of the JMVAE model (``zero``, ``kl``, ``mvae`` or ``mmvae``), on the test set: the marginal log p(x) with the multiple
(proposal q(z|x,w), Eq. 6) and single (q(z|x), Eq. 7) bounds, the conditional log p(x|w) with
the multiple bound (Eq. 8: log p(x,w) - log p(w), log p(w) = log E_{p(z)}[p(w|z)] estimated from
K prior samples) and the single bound (Eq. 9: q(z|w) in place of p(z) and as the proposal), and the
joint log p(x,w) (Table 3). Several runs of one row (seeds) give the mean and standard deviation of
their means (``over_seeds``). A VAE run (``vae``, the paper's VAE row) has only the marginal log p(x)
with proposal q(z|x), in the multiple column as in the paper. The model/proposal pairs are in
``evaluation.bounds``; every bound comes with its mean ESS and PSIS k-hat.
"""
from __future__ import annotations

from mmvae_zoo.evaluation import paper
from mmvae_zoo.evaluation.bounds import evaluate_bounds
from mmvae_zoo.evaluation.report import aggregate
from mmvae_zoo.metrics import BoundEstimate

TABLES = (("log p(x)", "Marginal log p(x) (Table 1, left)"),
          ("log p(x|w)", "Conditional log p(x|w) (Table 1, right)"))
KINDS = ("multiple", "single")


def label(config) -> str:
    """The row name of a run: the paper's ``VAE``, ``JMVAE-zero`` or ``JMVAE-kl, alpha = A``; ``MVAE``, or
    ``MMVAE, K = k`` (its training particles)."""
    if config.guide == "kl":
        return f"JMVAE-kl, alpha = {config.train.alpha:g}"
    if config.guide == "mmvae":
        return f"MMVAE, K = {config.train.particles}"
    return {"vae": "VAE", "zero": "JMVAE-zero", "mvae": "MVAE"}[config.guide]


def jmvae_row(components, batches, num_particles: int, chunk_size: int | None) -> dict:
    """Every bound of one JMVAE run over ``batches``: name -> ``BoundEstimate.summary()``."""
    b = evaluate_bounds(components, batches, num_particles, chunk_size)
    if "log p(w)" in b:  # not for the VAE
        joint = b["log p(x,w)"]
        # Eq. 8: the diagnostics are those of the joint bound (log p(w) has a near-exact estimate).
        b["log p(x|w) multiple"] = BoundEstimate(joint.value - b.pop("log p(w)").value, joint.ess, joint.khat,
                                                 joint.num_particles)
    return {name: estimate.summary() for name, estimate in b.items()}


def over_seeds(rows: list[dict]) -> dict:
    """One row from the rows of several runs (seeds): each bound's mean and standard deviation over
    the runs' means (``std``, ``runs``) with their mean diagnostics; a single run's row as it is
    (``mean`` and ``sem`` over the test points)."""
    return rows[0] if len(rows) == 1 else aggregate(rows)


def _ours(entry) -> str:
    if entry is None:
        return "-"
    return f"{entry['mean']:.2f} ± {entry['std'] if 'runs' in entry else entry['sem']:.2f}"


def _theirs(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(results: dict) -> str:
    """Table 1 (marginal and conditional, multiple and single) and Table 3 (joint), ours beside the
    paper's (a run appears in the tables it has bounds for), then the importance-sampling diagnostics
    of every bound."""
    rows = results["rows"]
    reference = paper.JMVAE_MNIST if results["dataset"] == "mnist" else {}
    seeds = [f"{name} ({next(iter(bounds.values()))['runs']})" for name, bounds in rows.items()
             if "runs" in next(iter(bounds.values()))]
    lines = [f"Setting: {results['setting']}; K = {results['num_particles']} importance samples, "
             f"{results['num_points']} test points; ours: mean ± standard error over test points"
             + (f"; rows of several seeds, {', '.join(seeds)}: mean ± standard deviation of the seeds' means."
                if seeds else "."),
             f"Paper: {paper.JMVAE_SETTING}.", ""]
    for bound, title in TABLES:
        lines += [f"{title}.", "", "| | multiple (ours) | single (ours) | multiple (paper) | single (paper) |",
                  "| --- | --- | --- | --- | --- |"]
        theirs = reference.get(bound, {})
        ours = [name for name, bounds in rows.items() if any(f"{bound} {kind}" in bounds for kind in KINDS)]
        for name in list(dict.fromkeys([*theirs, *ours])):
            cells = [_ours(rows.get(name, {}).get(f"{bound} {kind}")) for kind in KINDS]
            cells += [_theirs(theirs.get(name, {}).get(kind)) for kind in KINDS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    theirs = reference.get("log p(x,w)", {})
    lines += ["Joint log p(x,w) (Table 3).", "", "| | ours | paper |", "| --- | --- | --- |"]
    for name in list(dict.fromkeys([*theirs, *(name for name, bounds in rows.items() if "log p(x,w)" in bounds)])):
        lines.append(f"| {name} | {_ours(rows.get(name, {}).get('log p(x,w)'))} | {_theirs(theirs.get(name))} |")
    lines += ["", "Importance sampling diagnostics (the multiple conditional bound shares the joint bound's):", "",
              "| run | bound | mean ESS | mean PSIS k-hat | share k-hat > 0.7 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {bound} | {e['ess']:.1f} | {e['khat']:.2f} | {e['khat_above_0.7']:.2f} |"
              for name, bounds in rows.items() for bound, e in bounds.items()]
    return "\n".join(lines) + "\n"
