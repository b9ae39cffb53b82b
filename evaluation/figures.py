"""The VLVAE paper's figures (Cremer & Kushman) drawn from trained run directories.

| function              | paper     | runs in                                                        |
| --------------------- | --------- | -------------------------------------------------------------- |
| ``latent_posteriors`` | Fig. 1    | a VLVAE with a 2-d latent (``single_object``), its text guides  |
| ``reconstructions``   | Fig. 3, 5 | any VLVAE run (its model and q(z|x))                            |
| ``text_conditionals`` | Fig. 4, 6 | text guides, typically ``text_true`` and ``text_agg``           |
| ``joint_vs_marginal`` | Fig. 7    | a ``joint`` run and an ``image`` run                            |
| ``training_curves``   |           | any run (its ``metrics.jsonl``)                                 |

Each takes run directories (or ``Components`` from ``load_run``) and an output path, writes
a PNG of exactly ``figsize * DPI`` pixels (Fig. 4, 6: ``evaluation.plots.save_grid``'s size)
and returns the path. Models run in eval mode; figures are drawn without pyplot, so
drawing them leaves a notebook's matplotlib backend alone.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from mmvae_zoo.datasets.registry import make_dataset
from mmvae_zoo.evaluation.plots import save_grid
from mmvae_zoo.training.rundir import RunDir
from mmvae_zoo.training.runs import load_run
from mmvae_zoo.training.schemes import Components

DPI = 100
PANEL = 2.4          # inches per latent-space panel (Fig. 1) and per training curve
IMAGE = 1.8          # inches per image column in Fig. 3, 5, 7
TITLE = 0.6          # inches above the panels for a two-line title
TEXT_COLOURS = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2"]  # Fig. 1, one per text
MASS_LEVELS = (0.9, 0.6, 0.3)  # Fig. 1 contours enclose these shares of a density's mass
GUIDE_LABELS = {"text_true": "q_True(z|y)", "text_agg": "q_Agg(z|y)"}
TERM_LABELS = {
    "loss": "training loss (minimised)",
    "log_px": "log p(x|z), image reconstruction",
    "log_py": "log p(y|z), text reconstruction",
    "kl": "KL(q || p(z)), 1-sample estimate",
    "kl_qx_target": "KL(q(z|x) || fitted q), 1 sample",
    "skipped": "steps skipped (non-finite loss), total",
}


def components(run, device="cpu") -> Components:
    """``run`` itself if already loaded, else ``load_run(run, device)``."""
    return run if isinstance(run, Components) else load_run(run, device)


def _device(c: Components) -> torch.device:
    return next(c.model.parameters()).device


def _pairs(c: Components, split: str, num: int, distinct_texts: bool = False):
    """The first ``num`` image-text pairs of a split of the run's dataset (with ``distinct_texts``,
    the first pair of each text), as float images in [0, 1] and tokens."""
    data = make_dataset(c.config.data, split, progress=False)
    tokens = np.asarray(data.tokens)
    index = np.sort(np.unique(tokens, axis=0, return_index=True)[1]) if distinct_texts else np.arange(len(tokens))
    index = index[:num]
    x = torch.from_numpy(np.asarray(data.images[index])).float() / 255
    return x.to(_device(c)), torch.from_numpy(tokens[index]).to(_device(c))


def _decode(model, z):
    """Images, greedy texts and each word's distribution p(w_t | w_<t, z) [..., L, V-1] (padding left out)."""
    images, tokens = model.generate(z)
    logits = model.text_decoder(model.decoder(z), tokens)[..., 1:]
    return images, tokens, logits.softmax(-1)


def _reconstruct(c: Components, x, y):
    """``_decode`` of z = the mean of the run's q(z|x) (or q(z|x,y) for a joint run)."""
    return _decode(c.model, c.image_guide.distribution(x, y).mean)


