"""Data-parallel training under ``torchrun``: the process group, DDP, and the agreements between ranks.

    torchrun --nproc_per_node=4 run/svi.py --guide image ...

Without torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) nothing here talks to
another process and every helper is a no-op, so a single-process run is exactly what it was.

With N processes (ranks):

- each rank trains on its own slice of the global batch (``BatchLoader(rank=, world_size=)``);
  ``--batch-size`` is the batch *per process*, the global batch is ``batch_size * N``;
- the loss goes through ``LossModule`` (the trained networks only) wrapped in PyTorch's
  ``DistributedDataParallel``, which averages the gradients, so every rank takes the same
  optimizer step and all ranks hold identical parameters after every step. Frozen networks
  (the base VLVAE of text guides and the prior) are not registered in it: they have no
  gradients, are never synchronised and are loaded identically by every rank;
- batchnorm layers of the trained networks compute their batch statistics over the global
  batch (``torch.nn.SyncBatchNorm`` on CUDA, ``AllReduceBatchNorm`` elsewhere, as PyTorch's
  refuses CPU tensors). So N ranks with batch B compute the same loss and gradient as one
  process with batch N*B, and the running statistics are the same on every rank by
  construction; DDP's ``broadcast_buffers`` (rank 0's statistics copied over the others'
  at each forward, while every rank still normalised its own small shard) is switched off;
- a non-finite loss on any rank, or SIGINT/SIGTERM on any rank, is all-reduced into one
  decision, so all ranks skip (or stop at) the same step; only rank 0 writes the run
  directory, the others wait at a barrier where they must;
- rank 0 draws the random numbers a single process would, rank r > 0 its own stream; every
  rank's RNG state is stored in the checkpoint, so a run resumed with the same N continues
  exactly.

A run records the number of processes it was started with (``config.train.world_size``).
Resumed with another number M, it keeps the global batch (per-process batch
``batch_size * N / M``, refused if that is not an integer), so it reads exactly the same
global batches, and says so in one line; ranks without a stored RNG state draw fresh ones.
"""
from __future__ import annotations

import inspect
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from mmvae_zoo.training.rundir import RunError, rng_state, set_rng_state

TIMEOUT = timedelta(minutes=int(os.environ.get("MMVAE_DIST_TIMEOUT_MIN", "60")))  # rank 0 may render data meanwhile


@dataclass(frozen=True)
class Context:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def context() -> Context:
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    return context().is_main


def setup(device_name: str = "auto") -> torch.device:
    """Join torchrun's process group; this process's device (``cuda:LOCAL_RANK`` with NCCL, else CPU with gloo)."""
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError("--device cuda was asked for but CUDA is not available here; use --device cpu or auto")
        if device_name != "cuda":
            raise RunError(f"under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda (or auto), "
                           f"not {device_name}, and choose GPUs with CUDA_VISIBLE_DEVICES")
        if local_rank >= torch.cuda.device_count():
            raise RunError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                           f"start at most {torch.cuda.device_count()} processes per node (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        device = torch.device(device_name)
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if context().parallel:
        dist.barrier()


@contextmanager
def local_main_first():
    """The body runs on local rank 0 of each machine first (e.g. rendering a dataset cache), then on the others."""
    ctx = context()
    if ctx.parallel and ctx.local_rank != 0:
        dist.barrier()
    yield
    if ctx.parallel and ctx.local_rank == 0:
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks take the same branch)."""
    if not context().parallel:
        return flag
    t = torch.tensor([float(flag)], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (the global batch's loss and terms, for logging)."""
    if not context().parallel:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def rank_rng_states() -> dict:
    """Every rank's RNG state, for rank 0's checkpoint (``{}`` in a single process). All ranks must call it."""
    ctx = context()
    if not ctx.parallel:
        return {}
    states = [None] * ctx.world_size
    dist.all_gather_object(states, rng_state())
    return {"rank_rng": states}


