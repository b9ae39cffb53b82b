"""Runs survive interruption and bad numbers without losing work."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmvae_zoo.training.rundir import RunDir, RunError
from mmvae_zoo.training.schemes import Components
from mmvae_zoo.training.trainer import Interrupted, train
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, steps=6):
    config = tiny_config(tmp_path, steps=steps)
    config.train.checkpoint_every = 100  # only the final (or emergency) checkpoint
    return config


def _inject(monkeypatch, at_step, action):
    """Run ``action(loss)`` inside the loss computation of step ``at_step``."""
    original = Components.loss

    def loss(self, step, x, y, index=None):
        value, terms = original(self, step, x, y, index)
        return (action(value) if step == at_step else value), terms
    monkeypatch.setattr(Components, "loss", loss)


@pytest.mark.parametrize("lr_decay", ["constant", "cosine", "step"])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, monkeypatch, lr_decay):
    def config():
        c = _config(tmp_path)
        c.train.lr_decay = lr_decay  # a resumed run continues the schedule where it stopped
        return c
    straight = train(config(), RunDir(tmp_path / "straight"), device=torch.device("cpu"), progress=False)
    run = RunDir(tmp_path / "interrupted")

    def interrupt(loss):
        signal.raise_signal(signal.SIGINT)
        return loss
    _inject(monkeypatch, 2, interrupt)
    with pytest.raises(Interrupted, match="SIGINT received: stopped after step 3 .* --resume"):
        train(config(), run, device=torch.device("cpu"), progress=False)
    assert [p.name for p in run.checkpoint_paths()] == ["step_0000003.pt"]
    monkeypatch.undo()
    resumed = train(config(), run, device=torch.device("cpu"), resume=True, progress=False)
    _assert_same_parameters(straight, resumed)


def _assert_same_parameters(a, b):
    for name, module in a.trained().items():
        theirs = b.trained()[name].state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in module.state_dict().items()), name


def test_resuming_from_a_regular_checkpoint_is_bit_identical(tmp_path):
    """Checkpoints write sample grids, which draw random numbers: they must not shift the training stream."""
    config = tiny_config(tmp_path, steps=6)
    config.train.checkpoint_every = 3
    straight = train(config, RunDir(tmp_path / "straight"), device=torch.device("cpu"), progress=False)
    run = RunDir(tmp_path / "stopped")
    config.train.steps = 3
    train(config, run, device=torch.device("cpu"), progress=False)
    config.train.steps = 6  # the same run, asked to go on to step 6 (--resume --steps 6)
    resumed = train(config, run, device=torch.device("cpu"), resume=True, progress=False)
    _assert_same_parameters(straight, resumed)
    assert run.config().train.steps == 6


def test_a_run_keeps_its_latest_checkpoints_and_a_resumed_one_may_keep_every_one(tmp_path):
    config = tiny_config(tmp_path, steps=4)
    config.train.checkpoint_every, config.train.keep_checkpoints = 1, 2
    run = RunDir(tmp_path / "run")
    train(config, run, device=torch.device("cpu"), progress=False)
    assert run.checkpoint_steps() == [3, 4]
    config.train.steps, config.train.checkpoint_every, config.train.keep_checkpoints = 8, 2, 0  # --resume --steps 8 ...
    train(config, run, device=torch.device("cpu"), resume=True, progress=False)
    assert run.checkpoint_steps() == [3, 4, 6, 8]
    assert run.config().train.keep_checkpoints == 0


def test_resume_refuses_other_changes_naming_them(tmp_path):
    config = _config(tmp_path, steps=2)
    run = RunDir(tmp_path / "run")
    train(config, run, device=torch.device("cpu"), progress=False)
    config.train.batch_size, config.train.steps = 4, 3
    with pytest.raises(RunError, match=r"other settings \(train.batch_size\); resume it with the same flags \(only "
                                       r"--steps, --guide-steps, --checkpoint-every, --keep-checkpoints, --lr"):
        train(config, run, device=torch.device("cpu"), resume=True, progress=False)
    assert run.config().train.batch_size != 4 and run.latest_checkpoint()["step"] == 2


def test_nan_loss_stops_with_a_checkpoint_of_the_last_good_state(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "nan")
    _inject(monkeypatch, 3, lambda loss: loss * float("nan"))
    with pytest.raises(RunError, match="non-finite loss or gradient at step 4 .*log_px.*--skip-bad-steps"):
        train(_config(tmp_path), run, device=torch.device("cpu"), progress=False)
    state = run.latest_checkpoint()
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_diverged_run_resumes_with_the_advised_lower_rate_and_skipping(tmp_path, monkeypatch, capsys):
    """The NaN message says: --resume with a lower --lr or a --clip-grad-norm, or pass --skip-bad-steps."""
    run = RunDir(tmp_path / "nan")
    _inject(monkeypatch, 3, lambda loss: loss * float("nan"))
    with pytest.raises(RunError, match="--resume with a lower --lr or a --clip-grad-norm"):
        train(_config(tmp_path), run, device=torch.device("cpu"), progress=False)
    monkeypatch.undo()
    config = _config(tmp_path)
    config.train.lr, config.train.skip_bad_steps, config.train.clip_grad_norm = config.train.lr / 4, True, 1e-3
    train(config, run, device=torch.device("cpu"), resume=True, progress=False)
    out = capsys.readouterr().out
    assert "with train.lr 0.001 -> 0.00025" in out and "train.clip_grad_norm None -> 0.001" in out
    assert run.config() == config and run.latest_checkpoint()["step"] == 6
    state = run.latest_checkpoint()["optimizer"]
    assert all(group["lr"] == config.train.lr for group in state["param_groups"])


def test_bad_steps_can_be_skipped_and_counted(tmp_path, monkeypatch):
    config = _config(tmp_path)
    config.train.skip_bad_steps = True
    run = RunDir(tmp_path / "skip")
    _inject(monkeypatch, 1, lambda loss: loss * float("inf"))
    train(config, run, device=torch.device("cpu"), progress=False)
    assert run.metrics()[-1]["skipped"] == 1 and run.latest_checkpoint()["step"] == 6


def test_a_resumed_run_logs_each_step_once_as_an_uninterrupted_run_does(tmp_path, monkeypatch):
    """Killed after logging step 3 with its last checkpoint at step 2 (a crash, SIGKILL, a deleted
    checkpoint), the resumed run drops the records after step 2 and logs steps 3.. again: each step
    once, with the uninterrupted run's values, and the seconds going on from the checkpoint's."""
    config = _config(tmp_path)
    straight = RunDir(tmp_path / "straight")
    train(config, straight, device=torch.device("cpu"), progress=False)
    run = RunDir(tmp_path / "killed")
    config.train.checkpoint_every = 2  # then 100 again on resuming (as --resume --checkpoint-every 100 may)

    def crash(loss):
        raise RuntimeError("killed")
    _inject(monkeypatch, 3, crash)
    with pytest.raises(RuntimeError, match="killed"):
        train(config, run, device=torch.device("cpu"), progress=False)
    assert [r["step"] for r in run.metrics()] == [1, 2, 3] and run.checkpoint_steps() == [2]
    monkeypatch.undo()
    train(_config(tmp_path), run, device=torch.device("cpu"), resume=True, progress=False)
    records = run.metrics()
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in records] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in straight.metrics()]
    seconds = [r["seconds"] for r in records]
    assert seconds == sorted(seconds) and seconds[2] >= run.checkpoint_at(2)["seconds"] >= seconds[1]


@pytest.mark.parametrize("old_checkpoint", [False, True], ids=["counters in the checkpoint", "older checkpoint"])
def test_skipped_steps_and_seconds_go_on_after_a_stop(tmp_path, monkeypatch, old_checkpoint):
    """Step 2 skipped (a NaN) and the run stopped after step 3: resumed, it counts 1 skipped step and
    its seconds go on from the checkpoint's. A checkpoint written before it held them gives the last
    values logged by its step instead."""
    config = _config(tmp_path)
    config.train.skip_bad_steps = True
    run = RunDir(tmp_path / "run")

    original = Components.loss

    def loss(self, step, x, y, index=None):
        value, terms = original(self, step, x, y, index)
        if step == 1:
            value = value * float("nan")
        if step == 2:
            signal.raise_signal(signal.SIGINT)
        return value, terms
    monkeypatch.setattr(Components, "loss", loss)
    with pytest.raises(Interrupted, match="stopped after step 3 of 6"):
        train(config, run, device=torch.device("cpu"), progress=False)
    monkeypatch.undo()
    state = run.latest_checkpoint()
    assert (state["step"], state["skipped"]) == (3, 1) and state["seconds"] >= run.metrics()[-1]["seconds"] > 0
    stopped_at = state["seconds"]
    if old_checkpoint:
        del state["skipped"], state["seconds"]
        torch.save(state, run.checkpoint_paths()[-1])
        records = run.metrics()
        records[-1]["seconds"] = stopped_at = 1000.0  # what the logged record says is taken
        run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train(config, run, device=torch.device("cpu"), resume=True, progress=False)
    records = run.metrics()
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["skipped"] for r in records] == [0, 1, 1, 1, 1, 1]
    seconds = [r["seconds"] for r in records]
    assert seconds == sorted(seconds) and seconds[3] >= stopped_at
    assert run.latest_checkpoint()["skipped"] == 1 and run.latest_checkpoint()["seconds"] >= seconds[-1]


def test_sigterm_to_a_real_training_process_then_resume(tmp_path):
    env = {**os.environ, "MMVAE_DATA_ROOT": str(tmp_path / "data")}
    command = [sys.executable, str(ROOT / "run" / "svi.py"), "--preset", "tiny", "--steps", "40",
               "--no-progress", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "SIGTERM received: stopped after step" in err and "--resume" in err
    stopped_at = RunDir(tmp_path / "run").latest_checkpoint()["step"]
    assert 3 <= stopped_at < 40
    changed = subprocess.run(command + ["--resume", "--seed", "7"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert changed.returncode == 2 and "started with other settings (train.seed)" in changed.stderr
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert RunDir(tmp_path / "run").latest_checkpoint()["step"] == 40


def _adam_steps(monkeypatch, record):
    """Call ``record(optimizer)`` before every Adam step."""
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        record(self)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", step)


def test_gradient_clipping_bounds_each_update(tmp_path, monkeypatch):
    """The gradient the optimizer steps with has at most the clip norm (unclipped it is far larger)."""
    config = _config(tmp_path, steps=2)
    config.train.clip_grad_norm = 1e-3
    seen = []
    _adam_steps(monkeypatch, lambda opt: seen.append(float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.grad) for g in opt.param_groups for p in g["params"] if p.grad is not None])))))
    train(config, RunDir(tmp_path / "clipped"), device=torch.device("cpu"), progress=False)
    assert len(seen) == 2 and max(seen) <= 1e-3 * (1 + 1e-4)


def test_cosine_decay_anneals_the_rate_to_zero(tmp_path, monkeypatch):
    config = _config(tmp_path, steps=4)
    config.train.lr, config.train.lr_decay = 1e-3, "cosine"
    rates = []
    _adam_steps(monkeypatch, lambda opt: rates.append(opt.param_groups[0]["lr"]))
    train(config, RunDir(tmp_path / "cosine"), device=torch.device("cpu"), progress=False)
    assert rates == pytest.approx([1e-3, 1e-3 * (2 + 2**0.5) / 4, 5e-4, 1e-3 * (2 - 2**0.5) / 4])


@pytest.mark.parametrize("steps, low", [(4, 1), (20, 2)])
def test_step_decay_runs_the_last_tenth_at_a_tenth_of_the_rate(tmp_path, monkeypatch, steps, low):
    config = _config(tmp_path, steps=steps)
    config.train.lr, config.train.lr_decay = 1e-3, "step"
    rates = []
    _adam_steps(monkeypatch, lambda opt: rates.append(opt.param_groups[0]["lr"]))
    train(config, RunDir(tmp_path / "step"), device=torch.device("cpu"), progress=False)
    assert rates == pytest.approx([1e-3] * (steps - low) + [1e-4] * low)
