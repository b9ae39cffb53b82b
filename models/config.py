"""The network settings every model's config shares (``NetConfig``).

``models.vlvae.VLVAEConfig`` and ``models.jmvae.JMVAEConfig`` inherit these fields and add their own;
the JMVAE overrides the defaults of ``image_shape``, ``text_length``, ``z_dim`` and ``hidden``
(its MNIST networks). A run's ``config.json`` holds them by name under ``net``, so the order of the
fields is no part of the format.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NetConfig:
    """Data shapes and the image networks' settings (defaults: the VLVAE paper's, appendix 5.1)."""

    image_shape: tuple = (3, 112, 112)
    vocab: list = field(default_factory=list)  # words without padding (see datasets.vocab)
    text_length: int = 9
    z_dim: int = 50
    hidden: int = 200          # width of the encodings (VLVAE: also shared decoder output, GRU states)
    channels: int = 32         # width of the first conv layer; doubled at each downsampling
    num_down: int = 2          # stride-2 convolutions in the image encoder (upsamplings in the decoder)
    stem_kernel: int = 7
    stem_stride: int = 1       # > 1 strides the first conv: cheaper, for small presets
    grid: int = 10             # image decoder starts from 10 channels of grid x grid (1000 units)
    concentration: float = 100.0  # c in the Beta likelihood Beta(c * alpha, c * (1 - alpha))

    def __post_init__(self):
        self.image_shape = tuple(self.image_shape)
