"""The training loop shared by every scheme (loading a trained run back is ``training.runs``)."""
from __future__ import annotations

import dataclasses
import math
import random
import signal
import threading
import time
import warnings

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from mmvae_zoo.datasets.loader import BatchLoader
from mmvae_zoo.datasets.registry import make_dataset
from mmvae_zoo.models.blocks import compile_blocks, set_precision
from mmvae_zoo.training import distributed, samples
from mmvae_zoo.training.config import RunConfig, resolve
from mmvae_zoo.training.rundir import RunDir, RunError, atomic_save, load_file, set_rng_state
from mmvae_zoo.training.runs import load_base, load_modules
from mmvae_zoo.training.schemes import Components, build, learning_rate


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX tiles)."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                        "_is_amx_tile_supported"))


def _save_base(components: Components, run: RunDir, base: RunDir) -> None:
    atomic_save({"source": str(base.path.resolve()), **{k: m.state_dict() for k, m in components.frozen().items()}},
                run.base_path)


def train(config: RunConfig, run: RunDir, *, device, base: RunDir | None = None, resume: bool = False,
          progress: bool = True, label: str | None = None) -> Components:
    """Train ``config.guide`` (with the model for base schemes) into ``run``; returns the components.

    ``resume`` continues ``run`` from its last checkpoint (from step 0 if it has none): the records
    logged after that step are dropped from metrics.jsonl, as they are logged again, and the
    elapsed seconds and skipped steps go on from the checkpoint's. ``label`` is the progress bar's
    description (default ``model/guide``).
    """
    seed_everything(config.train.seed)
    ctx = distributed.context()  # a single process unless started by torchrun (see training/distributed.py)
    components = build(resolve(config))  # network shapes are checked before any data is made
    with distributed.local_main_first():  # one process per machine renders a missing dataset cache
        train_set = make_dataset(config.data, "train", progress=progress and ctx.is_main)
        val_set = make_dataset(config.data, "val", progress=progress and ctx.is_main)
    stored = run.config() if resume else None
    batch_size = distributed.per_rank_batch(config, stored)
    loader = BatchLoader(train_set, batch_size, device, seed=config.train.seed, rank=ctx.rank,
                         world_size=ctx.world_size)  # bad sizes fail
    fixed = samples.fixed_batch(val_set, device)  # here, before the run directory is made
    state, counters = None, (0, 0.0)
    if resume:
        changed = _resume_changes(stored, config, run)
        state = run.latest_checkpoint() if run.checkpoint_paths() else None  # none yet: start over
        counters = _resumed_counters(state, run)
    else:
        run.check_fresh()
    if not components.trains_model:
        if run.base_path.exists():
            load_modules(components.frozen(), load_file(run.base_path, "base weights"), run.base_path)
        else:
            load_base(components, base)
    distributed.barrier()  # every rank has read the run directory before rank 0 writes to it
    if ctx.is_main:
        if not resume:
            run.create(config)  # only once the base fits
        elif changed:
            run.save_config(config)
        if not components.trains_model and not run.base_path.exists():
            _save_base(components, run, base)
    components.to(device)
    components.freeze()
    for m in components.modules():
        set_precision(m, config.train.precision)
        if config.train.compile:
            compile_blocks(m)
    if components.caches_image_posteriors and not loader.binarize:  # (a binarised x is random at each step)
        # q(z|x) of every training image, looked up by the steps: no random numbers drawn, the step's shapes
        components.cache_image_posteriors(loader.images, chunk=loader.batch_size)
    if config.train.precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("this CPU has no bf16 units (AVX-512 BF16 or AMX): --precision bf16 is emulated here, about "
                      "12x slower than fp32 on the cpu preset's VLVAE step (bench/bench_step.py --precision fp32 bf16)")
    params = [p for m in components.trained().values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.train.lr)
    start = 0
    if state is not None:
        load_modules(components.trained(), state, "the last checkpoint")
        optimizer.load_state_dict(state["optimizer"])  # its rate is reset by every step (--lr may have changed)
        set_rng_state(state["rng"])
        start = state["step"]
    distributed.seed_rank(config.train.seed, state)
    for m in components.trained().values():
        m.train()
    if resume and ctx.is_main:  # once all else is ready: the steps after the checkpoint are logged again
        run.keep_metrics_until(start)

    _fit(components, optimizer, loader, run, fixed, start, progress, counters, label)
    for m in components.modules():
        m.eval()
    return components


# What a resumed run may change: how long it trains, how it keeps checkpoints, and the remedies
# for a run that diverged (see ``_fit``). With --lr-decay cosine a new length stretches the rest
# of the schedule.
RESUMABLE_CHANGES = ("steps", "guide_steps", "checkpoint_every", "keep_checkpoints", "lr", "skip_bad_steps", "compile",
                     "precision", "clip_grad_norm")
RESUMABLE_FLAGS = ", ".join("--" + name.replace("_", "-") for name in RESUMABLE_CHANGES)


def _flat(config: RunConfig) -> dict:
    """Settings by dotted name (``train.lr``)."""
    return {f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in dataclasses.asdict(config).items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])}


