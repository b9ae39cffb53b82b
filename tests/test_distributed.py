"""Data-parallel training: 2 CPU processes (gloo, under torchrun) against one process on the same global batch.

What is compared, and why it proves the data parallelism correct:

- Both runs draw *common random numbers*: every reparameterised normal draw of step s is one
  tensor for the whole global batch, made from a generator seeded by s, of which each rank
  takes its own rows (``_common_standard_normal``); dropout is off. So the two runs compute the
  same function of the same numbers, and differ only in how the work is split and summed.
- The gradient of the first step, on each rank after DDP's averaging, equals the single
  process's gradient over the global batch of 8 (float tolerance). That is the whole
  step: each rank read its own half of the global batch (no overlap, nothing missing),
  batchnorm normalised over the global batch in forward and backward, the per-rank mean
  losses were averaged, not summed.
- The logged loss and terms of every step match (the logged values are means over ranks),
  and the parameters after the last step match (those with a real gradient; see below): the
  same updates were applied, step after step.
- Both ranks end with bit-identical parameters and batchnorm buffers (``torch.equal``).
- Agreement: a NaN loss on rank 1 only (step 3) is skipped by both ranks (counted once, and the
  run goes on, with DDP having seen a forward without a backward); SIGTERM to rank 1 only
  (during step 4) stops both ranks after step 4, with rank 0's checkpoint holding both ranks'
  RNG states and ``world_size`` 2. Only rank 0 wrote the metrics (one line per step).
- Resumed by a single process, the 2-process run says so in one line, keeps the global batch
  of 8 (batch per process 4 -> 8) and finishes.

This file is also the torchrun worker: ``python -m torch.distributed.run ... tests/test_distributed.py OUT ARGS``.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NAN_STEP, SIGNAL_STEP = 2, 3  # 0-based steps at which rank 1 (of 2; the only rank of 1) misbehaves
_KEY = {"step": 0, "draw": 0, "components": None}


def _svi():
    spec = importlib.util.spec_from_file_location("svi_under_test", ROOT / "run" / "svi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _world():
    import torch.distributed as dist
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _common_standard_normal(shape, dtype=None, device=None):
    """This rank's rows of one global draw per (step, draw): the same numbers for datapoint i of the global batch."""
    rank, world = _world()
    generator = torch.Generator().manual_seed(1000 * _KEY["step"] + _KEY["draw"])
    _KEY["draw"] += 1
    full = torch.randn((shape[0] * world,) + tuple(shape[1:]), generator=generator, dtype=dtype)
    return full[rank * shape[0]:(rank + 1) * shape[0]].to(device)


def _patch(setattr_, compare: bool = True):
    """Common random numbers, no dropout, misbehaviour of the last rank, first gradients recorded.

    With ``compare`` false only the capture of the networks, and SIGTERM to the last rank during the
    (0-based) step ``DDP_TEST_INTERRUPT`` if set.
    """
    from mmvae_zoo.training.schemes import Components

    svi = _svi()
    original_preset, original_loss, original_step = svi.preset, Components.loss, torch.optim.Adam.step
    first_grads = []

    def preset(name, dataset="two_objects", model="vlvae"):
        config = original_preset(name, dataset, model)
        config.net.dropout = 0.0
        return config

    def loss(self, step, x, y, index=None):
        _KEY.update(step=step, draw=0, components=self)
        value, terms = original_loss(self, step, x, y, index)
        rank, world = _world()
        if compare and rank == world - 1 and step == NAN_STEP:
            value = value * float("nan")
        signal_step = SIGNAL_STEP if compare else int(os.environ.get("DDP_TEST_INTERRUPT", -1))
        if rank == world - 1 and step == signal_step and world > 1:
            signal.raise_signal(signal.SIGTERM)
        return value, terms

    def step(self, *args, **kwargs):
        if not first_grads:
            first_grads.extend(p.grad.clone() for group in self.param_groups for p in group["params"])
        return original_step(self, *args, **kwargs)

    setattr_(Components, "loss", loss)
    if compare:
        setattr_(svi, "preset", preset)
        setattr_(torch.optim.Adam, "step", step)
        setattr_(torch.distributions.normal, "_standard_normal", _common_standard_normal)
    return svi, first_grads


def _worker(out: str, argv: list[str]) -> int:
    torch.set_num_threads(1)
    svi, first_grads = _patch(setattr, compare=not os.environ.get("DDP_TEST_PLAIN"))
    rc = svi.main(argv)
    components = _KEY["components"]
    state = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in components.trained().items()}
    torch.save({"rc": rc, "state": state, "first_grads": first_grads}, Path(out) / f"rank{os.environ['RANK']}.pt")
    return rc


def _torchrun(out: Path, args: list[str], **env):
    """Both ranks' results of this file run as the worker of a 2-process torchrun on a free port."""
    from tests.helpers import python_path  # here, not at the top: the workers import nothing of ours before svi.py

    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": python_path(str(ROOT)), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__)), str(out), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=out)
    return done, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _args(out, batch_size, steps):
    return ["--preset", "tiny", "--batch-size", str(batch_size), "--steps", str(steps), "--skip-bad-steps",
            "--no-progress", "--device", "cpu", "--out", str(out)]


def _close(a, b, rtol=1e-4, atol=1e-6):
    """Relative to ``b``, plus float noise for values that are zero but for rounding (a bias before a norm layer)."""
    return (a - b).norm() <= rtol * b.norm() + atol


