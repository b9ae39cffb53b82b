"""Batches on the training device, drawn by step number.

The dataset's uint8 arrays are copied to the device once (on CUDA the whole Two Objects
set fits easily); each step only indexes them and converts the images to float there, so
no per-step host work remains for a worker process to do ahead. The batch of step s is a
pure function of (seed, s): epoch e = s // steps_per_epoch reads a permutation drawn from
seed + e, so resuming at any step sees exactly the batches an uninterrupted run would.
Under data parallelism (``rank``, ``world_size``) each rank takes its own slice of the
global batch of ``batch_size * world_size``.
"""
from __future__ import annotations

import numpy as np
import torch


class BatchLoader:
    def __init__(self, dataset, batch_size: int, device="cpu", seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        n = len(dataset)
        if batch_size < 1:
            raise ValueError(f"the batch size must be a positive integer, got {batch_size}; pass --batch-size 1 or more")
        global_batch = batch_size * world_size
        if n < global_batch:
            raise ValueError(f"the dataset has {n} items, fewer than one batch of {global_batch}; "
                             f"use a smaller --batch-size or more data")
        self.images = torch.from_numpy(np.array(dataset.images)).to(device)
        self.tokens = torch.from_numpy(np.array(dataset.tokens)).to(device)
        self.binarize = getattr(dataset, "binarize", None) == "dynamic"
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = n // global_batch
        self._epoch, self._order = None, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            n = self.images.shape[0]
            order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
                     if self.shuffle else torch.arange(n))
            self._epoch, self._order = epoch, order.to(self.images.device)
        return self._order

    def indices(self, step: int) -> torch.Tensor:
        """The dataset indices (long [B], on the device) of training step ``step``'s batch: this rank's slice."""
        epoch, i = divmod(step, self.steps_per_epoch)
        start = (i * self.world_size + self.rank) * self.batch_size
        return self._permutation(epoch)[start:start + self.batch_size]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float [B, C, H, W] in [0, 1], tokens long [B, L]) of training step ``step``: the
        items ``indices(step)``."""
        index = self.indices(step)
        x = self.images[index].float().div_(255)
        if self.binarize:
            gen = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + step)
            x = torch.bernoulli(x, generator=gen)
        return x, self.tokens[index]

    def __iter__(self):
        """One pass over the data in order (no shuffling), for evaluation; the last batch may be short."""
        for start in range(0, self.images.shape[0], self.batch_size):
            yield self.images[start:start + self.batch_size].float().div_(255), self.tokens[start:start + self.batch_size]