def _resume_changes(stored: RunConfig, config: RunConfig, run: RunDir) -> list[str]:
    """The settings ``config`` changes in the resumed run; a RunError naming any outside ``RESUMABLE_CHANGES``."""
    old, new = _flat(stored), _flat(config)
    changed = [name for name in new if new[name] != old.get(name)]
    refused = [name for name in changed if name.removeprefix("train.") not in RESUMABLE_CHANGES]
    if refused:
        raise RunError(f"{run.path} was started with other settings ({', '.join(refused)}); resume it with the "
                       f"same flags (only {RESUMABLE_FLAGS} may change)")
    for name in changed:
        print(f"resuming {run.path} with {name} {old[name]} -> {new[name]}")
    return changed


def _resumed_counters(state: dict | None, run: RunDir) -> tuple[int, float]:
    """The skipped steps and elapsed seconds at the checkpoint ``state`` (none: 0 and 0), from which a
    resumed run counts on: stored in it, or, in checkpoints written before they were, the last
    values logged by its step (0 where none was)."""
    if state is None:
        return 0, 0.0
    if "skipped" in state and "seconds" in state:
        return int(state["skipped"]), float(state["seconds"])
    logged = [record for record in run.metrics() if record["step"] <= state["step"]]
    last = logged[-1] if logged else {}
    return (int(state.get("skipped", last.get("skipped", 0))),
            float(state.get("seconds", last.get("seconds", 0.0))))


class Interrupted(RunError):
    """Training stopped on SIGINT or SIGTERM after checkpointing the last finished step. ``stopped``
    says what happened without the advice, for a command to add the exact one of its own."""

    def __init__(self, stopped: str):
        super().__init__(f"{stopped}; continue with the same command and --resume")
        self.stopped = stopped


class _StopSignals:
    """While active, SIGINT and SIGTERM only ask the loop to stop after the current step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _finite_gradients(params) -> bool:
    """Whether every gradient is finite, read in one device sync (a NaN or inf makes its tensor's norm one)."""
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def _fit(components: Components, optimizer, loader: BatchLoader, run: RunDir, fixed, start: int,
         progress: bool, counters: tuple[int, float] = (0, 0.0), label: str | None = None) -> None:
    """Steps ``start`` .. ``num_steps``: log, checkpoint, and stop safely on signals and bad numbers.

    A non-finite loss or gradient stops training with a checkpoint of the last good state (the
    optimizer has not stepped on it), unless ``skip_bad_steps`` counts and skips such steps.
    ``counters`` are the skipped steps and elapsed seconds so far (a resumed run's), which the
    records and checkpoints count on from.
    """
    config, t = components.config, components.config.train
    params = [p for group in optimizer.param_groups for p in group["params"]]
    steps, (skipped, elapsed) = config.num_steps, counters
    ctx = distributed.context()
    step_loss = distributed.data_parallel(components)  # components.loss in a single process

    def checkpoint(step):  # every rank calls it at the same steps; rank 0 writes
        ranks_rng = distributed.rank_rng_states()
        if ctx.is_main:
            run.save_checkpoint(step, {**{k: m.state_dict() for k, m in components.trained().items()},
                                       "optimizer": optimizer.state_dict(), "world_size": ctx.world_size,
                                       "skipped": skipped, "seconds": round(time.time() - started, 2),
                                       **ranks_rng}, keep=t.keep_checkpoints)
            devices = [fixed[0].device] if fixed[0].is_cuda else []
            with torch.random.fork_rng(devices=devices):  # sampling leaves the training stream as the checkpoint has it
                samples.save(components, fixed, run.samples / f"step_{step:07d}.png")
        distributed.barrier()

    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not (progress and ctx.is_main),
               desc=label or f"{config.model}/{config.guide}", dynamic_ncols=True)
    started = time.time() - elapsed  # the seconds logged go on from a resumed run's
    with _StopSignals() as stop:
        for step in bar:
            x, y = loader.batch(step)
            with pyro.validation_enabled(step == start):  # shapes and supports are checked on the first step only
                loss, terms = step_loss(step, x, y, index=loader.indices(step))  # index: rows of a q(z|x) cache
            optimizer.zero_grad(set_to_none=True)
            finite = not distributed.any_rank(not math.isfinite(loss.item()))  # all ranks skip or stop together
            if finite:
                loss.backward()  # under DDP: gradients averaged over ranks, the same on each
            if not (finite and _finite_gradients(params)):
                if not t.skip_bad_steps:
                    checkpoint(step)
                    raise RunError(f"non-finite loss or gradient at step {step + 1} (loss {loss.item()}, terms "
                                   f"{ {k: round(v.item(), 3) for k, v in terms.items()} }); the last good state is "
                                   f"checkpointed in {run.checkpoints}: --resume with a lower --lr or a "
                                   f"--clip-grad-norm, or pass --skip-bad-steps")
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
            else:
                if t.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, t.clip_grad_norm)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(t, step, steps)
                optimizer.step()
            done = step + 1
            if done % t.log_every == 0 or done == steps:
                values = distributed.mean_over_ranks({"loss": loss.item(), **{k: v.item() for k, v in terms.items()}})
                record = {"step": done, **values, "skipped": skipped, "seconds": round(time.time() - started, 2)}
                if ctx.is_main:
                    run.log(record)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "seconds", "skipped")})
            stopping = distributed.any_rank(stop.received is not None)  # all ranks stop after the same step
            if done % t.checkpoint_every == 0 or done == steps or stopping:
                checkpoint(done)
            if stopping:
                raise Interrupted(f"{stop.received or 'a stop signal to another process'} received: stopped after "
                                  f"step {done} of {steps} with a checkpoint in {run.checkpoints}")
