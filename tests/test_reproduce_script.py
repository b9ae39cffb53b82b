"""run/reproduce_vlvae.sh: which runs it trains and which evaluations it runs, with ``python`` replaced by a stub
that logs its arguments and makes the --out folder (nothing is trained)."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB = """#!/usr/bin/env bash
echo "$*" >> "{log}"
previous=""
for arg in "$@"; do [ "$previous" = --out ] && mkdir -p "$arg"; previous="$arg"; done
"""


def reproduce(tmp_path, objectives=None) -> list[str]:
    """Run a copy of the script in tmp_path (its runs/ land there) with extra svi flags; the logged calls."""
    (tmp_path / "run").mkdir(exist_ok=True)
    shutil.copy(ROOT / "run" / "reproduce_vlvae.sh", tmp_path / "run")
    stub, log = tmp_path / "bin" / "python", tmp_path / "calls.log"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(STUB.format(log=log))
    stub.chmod(0o755)
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"}
    env.pop("OBJECTIVES", None)
    if objectives is not None:
        env["OBJECTIVES"] = objectives
    out = subprocess.run(["bash", "run/reproduce_vlvae.sh", "cpu", "--steps", "7"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return log.read_text().splitlines()


def trained(calls):
    return [call for call in calls if call.startswith("run/svi.py")]


def evaluations(calls):
    return [call for call in calls if call.startswith("run/evaluate.py")]


def test_the_paper_tables_train_four_guides_at_three_seeds_and_no_other_objective(tmp_path):
    calls = reproduce(tmp_path)
    assert len(trained(calls)) == 12 and all("--steps 7" in call for call in trained(calls))
    assert not any("--guide kl" in call or "--guide mvae" in call for call in calls)
    assert len(evaluations(calls)) == 2 and not any("--runs" in call for call in calls)


def test_objectives_add_three_seeds_of_each_and_a_table_1_column_each(tmp_path):
    calls = reproduce(tmp_path, "kl mvae mmvae")
    assert len(trained(calls)) == 21
    for guide in ("kl", "mvae", "mmvae"):
        for seed in range(3):
            assert (f"run/svi.py --model vlvae --preset cpu --out runs/vlvae-{guide}-cpu-s{seed} --no-progress "
                    f"--guide {guide} --seed {seed} --steps 7") in calls
    tables, weighted = evaluations(calls)
    runs = " ".join(f"runs/vlvae-{guide}-cpu-s{seed}" for guide in ("kl", "mvae", "mmvae") for seed in range(3))
    assert f"--runs {runs} --out runs/eval-cpu" in tables and "--runs" not in weighted
    # run again: every run exists, so each is resumed (the rest of a stopped run, nothing for a finished one)
    again = trained(reproduce(tmp_path, "kl mvae mmvae"))
    assert len(again) == 21 and all(call.endswith(" --resume") for call in again)
    assert not any("--resume" in call for call in calls)
