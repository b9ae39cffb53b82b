"""Image grids with captions (decoded or given text), saved as PNG."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: saving a grid leaves a notebook's backend alone


def save_grid(path, images, captions=None, ncols: int = 8, title: str | None = None,
              words_per_line: int = 4) -> Path:
    """Save images ([N, C, H, W] in [0, 1], torch or numpy) in a grid, each with its caption below.

    Captions are wrapped every ``words_per_line`` words, so a 9-word text stays legible.
    """
    images = images.detach().cpu().numpy() if hasattr(images, "detach") else images
    n = len(images)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(1.7 * ncols, 2.15 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        image = images[k].transpose(1, 2, 0)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        if captions is not None:
            words = str(captions[k]).split()
            lines = (" ".join(words[i:i + words_per_line]) for i in range(0, len(words), words_per_line))
            ax.set_title("\n".join(lines), fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