def _save(fig: Figure, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


# Fig. 1 ---------------------------------------------------------------------------------

def _mass_levels(density: np.ndarray) -> np.ndarray:
    """Density values whose upper level sets hold MASS_LEVELS of the (normalised) mass, increasing."""
    ordered = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(ordered)
    return np.unique([ordered[min(np.searchsorted(cumulative, m), len(ordered) - 1)] for m in MASS_LEVELS])


def _shade(ax, mass: np.ndarray, colour: str, extent) -> None:
    """Grid cell masses as the opacity of ``colour`` (square root: faint cells stay visible)."""
    rgba = np.zeros(mass.shape + (4,))
    rgba[..., :3] = to_rgb(colour)
    rgba[..., 3] = 0.9 * np.sqrt(mass / mass.max())
    ax.imshow(rgba, origin="lower", extent=extent, interpolation="nearest")


def _cell_masses(q: torch.distributions.Normal, edges: torch.Tensor) -> np.ndarray:
    """Mass of the equal mixture of the diagonal Gaussians ``q`` [N, 2] in each cell of the grid
    with these edges on both axes, [z2, z1]: exact, so posteriors narrower than a cell still count."""
    per_axis = q.cdf(edges[:, None, None]).diff(dim=0)  # [cells, N, 2]
    return torch.einsum("in,jn->ij", per_axis[..., 1], per_axis[..., 0]).div(q.mean.shape[0]).numpy()


def _image_posteriors(c: Components, data, batch_size: int = 256) -> torch.distributions.Normal:
    """q(z|x) of every image of ``data``, batch shape [N] (on the CPU)."""
    means, scales = [], []
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(np.array(data.images[start:start + batch_size])).to(_device(c)).float() / 255
        q = c.image_guide.distribution(x, None)
        means.append(q.mean.cpu())
        scales.append(q.stddev.cpu())
    return torch.distributions.Normal(torch.cat(means), torch.cat(scales))


@torch.no_grad()
def latent_posteriors(run, out, text_runs=(), resolution: int = 100, max_texts: int = 4) -> Path:
    """Fig. 1 (and section 5.5): text posteriors against the aggregate of image posteriors, 2-d latent.

    For each of the ``max_texts`` most common validation texts y (one colour each): shaded, the
    aggregate E_{p_D(x|y)}[q(z|x)] of the validation images with text y (a mixture of their
    Gaussians); as level sets, p(z|y) ∝ p(y|z) p(z) (first row; p(y|z) teacher forced on y) and
    the q(z|y) of each of ``text_runs`` (one row each). The first column overlays all texts.
    Every density is evaluated on a grid over z and normalised over it.
    """
    c = components(run)
    if c.config.net.z_dim != 2:
        raise ValueError(f"Fig. 1 needs a VLVAE with a 2-d latent; this run has z_dim {c.config.net.z_dim} "
                         f"(train one with --dataset single_object)")
    guides = [components(r, _device(c)) for r in text_runs]
    data = make_dataset(c.config.data, "val", progress=False)
    tokens = torch.from_numpy(np.array(data.tokens))
    texts = sorted(t for t, _ in Counter(map(tuple, tokens.tolist())).most_common(max_texts))
    q = _image_posteriors(c, data)
    limit = max(3.0, float((q.mean.abs() + 3 * q.stddev).max()))
    edges = torch.linspace(-limit, limit, resolution + 1)
    axis = (edges[1:] + edges[:-1]) / 2  # cell centres
    z = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)  # z1 varies fastest

    def on_grid(log_density: torch.Tensor) -> np.ndarray:
        """Density at the cell centres normalised over the grid, as an image [z2, z1]."""
        return log_density.cpu().softmax(0).reshape(resolution, resolution).numpy()

    def log_joint(y):  # log p(y|z) + log p(z) = log p(z|y) + const
        zd = z.to(_device(c))
        return c.model.text_likelihood(c.model.decoder(zd), y).log_prob(y) + c.model.prior_distribution(len(z)).log_prob(zd)

    rows = [("p(z|y) ∝ p(y|z) p(z)", log_joint)] + [
        (GUIDE_LABELS.get(g.config.guide, g.config.guide),
         lambda y, g=g: g.guide.distribution(None, y).log_prob(z.to(y.device))) for g in guides]
    ncols = len(texts) + 1
    fig = Figure(figsize=(PANEL * ncols, PANEL * len(rows) + TITLE), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False, sharex=True, sharey=True)
    extent = (-limit, limit, -limit, limit)
    for j, text in enumerate(texts):
        y = torch.tensor(text, device=_device(c)).expand(len(z), -1)
        own = (tokens == torch.tensor(text)).all(-1)
        aggregate = _cell_masses(torch.distributions.Normal(q.mean[own], q.stddev[own]), edges)
        colour = TEXT_COLOURS[j % len(TEXT_COLOURS)]
        axes[0, j + 1].set_title(f"“{c.vocab.decode(list(text))}” ({int(own.sum())} images)", color=colour,
                                 fontsize=9)
        for i, (_, log_density) in enumerate(rows):
            level = on_grid(log_density(y))
            for ax in (axes[i, 0], axes[i, j + 1]):
                _shade(ax, aggregate, colour, extent)
                ax.contour(axis, axis, level, levels=_mass_levels(level), colors=[colour], linewidths=1.1)
    axes[0, 0].set_title("all texts", fontsize=9)
    for i, (label, _) in enumerate(rows):
        axes[i, 0].set_ylabel(f"lines: {label}\nz2", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("z1", fontsize=9)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    fig.suptitle("Text posteriors vs the aggregate of image posteriors in a 2-d latent space (paper Fig. 1)\n"
                 "shading: aggregate posterior E_{p_D(x|y)}[q(z|x)] of the validation images with text y "
                 f"(opacity: √mass);  lines: level sets holding {', '.join(f'{m:.0%}' for m in MASS_LEVELS)} "
                 "of the row's density", fontsize=9)
    return _save(fig, out)


# Fig. 3, 5, 7: images with their texts, and the text decoder's word distributions -----------

def _show(ax, image: torch.Tensor, caption: str, words_per_line: int = 4) -> None:
    image = image.cpu().numpy().transpose(1, 2, 0)
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    words = caption.split()
    ax.set_title("\n".join(" ".join(words[i:i + words_per_line]) for i in range(0, len(words), words_per_line)),
                 fontsize=6.5)


def _images_and_word_distributions(out, title: str, rows, histograms, vocab) -> Path:
    """Rows of captioned images, then for a few decoded texts one bar chart per word position
    over the vocabulary, the decoded word in black (paper Fig. 3, 5, 7).

    rows: [(label, images [N, C, H, W], captions)]; histograms: [(label, probs [L, V-1], tokens [L])].
    """
    ncols = max(len(images) for _, images, _ in rows)
    length = len(histograms[0][2])
    words = vocab.words[1:]
    image_height, bar_height = 1.25 * IMAGE * len(rows), max(1.6, 0.5 + 0.11 * len(words)) * len(histograms)
    bar_columns = max(length, 6)  # short texts leave columns empty rather than stretch the charts
    fig = Figure(figsize=(max(IMAGE * ncols, 1.2 * bar_columns + 1.2), image_height + bar_height + TITLE),
                 layout="constrained")
    fig.suptitle(title, fontsize=10)
    top, bottom = fig.subfigures(2, 1, height_ratios=[image_height, bar_height])
    for row, (label, images, captions) in zip(top.subplots(len(rows), ncols, squeeze=False), rows):
        for k, ax in enumerate(row):
            if k < len(images):
                _show(ax, images[k], captions[k])
            else:
                ax.axis("off")
        row[0].set_ylabel(label, fontsize=8)
    bars = bottom.subplots(len(histograms), bar_columns, squeeze=False, sharex=True, sharey=True)
    for ax in bars[:, length:].flat:
        ax.axis("off")
    for row, (label, probs, tokens) in zip(bars, histograms):
        for t, ax in enumerate(row[:length]):
            chosen = int(tokens[t]) - 1
            ax.barh(range(len(words)), probs[t].cpu().numpy(), height=0.8,
                    color=["black" if k == chosen else "tab:blue" for k in range(len(words))])
            ax.set_title(f"word {t + 1}: {words[chosen]}", fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_xticks([0, 0.5, 1])
            ax.tick_params(labelsize=6)
        row[0].set_yticks(range(len(words)), words)
        row[0].set_ylabel(label, fontsize=8)
    bars[0, 0].invert_yaxis()  # shared: the vocabulary reads top to bottom in every chart
    for ax in bars[-1, :length]:
        ax.set_xlabel("p(word | earlier words, z)", fontsize=6)
    return _save(fig, out)


@torch.no_grad()
def reconstructions(run, out, num: int = 6) -> Path:
    """Fig. 3 and 5: training and validation pairs, their reconstructions from the mean of q(z|x)
    with the decoded text, the word distributions of the first of each, and prior samples."""
    c = components(run)
    vocab, rows, histograms = c.vocab, [], []
    for split in ("training", "validation"):
        x, y = _pairs(c, "train" if split == "training" else "val", num)
        images, tokens, probs = _reconstruct(c, x, y)
        rows += [(f"{split} data", x, vocab.decode_batch(y)),
                 ("reconstruction\nz = mean of q(z|x)", images, vocab.decode_batch(tokens))]
        histograms.append((f"{split} image 1\nreconstructed", probs[0], tokens[0]))
    prior = "N(0, I)" if c.model.prior is None else "learned q(z)"
    images, tokens, _ = _decode(c.model, c.model.prior_distribution(num).sample())
    rows.append((f"samples, z ~ {prior}", images, vocab.decode_batch(tokens)))
    title = (f"VLVAE ({c.config.data.name}, {c.config.preset} preset): data, reconstructions and prior samples "
             f"with greedily decoded text (paper Fig. 3, 5)")
    return _images_and_word_distributions(out, title, rows, histograms, vocab)


@torch.no_grad()
def joint_vs_marginal(joint_run, marginal_run, out, num: int = 6) -> Path:
    """Fig. 7: reconstructions of the same validation pairs from joint inference q(z|x,y) (a
    ``joint`` run) and marginal inference q(z|x) (an ``image`` run), with word distributions."""
    joint = components(joint_run)
    marginal = components(marginal_run, _device(joint))
    if joint.config.guide != "joint":
        raise ValueError(f"the joint run trained guide {joint.config.guide!r}; train one with --guide joint")
    if joint.vocab != marginal.vocab or joint.config.net.image_shape != marginal.config.net.image_shape:
        raise ValueError("the joint and marginal runs were trained on different data (vocabulary or image size)")
    vocab = joint.vocab
    x, y = _pairs(joint, "val", num)
    rows, histograms = [("validation data", x, vocab.decode_batch(y))], []
    for label, c in (("joint q(z|x,y)", joint), ("marginal q(z|x)", marginal)):
        images, tokens, probs = _reconstruct(c, x, y)
        rows.append((f"reconstruction,\n{label}", images, vocab.decode_batch(tokens)))
        histograms.append((f"image 1, {label}", probs[0], tokens[0]))
    title = ("Reconstructions from joint inference q(z|x,y) and marginal inference q(z|x), z = the mean "
             "(paper Fig. 7)\nthe paper finds that joint inference stores text-specific information (word order) "
             "in z: its word distributions are near certain")
    return _images_and_word_distributions(out, title, rows, histograms, vocab)


# Fig. 4, 6 ---------------------------------------------------------------------------------

@torch.no_grad()
def text_conditionals(text_runs, out, texts=None, num_texts: int = 4, num_samples: int = 3) -> Path:
    """Fig. 4 and 6: images and texts decoded from ``num_samples`` z ~ q(z|y) of each given text,
    for each text run side by side (typically ``text_true`` and ``text_agg``). Without ``texts``,
    the first ``num_texts`` distinct validation texts, shown with an image of each."""
    runs = [components(r) for r in text_runs]
    vocab = runs[0].vocab
    if any(c.vocab != vocab for c in runs):
        raise ValueError("the text runs have different vocabularies; give runs trained on the same data")
    if texts is None:
        given, y = _pairs(runs[0], "val", num_texts, distinct_texts=True)
        texts, first = vocab.decode_batch(y), "a validation image and its text"
    else:  # a typed text has no image: a blank panel holds its caption
        given, first = torch.ones(len(texts), *runs[0].config.net.image_shape), "the given text"
    samples = [c.sample_from_text(texts, num_samples) for c in runs]
    images = torch.cat([given[:, None].cpu()] + [s_images.cpu() for s_images, _ in samples], dim=1)
    labels = [GUIDE_LABELS.get(c.config.guide, c.config.guide) for c in runs]
    captions = []
    for t, text in enumerate(texts):
        captions.append(f"given: {text}")
        for label, (_, decoded) in zip(labels, samples):
            captions += [f"{label}: {d}" for d in decoded[t]]
    title = (f"Images and texts decoded from z ~ q(z|y) of the given text (paper Fig. 4, 6)\nper row: {first}, "
             f"then {num_samples} samples from each of " + ", ".join(labels))
    return save_grid(out, images.flatten(0, 1), captions, ncols=images.shape[1], title=title)


# Training curves -----------------------------------------------------------------------------

def training_curves(run, out) -> Path:
    """The loss and each logged term of a run's ``metrics.jsonl`` against the step, one panel each."""
    run = RunDir(run)
    config, records = run.config(), run.metrics()
    if not records:
        raise ValueError(f"{run.metrics_path} has no records yet; curves need a run that logged at least once")
    keys = list(dict.fromkeys(k for r in records for k in r if k not in ("step", "seconds")))
    skipped = records[-1].get("skipped", 0)
    if not skipped:  # an all-zero panel says nothing; the title says none were skipped
        keys = [k for k in keys if k != "skipped"]
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(1.4 * PANEL * ncols, PANEL * nrows + TITLE), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    steps = [r["step"] for r in records]
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [r.get(key, math.nan) for r in records], linewidth=1)
        ax.set_title(TERM_LABELS.get(key, key), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    seconds = records[-1].get("seconds")
    fig.suptitle(f"Training curves of {run.path.name}: {config.model} / {config.guide}, {config.data.name}, "
                 f"{config.preset} preset" + (f", {seconds:.0f} s" if seconds is not None else "")
                 + f"\nbatch averages per datapoint, one batch per point; {skipped or 'no'} non-finite steps skipped",
                 fontsize=9)
    return _save(fig, out)
