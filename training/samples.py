"""Sample grids written at each checkpoint, with the decoded text beside every image."""
from __future__ import annotations

import numpy as np
import torch

from mmvae_zoo.evaluation.plots import save_grid  # a leaf: imports nothing of the project

NUM_FIXED = 8        # validation pairs shown in every grid
SAMPLES_PER_TEXT = 6  # images decoded from z ~ q(z|y) per given text (paper Fig. 4)
TEXTS_SHOWN = 4


def fixed_batch(dataset, device):
    """The first validation pairs, always the same, so grids from different steps compare."""
    n = min(NUM_FIXED, len(dataset))
    x = torch.from_numpy(np.array(dataset.images[:n])).to(device).float() / 255
    return x, torch.from_numpy(np.array(dataset.tokens[:n])).to(device)


@torch.no_grad()
def save(components, fixed, path) -> None:
    """Base runs: real images, reconstructions from q's mean and prior samples (JMVAE: and images
    decoded from z ~ q(z|w) of the real texts). Text guides:
    for a few validation texts, images and texts decoded from several z ~ q(z|y). q(z): samples."""
    modes = {m: m.training for top in components.modules() for m in top.modules()}  # every submodule's own
    for top in components.modules():
        top.eval()
    vocab = components.vocab
    model, x, y = components.model, *fixed
    name = components.config.guide
    if components.trains_model:
        recon, recon_text = model.generate(components.guide.distribution(x, y).mean)
        prior_images, prior_text = model.generate(model.prior_distribution(len(x)).sample())
        images = torch.cat([x, recon, prior_images])
        captions = [f"data: {t}" for t in vocab.decode_batch(y)]
        for kind, texts in (("recon", recon_text), ("prior", prior_text)):  # JMVAE's VAE never trains p(y|z)
            captions += [f"{kind}: {t}" for t in vocab.decode_batch(texts)] if components.models_text else [kind] * len(texts)
        title, ncols = "rows: validation data, reconstructions from q(z|x), samples from p(z)", len(x)
        text_guide = getattr(components, "text_guide", None)
        if text_guide is not None:  # JMVAE: q(z|w) of the data's texts (paper Fig. 7)
            given_images, given_text = model.generate(text_guide.distribution(None, y).sample())
            images = torch.cat([images, given_images])
            captions += [f"q(z|w): {t}" for t in vocab.decode_batch(given_text)]
            title = ("rows: validation data, reconstructions from q(z|x,w), samples from p(z), "
                     "samples from q(z|w) of the data's texts")
    elif components.scheme.learns_prior:
        images, texts = model.generate(components.guide.distribution(None, torch.cat([y, y])).sample())
        captions, title, ncols = vocab.decode_batch(texts), "samples from the learned prior q(z)", len(x)
    else:
        y = y[:TEXTS_SHOWN]
        z = components.guide.distribution(None, y).sample((SAMPLES_PER_TEXT,)).transpose(0, 1)  # [T, S, D]
        generated, texts = model.generate(z)
        images = torch.cat([x[:TEXTS_SHOWN, None], generated], dim=1).flatten(0, 1)
        captions = []
        for given, decoded in zip(vocab.decode_batch(y), texts):
            captions += [f"given: {given}"] + vocab.decode_batch(decoded)
        title = f"{name}: a validation pair, then images and texts decoded from z ~ q(z|y) of its text"
        ncols = SAMPLES_PER_TEXT + 1
    save_grid(path, images, captions, ncols=ncols, title=title)
    for m, training in modes.items():
        m.training = training
