"""The paper's Tables 1 and 2 from run directories: correctness (paper 5.4) and bounds (Eq. 6).

Table 1 compares text guides (``text_true`` vs ``text_agg`` runs): correctness of images decoded
from one z ~ q(z|y) per validation text, against that text; and log p(x|y) (Eq. 6). Runs of the
schemes that train the whole VLVAE with their own q(z|x) and q(z|y) (``OBJECTIVES``: JMVAE-kl,
MVAE, MMVAE) add a row each (``objective_row``), scored the same way with their own networks. Table 2
compares the prior N(0, I) (the base run) with the learned q(z) (``prior_agg`` runs):
correctness of the image and the (greedy) text decoded from the same prior sample, log p(x) and
log p(y). Several runs of one kind (seeds) give mean and standard deviation. The ceiling is the
correctness of reconstructions from q(z|x) (mean of q) against the real text: no guide can beat
a VLVAE that loses attributes. Each Table 1 row has one: the base run's for q_True and q_Agg, the
run's own (its q(z|x) and VLVAE) for the other objectives.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mmvae_zoo.evaluation import paper
from mmvae_zoo.evaluation.bounds import evaluate_bounds
from mmvae_zoo.evaluation.correctness import SLOT_NAMES, correctness, two_objects_hits, two_objects_text_hits
from mmvae_zoo.guides.semi_amortised import SemiAmortisedImageGuide
from mmvae_zoo.training.schemes import MULTIMODAL

TEXT_GUIDES = ("text_true", "text_agg")  # Table 1's fitted text guides, compared with the paper's
OBJECTIVES = tuple(name for name, *_ in MULTIMODAL)  # VLVAE schemes with their own q(z|x) and q(z|y)


def validation_batches(dataset, count: int, batch_size: int, device):
    """The first ``count`` validation pairs as (x float, y long) batches on ``device``."""
    count = min(count, len(dataset))
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        x = torch.from_numpy(np.array(dataset.images[start:stop])).to(device).float() / 255
        yield x, torch.from_numpy(np.array(dataset.tokens[start:stop])).to(device)


def _mean_correctness(classifier, pairs) -> float:
    """Mean correctness (%) over an iterable of (images, texts) batches."""
    return 100 * torch.cat([correctness(classifier, images, texts) for images, texts in pairs]).mean().item()


def semi_amortised(components, steps: int):
    """``components`` with q(z|x) made semi-amortised (``SemiAmortisedImageGuide``: its mean refined
    per image by ``steps`` Adam steps on log p(x|z) + log p(z)); the ceiling and the bounds then use it."""
    return dataclasses.replace(components, image_guide=SemiAmortisedImageGuide(components.image_guide,
                                                                                 components.model, steps))


def _reconstructions(components, batches):
    """(images and greedy texts decoded from the mean of q(z|x), real texts)."""
    model, encoder = components.model, components.image_guide
    for x, y in batches:
        yield *model.generate(encoder.distribution(x, None).mean), y


@torch.no_grad()
def ceiling_row(components, classifier, batches) -> dict:
    """The ceiling: correctness (%) of reconstructions from the mean of q(z|x) against the real
    texts, and on Two Objects per object word (``by_slot``: ``size 1`` .. ``shape 2``, which
    attributes the VLVAE loses) and, under ``text``, the share of object words that the text
    decoded from the same z names (``two_objects_text_hits``): a word z holds that the image lacks
    is lost by the image decoder, a word missing from both by z."""
    decoded = list(_reconstructions(components, batches))
    row = {"ceiling": _mean_correctness(classifier, ((images, y) for images, _, y in decoded))}
    if classifier.kind == "two_objects":
        row["by_slot"] = _by_slot(two_objects_hits(classifier, images, y) for images, _, y in decoded)
        text = _by_slot(two_objects_text_hits(y, texts) for _, texts, y in decoded)
        row["text"] = {"ceiling": float(np.mean(list(text.values()))), "by_slot": text}
    return row


def _by_slot(hits) -> dict[str, float]:
    """Share (%) of each Two Objects object word hit, from batches of bool [N, 8] hits."""
    shares = torch.cat(list(hits)).float().mean(0)
    return {name: 100 * share for name, share in zip(SLOT_NAMES, shares.tolist())}


def ceiling(components, classifier, batches) -> float:
    """Correctness (%) of reconstructions from the mean of q(z|x) against the real texts."""
    return ceiling_row(components, classifier, batches)["ceiling"]


def ceiling_by_slot(components, classifier, batches) -> dict[str, float]:
    """Two Objects: the ceiling per object word (``size 1`` .. ``shape 2``): which attributes the VLVAE loses."""
    return ceiling_row(components, classifier, batches)["by_slot"]


@torch.no_grad()
def text_guide_row(components, classifier, batches, num_particles: int, chunk_size: int) -> dict:
    """Table 1 entries of one run with a q(z|y) (``Components.text_posterior``): correctness of images decoded
    from one z ~ q(z|y) per validation text, and log p(x|y) (with ESS and k-hat)."""
    model, guide = components.model, components.text_posterior
    score = _mean_correctness(classifier, ((model.generate(guide.distribution(None, y).sample())[0], y)
                                           for x, y in batches))
    bound = evaluate_bounds(components, batches, num_particles, chunk_size, names=["log p(x|y)"])["log p(x|y)"]
    return {"correctness": score, "log p(x|y)": bound.summary()}


def objective_row(components, classifier, batches, num_particles: int, chunk_size: int) -> dict:
    """Table 1 entries of a run that trains the VLVAE with its own q(z|x) and q(z|y) (``OBJECTIVES``):
    those of ``text_guide_row`` with its q(z|y), and the ceiling of its own q(z|x) and VLVAE. The
    ceiling comes second and draws no random numbers, so the rest matches a text-guide row's draws."""
    row = text_guide_row(components, classifier, batches, num_particles, chunk_size)
    row["ceiling"] = ceiling_row(components, classifier, batches)["ceiling"]
    return row