def seed_rank(seed: int, state: dict | None) -> None:
    """Give rank r > 0 its own random stream: its stored state when resumed with the same number
    of processes, else a stream drawn from (seed, rank, step). Rank 0 keeps the single-process stream."""
    ctx = context()
    if not ctx.parallel or ctx.is_main:
        return
    if state is not None and state.get("world_size", 1) == ctx.world_size and "rank_rng" in state:
        set_rng_state(state["rank_rng"][ctx.rank])
        return
    step = state["step"] if state is not None else 0
    s = int(np.random.SeedSequence([seed, ctx.rank, step]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def per_rank_batch(config, stored) -> int:
    """This process's batch size; records the number of processes the run was started with.

    ``stored`` is the resumed run's config (None for a fresh run). A run started with N processes
    and resumed with M keeps its global batch ``batch_size * N``.
    """
    ctx = context()
    started = stored.train.world_size if stored is not None else ctx.world_size
    config.train.world_size = started
    b = config.train.batch_size
    if started == ctx.world_size:
        return b
    total = b * started
    if total % ctx.world_size:
        raise RunError(f"this run was started with {started} processes of batch {b} (global batch {total}), which "
                       f"does not split over {ctx.world_size} processes; resume with a number of processes that "
                       f"divides {total}")
    if ctx.is_main:
        print(f"run started with {started} processes, resumed with {ctx.world_size}: global batch {total} kept, "
              f"batch per process {b} -> {total // ctx.world_size}", flush=True)
    return total // ctx.world_size


class LossModule(nn.Module):
    """``components.loss`` as a module owning only the trained networks, for DDP to wrap.

    The frozen networks stay reachable through ``components`` but are not submodules, so DDP
    neither synchronises nor checks them.
    """

    def __init__(self, components):
        super().__init__()
        self.trained = nn.ModuleDict(components.trained())
        self.components = components  # a plain dataclass: not registered

    def forward(self, step: int, x, y, **kwargs):
        return self.components.loss(step, x, y, **kwargs)  # kwargs: the batch's ``index`` (cached q(z|x))


def data_parallel(components):
    """The per-step loss function ``(step, x, y, index=) -> (loss, terms)``: ``components.loss`` itself in
    a single process, else the DDP-wrapped ``LossModule`` (with batchnorm over the global batch).

    DDP runs without ``find_unused_parameters``: every trained parameter must get a gradient at
    every step (true of all guides of the VLVAE; a network with parts outside the loss needs it).
    """
    if not context().parallel:
        return components.loss
    device = next(p for m in components.trained().values() for p in m.parameters()).device
    for module in components.trained().values():
        sync_batchnorm(module, device)
    # buffers are identical by construction (see the module docstring): no copy from rank 0 at each forward
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS
                      else {"broadcast_buffers": False})
    return DistributedDataParallel(LossModule(components), device_ids=[device.index] if device.type == "cuda" else None,
                                   **no_buffer_sync)


_DDP_ARGS = inspect.signature(DistributedDataParallel.__init__).parameters


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make ``module``'s batchnorm layers (in place, keeping their parameter and buffer tensors)
    normalise over the global batch: ``torch.nn.SyncBatchNorm`` on CUDA, ``AllReduceBatchNorm`` otherwise."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, (AllReduceBatchNorm, nn.SyncBatchNorm)):
            setattr(module, name, AllReduceBatchNorm.like(child))
        else:
            sync_batchnorm(child, device)
    return module


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients over ranks in turn."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm(_BatchNorm):
    """Batchnorm whose training-mode statistics are those of the global batch, on any device.

    The per-rank sums are combined with a differentiable all-reduce (its backward all-reduces the
    gradients, as ``SyncBatchNorm``'s does), so forward and backward equal one process's batchnorm
    over the concatenated batch. Outside training, or without a process group, it is plain batchnorm.
    """

    @classmethod
    def like(cls, bn: _BatchNorm) -> "AllReduceBatchNorm":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var, new.num_batches_tracked = (bn.running_mean, bn.running_var,
                                                                      bn.num_batches_tracked)
        new.train(bn.training)
        return new

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and context().parallel):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() / x.shape[1]])
        sums = _SumOverRanks.apply(torch.cat([x.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1), factor)
        return out
