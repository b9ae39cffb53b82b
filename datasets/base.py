"""What every dataset of the zoo is: image + text pairs held as uint8 and int64 arrays."""
from __future__ import annotations

import numpy as np
import torch

from .vocab import Vocabulary


class ImageTextDataset(torch.utils.data.Dataset):
    """``images`` uint8 [N, C, H, W], ``tokens`` int64 [N, text_length] (0 = padding), a ``vocab``.

    ``dataset[i]`` is (float32 image [C, H, W] in [0, 1] passed through ``transform``, long tokens),
    torchvision style; batch loaders read the arrays directly (``datasets.loader``).
    """

    vocab: Vocabulary
    text_length: int
    images: np.ndarray
    tokens: np.ndarray
    transform = None

    def text(self, i: int) -> str:
        return self.vocab.decode(self.tokens[i].tolist())

    def __len__(self) -> int:
        return len(self.tokens)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as float32 in [0, 1], before ``transform``."""
        return torch.from_numpy(self.images[i].astype(np.float32) / 255)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.image(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.tokens[i].astype(np.int64))
