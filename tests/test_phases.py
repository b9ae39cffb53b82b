"""The main command's two phases (the base VLVAE, then q_Agg), stopped and resumed as a user does.

``python run/svi.py --model vlvae --guide text_agg`` trains the base VLVAE first when it is not
trained to the end, then q_Agg. Stopped in either phase, it prints the command that continues it
(the same with --resume), and that command finishes the stopped phase and starts the next. Each
state of the two runs is tried here: base partly trained and q_Agg not started (a real process,
stopped with SIGTERM and resumed with the printed command), base trained and q_Agg not started,
q_Agg partly trained, q_Agg holding its base weights with the base run gone, both trained, and
nothing there at all.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmvae_zoo.training.rundir import RunDir
from tests.helpers import bare_env

ROOT = Path(__file__).resolve().parents[1]
MAIN = ["--model", "vlvae", "--guide", "text_agg", "--preset", "tiny"]
BASE, AGG = Path("runs/vlvae-image-tiny"), Path("runs/vlvae-text_agg-tiny")


def _svi():
    spec = importlib.util.spec_from_file_location("svi_phases", ROOT / "run" / "svi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _steps(run: RunDir) -> list[int]:
    return [record["step"] for record in run.metrics()]


def _snapshot(folder: Path) -> dict:
    """Every file's bytes and mtime under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder where the main command ran to the end with the tiny preset (both runs, 4 steps each),
    and a copy of its runs to restore them from."""
    folder = tmp_path_factory.mktemp("main")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMVAE_DATA_ROOT", str(tmp_path_factory.getbasetemp() / "data"))  # as conftest.py sets it
        patch.chdir(folder)
        assert _svi().main(MAIN + ["--no-progress"]) == 0
    shutil.copytree(folder / "runs", folder / "saved")
    return folder


@pytest.fixture
def trained_here(trained, monkeypatch):
    """``trained`` as it was made, as the working directory (in the same place: q_Agg's config names
    its base by absolute path, and a resumed run may not change it)."""
    shutil.rmtree(trained / "runs")
    shutil.copytree(trained / "saved", trained / "runs")
    monkeypatch.chdir(trained)
    return trained


def test_stopped_in_the_base_phase_the_printed_command_finishes_both(tmp_path):
    """SIGTERM while the base trains; the last line names the exact command; run as printed, it
    finishes the base, then trains q_Agg in its run directory; each run logs each step once."""
    env = {**bare_env(os.environ["MMVAE_DATA_ROOT"]),  # the session's rendered data; as many threads as this test
           **{name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}}
    command = [sys.executable, str(ROOT / "run" / "svi.py"), *MAIN, "--steps", "40", "--checkpoint-every", "10"]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=err)
        deadline = time.time() + 120
        while not list((tmp_path / BASE / "checkpoints").glob("step_*.pt")) and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130, (tmp_path / "err").read_text()
    said, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert "this command trains in 2 phases, one after the other:\n" \
           "  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: train 40 steps\n" \
           "  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: train 4 steps\n" in said
    assert "phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: " in err  # the progress bar
    last = err.strip().splitlines()[-1]
    stopped, advice = last.split("; continue with: ")
    assert stopped.startswith("interrupted in phase 1/2, base VLVAE (image): SIGTERM received: stopped after step ")
    assert shlex.split(advice) == command + ["--resume"]
    base = RunDir(tmp_path / BASE)
    stopped_at = base.latest_checkpoint()["step"]
    assert 10 <= stopped_at < 40 and not (tmp_path / AGG).exists()
    assert f"stopped after step {stopped_at} of 40 with a checkpoint in runs/vlvae-image-tiny/checkpoints" in stopped

    resumed = subprocess.run(shlex.split(advice), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: resume from step {stopped_at}: " \
           f"{40 - stopped_at} of 40 steps left\n" in resumed.stdout
    assert "  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: train 4 steps\n" in resumed.stdout
    assert f"  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: trained steps {stopped_at + 1}-40 in" \
           in resumed.stdout  # the summary
    assert "  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: trained steps 1-4 in" in resumed.stdout
    assert "phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: " in resumed.stderr  # its progress bar
    agg = RunDir(tmp_path / AGG)
    assert base.latest_checkpoint()["step"] == 40 and agg.latest_checkpoint()["step"] == 4 and agg.base_path.exists()
    assert _steps(base) == list(range(1, 41)) and _steps(agg) == [1, 2, 3, 4]
    seconds = [record["seconds"] for record in base.metrics()]
    assert seconds == sorted(seconds)  # the clock went on from the checkpoint's


def test_resumed_when_both_are_trained_it_says_so_and_trains_nothing(trained_here, monkeypatch, capsys):
    svi = _svi()
    before = _snapshot(trained_here)
    monkeypatch.setattr(svi, "train", lambda *a, **k: pytest.fail("trained"))
    assert svi.main(MAIN + ["--no-progress", "--resume"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: nothing to train (trained to step 4)",
        "  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: nothing to train (trained to step 4)",
        "nothing to train: every phase is trained to the end (runs/vlvae-image-tiny, runs/vlvae-text_agg-tiny); "
        "load runs/vlvae-text_agg-tiny with mmvae_zoo.training.runs.load_run('runs/vlvae-text_agg-tiny'), or train it "
        "longer with --resume and a larger --guide-steps"]
    assert _snapshot(trained_here) == before


def test_resumed_before_q_agg_started_it_starts_q_agg(trained_here, capsys):
    """The base trained to the end, q_Agg never made (stopped between the phases): --resume reuses the
    base as it is and makes the q_Agg run."""
    shutil.rmtree(AGG)
    base = _snapshot(trained_here / BASE)
    assert _svi().main(MAIN + ["--no-progress", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: nothing to train (trained to step 4, " \
           "reused)\n  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: train 4 steps\n" in out
    assert _snapshot(trained_here / BASE) == base
    agg = RunDir(AGG)
    assert agg.latest_checkpoint()["step"] == 4 and _steps(agg) == [1, 2, 3, 4] and agg.base_path.exists()


def test_resumed_in_q_agg_it_logs_each_step_once(trained_here, capsys):
    """q_Agg stopped after its checkpoint of step 2 but with steps 3 and 4 logged (killed, say): the
    resumed run logs them again, in their place, with the values of the uninterrupted run."""
    agg = RunDir(AGG)
    straight = agg.metrics()
    (agg.checkpoints / "step_0000004.pt").unlink()
    base = _snapshot(trained_here / BASE)
    assert _svi().main(MAIN + ["--no-progress", "--resume"]) == 0
    assert "  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: resume from step 2: 2 of 4 steps left\n" \
        in capsys.readouterr().out
    assert _snapshot(trained_here / BASE) == base
    resumed = agg.metrics()
    assert _steps(agg) == [1, 2, 3, 4] and agg.latest_checkpoint()["step"] == 4
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
           [{k: v for k, v in r.items() if k not in drop} for r in straight]
    seconds = [r["seconds"] for r in resumed]
    assert seconds == sorted(seconds)


def test_q_agg_resumes_from_its_own_base_weights_when_the_base_run_is_gone(trained_here, capsys):
    shutil.rmtree(BASE)
    (RunDir(AGG).checkpoints / "step_0000004.pt").unlink()
    assert _svi().main(MAIN + ["--no-progress", "--resume"]) == 0
    assert "  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: nothing to train (not needed: " \
           "runs/vlvae-text_agg-tiny holds the base weights it was fitted to)\n" in capsys.readouterr().out
    assert not BASE.exists() and RunDir(AGG).latest_checkpoint()["step"] == 4


def test_resume_with_nothing_to_resume_says_how_to_start(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    svi = _svi()
    assert svi.main(MAIN + ["--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    start = svi.command_line(MAIN + ["--no-progress"], resume=False)
    assert err == [f"error: runs/vlvae-text_agg-tiny is not a run directory (no config.json), nor is its base "
                   f"runs/vlvae-image-tiny: nothing to resume; start it with: {start}"]
    assert start.endswith(" --model vlvae --guide text_agg --preset tiny --no-progress")
    assert not list(tmp_path.iterdir())


def test_the_command_line_to_paste(monkeypatch):
    svi = _svi()
    monkeypatch.setattr(sys, "argv", [str(ROOT / "run" / "svi.py")])
    monkeypatch.setattr(svi, "python_name", lambda: "python")
    monkeypatch.chdir(ROOT)
    assert svi.command_line(["--guide", "text_agg", "--out", "my runs/a"], resume=True) == \
        f"python {ROOT / 'run' / 'svi.py'} --guide text_agg --out 'my runs/a' --resume"
    monkeypatch.setattr(sys, "argv", ["pytest"])  # main() called in-process: the script relative to here
    assert svi.command_line(["--resu", "--steps", "8"], resume=False) == "python run/svi.py --steps 8"
    assert svi.command_line(["--resume"], resume=True) == "python run/svi.py --resume"
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):  # under torchrun
        monkeypatch.setenv(name, value)
    assert svi.command_line([], resume=True) == "torchrun --standalone --nproc_per_node=2 run/svi.py --resume"


@pytest.mark.parametrize("flags, lines", [
    ([], ["phase 1/2: base VLVAE (image) -> runs/vlvae-image-cpu: train 11000 steps, about 95 minutes on 2 CPU "
          "cores as measured",
          "phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-cpu: train 6000 steps, about 7 minutes on 2 CPU "
          "cores as measured"]),
    (["--batch-size", "32", "--guide-steps", "100"],  # not as measured: steps only
     ["phase 1/2: base VLVAE (image) -> runs/vlvae-image-cpu: train 11000 steps",
      "phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-cpu: train 100 steps"]),
])
def test_the_phases_are_announced_with_their_steps_and_measured_times(flags, lines, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    svi = _svi()
    argv = ["--guide", "text_agg", "--preset", "cpu", *flags]
    args = svi.parser().parse_args(argv)
    args.argv = argv
    config = svi.make_config(args, torch.device("cpu"))
    svi.announce(svi.plan(config, Path("runs/vlvae-text_agg-cpu"), args), torch.device("cpu"))
    assert capsys.readouterr().out.splitlines() == ["this command trains in 2 phases, one after the other:"] + \
        ["  " + line for line in lines]
    assert not list(tmp_path.iterdir())