def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path, monkeypatch, capsys):
    from mmvae_zoo.training.rundir import RunDir

    # one process, global batch 8, 4 steps (also renders the dataset cache the workers read)
    svi, reference_grads = _patch(monkeypatch.setattr)
    reference = RunDir(tmp_path / "one")
    assert svi.main(_args(reference.path, 8, 4)) == 0
    reference_state = _KEY["components"]

    # two processes, batch 4 each, 5 steps: NaN on rank 1 at step 3, SIGTERM to rank 1 during step 4
    run = RunDir(tmp_path / "two")
    done, ranks = _torchrun(tmp_path, _args(run.path, 4, 5))
    assert done.returncode != 0, done.stderr  # torchrun reports the interrupted workers
    assert "interrupted: a stop signal to another process received: stopped after step 4" in done.stderr, done.stderr
    assert [r["rc"] for r in ranks] == [130, 130]

    # (a) both ranks hold bit-identical parameters and batchnorm statistics, and rank 0 saved them
    checkpoint = run.latest_checkpoint()
    assert checkpoint["step"] == 4 and checkpoint["world_size"] == 2 and len(checkpoint["rank_rng"]) == 2
    for name, tensors in ranks[0]["state"].items():
        assert tensors.keys() == ranks[1]["state"][name].keys()
        for key, value in tensors.items():
            assert torch.equal(value, ranks[1]["state"][name][key]), (name, key)
            assert torch.equal(value, checkpoint[name][key]), (name, key)
    assert any("running_var" in k for k in ranks[0]["state"]["model"])  # batchnorm buffers were compared

    # (b) the first step's averaged gradient is the single process's gradient over the global batch
    # (measured: ~1e-6 relative; gradients that are zero but for rounding differ by ~1e-7 of the total norm)
    assert len(ranks[0]["first_grads"]) == len(reference_grads) > 0
    scale = torch.cat([g.flatten() for g in reference_grads]).norm()
    for rank in ranks:
        for mine, theirs in zip(rank["first_grads"], reference_grads):
            assert _close(mine, theirs, atol=1e-5 * scale), ((mine - theirs).norm(), theirs.norm(), scale)
    # every logged step matches (step 3: both skipped the NaN), and so do the final parameters
    one, two = reference.metrics(), run.metrics()
    assert [r["step"] for r in two] == [1, 2, 3, 4] == [r["step"] for r in one]  # one writer
    for a, b in zip(two, one):
        assert a["skipped"] == b["skipped"] == (a["step"] >= 3)
        for key in ("loss", "log_px", "log_py", "kl"):
            assert (math.isnan(a[key]) and math.isnan(b[key])) or math.isclose(a[key], b[key], rel_tol=1e-5), \
                (a["step"], key, a[key], b[key])
    # Parameters with a real gradient match after the last step. Those whose gradient is zero but for
    # rounding (a bias before a norm layer: the output does not depend on it) are left out: Adam scales
    # their rounding noise up to steps of the learning rate's size, in either direction.
    named = [(name, key, p) for name, m in reference_state.trained().items() for key, p in m.named_parameters()]
    assert len(named) == len(reference_grads)
    for (name, key, value), grad in zip(named, reference_grads):
        if grad.norm() > 1e-5 * scale:  # measured: within 1e-5 relative
            assert _close(ranks[0]["state"][name][key], value.detach()), (name, key)

    # a single process resumes the 2-process run: same global batch, said in one line
    capsys.readouterr()
    assert svi.main(_args(run.path, 4, 5) + ["--resume"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "resumed with" in line]
    assert said == ["run started with 2 processes, resumed with 1: global batch 8 kept, batch per process 4 -> 8"]
    assert run.latest_checkpoint()["step"] == 5 and json.loads(run.config_path.read_text())["train"]["world_size"] == 2


@pytest.mark.slow
def test_two_process_run_interrupted_and_resumed_with_two_processes_ends_bit_identical(tmp_path):
    """Real random draws and dropout: each rank's RNG state comes back from rank 0's checkpoint (~1 min).

    The stop falls between the regular checkpoints (every 2 steps): a checkpoint's sample grid draws
    from rank 0's generator after its state was saved, so a resume from a regular checkpoint is not
    bit-identical, with one process as with several (samples.save would need torch.random.fork_rng).
    """
    args = ["--preset", "tiny", "--batch-size", "4", "--steps", "6", "--no-progress", "--device", "cpu", "--out"]
    _, straight = _torchrun(tmp_path / "straight", args + ["run"], DDP_TEST_PLAIN="1")
    done, _ = _torchrun(tmp_path / "stopped", args + ["run"], DDP_TEST_PLAIN="1", DDP_TEST_INTERRUPT="2")
    assert "stopped after step 3" in done.stderr, done.stderr
    done, resumed = _torchrun(tmp_path / "stopped", args + ["run", "--resume"], DDP_TEST_PLAIN="1")
    assert done.returncode == 0 and "resumed with" not in done.stdout, done.stderr
    for rank in resumed:
        for name, tensors in straight[0]["state"].items():
            assert all(torch.equal(v, rank["state"][name][k]) for k, v in tensors.items()), name


def test_resuming_with_a_number_of_processes_that_does_not_split_the_global_batch_is_refused(monkeypatch):
    from mmvae_zoo.training import distributed
    from mmvae_zoo.training.config import preset
    from mmvae_zoo.training.rundir import RunError

    stored, config = preset("tiny"), preset("tiny")
    stored.train.batch_size = config.train.batch_size = 3
    stored.train.world_size = 2
    monkeypatch.setattr(distributed, "context", lambda: distributed.Context(rank=0, world_size=4))
    with pytest.raises(RunError, match="started with 2 processes of batch 3 \\(global batch 6\\).* divides 6"):
        distributed.per_rank_batch(config, stored)
    stored.train.batch_size = config.train.batch_size = 6
    assert distributed.per_rank_batch(config, stored) == 3 and config.train.world_size == 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(_worker(sys.argv[1], sys.argv[2:]))