@torch.no_grad()
def prior_row(components, classifier, batches, num_particles: int, chunk_size: int) -> dict:
    """Table 2 entries of one prior (N(0, I) for a base run, q(z) for a prior_agg run): correctness
    of image and greedy text decoded from the same prior sample (one per validation point), log p(x)
    and log p(y)."""
    model = components.model
    score = _mean_correctness(classifier, (model.generate(model.prior_distribution(len(x)).sample()) for x, _ in batches))
    bounds = evaluate_bounds(components, batches, num_particles, chunk_size, names=["log p(x)", "log p(y)"])
    return {"correctness": score, **{k: v.summary() for k, v in bounds.items()}}


def ceiling_curve_markdown(results: dict) -> str:
    """The ceiling at each checkpoint of a base run, a row per step (per word on Two Objects), a
    row "text from z" under each on Two Objects, and a row "z refined" when z was refined."""
    rows = results["ceiling_curve"]
    slots = list(rows[0].get("by_slot", {}))
    labelled = []  # (row label, entry with ceiling and by_slot)
    for row in rows:
        labelled.append((str(row["step"]), row))
        if "text" in row:
            labelled.append((f"{row['step']}, text from z", row["text"]))
        if "refined" in row:
            labelled.append((f"{row['step']}, z refined ({results['refine_steps']} steps)", row["refined"]))
            if "text" in row["refined"]:
                labelled.append((f"{row['step']}, z refined, text from z", row["refined"]["text"]))
    table = [["step", "ceiling (%)", *slots], ["---"] * (2 + len(slots))]
    table += [[label, f"{e['ceiling']:.2f}", *(f"{e['by_slot'][k]:.1f}" for k in slots)] for label, e in labelled]
    lines = [f"Setting: {results['setting']}; {results['num_points']} validation pairs; classifier word accuracy on "
             f"real validation images {results['classifier_accuracy']:.2f}%."]
    if "text" in rows[0]:
        lines.append("Rows \"text from z\": the share of object words that the greedy text decoded from the "
                     "same z names (no classifier).")
    lines.append("")
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in table]) + "\n"


def _value(entry):
    return entry["mean"] if isinstance(entry, dict) else entry


def aggregate(rows: list[dict]) -> dict:
    """Mean and standard deviation over runs (seeds) of each entry."""
    out = {}
    for key in rows[0]:
        values = np.array([_value(r[key]) for r in rows])
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "runs": len(values)}
        if isinstance(rows[0][key], dict):
            out[key]["khat"] = float(np.nanmean([r[key]["khat"] for r in rows]))
            out[key]["khat_above_0.7"] = float(np.mean([r[key]["khat_above_0.7"] for r in rows]))
            out[key]["ess"] = float(np.mean([r[key]["ess"] for r in rows]))
    return out


def _cell(entry) -> str:
    if entry is None:
        return "-"
    text = f"{entry['mean']:.2f}"
    if entry["runs"] > 1:
        text += f" ± {entry['std']:.2f}"
    return text


def _per_word(by_slot: dict[str, float]) -> str:
    return ", ".join(f"{word} {share:.1f}%" for word, share in by_slot.items())


def _refined(results: dict) -> str:
    steps = results.get("refine_steps", 0)
    return f", its mean refined per image by {steps} steps: semi-amortised" if steps else ""


def markdown(results: dict) -> str:
    """Tables 1 and 2 laid out as in the paper, ours beside the paper's, with PSIS diagnostics."""
    name = results["dataset"]
    lines = [f"Setting: {results['setting']}; paper: {paper.SETTING}.", ""]
    accuracy = f"Classifier word accuracy on real validation images: {results['classifier_accuracy']:.2f}%"
    if "ceiling" in results:  # there is a base run
        lines += [f"{accuracy}; ceiling (reconstructions from q(z|x){_refined(results)}): {results['ceiling']:.2f}%.", ""]
    else:
        lines += [f"{accuracy}.", ""]
    if "ceiling_by_slot" in results:
        lines += [f"Ceiling by word: {_per_word(results['ceiling_by_slot'])}.", ""]
    if "ceiling_text" in results:
        text = results["ceiling_text"]
        lines += [f"Text decoded from the same z names {text['ceiling']:.2f}% of the object words: "
                  f"{_per_word(text['by_slot'])}.", ""]
    table_1, table_2 = results.get("table_1", {}), results.get("table_2", {})
    if table_1:
        others = [k for k in table_1 if k not in TEXT_GUIDES]  # the other objectives' rows, by label
        title = "Table 1: q(z|y) as true posterior (Eq. 3) vs aggregate posterior (Eq. 5)"
        if others:
            title += ", and the q(z|y) of objectives that train the VLVAE with it"
        columns = ["q_True (ours)", "q_Agg (ours)", *(f"{k} (ours)" for k in others), "q_True (paper)", "q_Agg (paper)"]
        lines += [f"{title}.", "", "| | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
        theirs = paper.TABLE_1.get(name, {})
        for row, label in (("correctness", "Correctness (%)"), ("log p(x|y)", "log p(x\\|y)"),
                           ("ceiling", "Ceiling (%)")):
            ours = [_cell(table_1.get(k, {}).get(row)) for k in (*TEXT_GUIDES, *others)]
            cells = [f"{theirs[row][k]:.2f}" if row in theirs else "-" for k in TEXT_GUIDES]
            lines.append(f"| {label} | " + " | ".join(ours + cells) + " |")
        lines += ["", "Ceiling: correctness of reconstructions from the mean of each column's q(z|x) by its VLVAE: "
                  "the base run's for q_True and q_Agg, the run's own for the other objectives.", ""]
    if table_2:
        lines += ["Table 2: prior N(0, I) vs learned aggregate prior q(z).", "",
                  "| | p(z) (ours) | q(z) (ours) | p(z) (paper) | q(z) (paper) |", "| --- | --- | --- | --- | --- |"]
        for row, label in (("correctness", "Correctness (%)"), ("log p(x)", "log p(x)"), ("log p(y)", "log p(y)")):
            ours = [_cell(table_2.get(k, {}).get(row)) for k in ("prior", "prior_agg")]
            theirs = [f"{paper.TABLE_2[name][row][k]:.2f}" if name in paper.TABLE_2 else "-" for k in ("prior", "prior_agg")]
            lines.append(f"| {label} | " + " | ".join(ours + theirs) + " |")
        lines.append("")
    diagnostics = [(f"{table} {kind}", row, entry) for table, rows in (("Table 1", table_1), ("Table 2", table_2))
                   for kind, entries in rows.items() for row, entry in entries.items() if "khat" in entry]
    if diagnostics:
        lines += [f"Importance sampling diagnostics (K = {results['num_particles']}, "
                  f"{results['num_points']} validation points):", "",
                  "| run | bound | mean ESS | mean PSIS k-hat | share k-hat > 0.7 |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {run} | {row} | {e['ess']:.1f} | {e['khat']:.2f} | {e['khat_above_0.7']:.2f} |"
                  for run, row, e in diagnostics]
    return "\n".join(lines) + "\n"
