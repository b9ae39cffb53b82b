"""A run directory: the unit a user moves around.

    run/
      config.json        the RunConfig (presets resolved, every flag)
      metrics.jsonl      one JSON object per logged step
      base.pt            for text guides and the learned prior: the frozen VLVAE they were fitted to
      checkpoints/step_0001000.pt ...   the last few; each written atomically
      samples/step_0001000.png ...      sample grids with decoded text

Checkpoints hold the trained modules' ``state_dict``s, the optimizer, the step and every RNG
state, so a resumed run continues exactly.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from training.config import RunConfig


class RunError(Exception):
    """A problem with a run directory, stated in one line with what to do."""


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` the same way: a reader sees the old file or the new one, never half of one."""
    _atomic(path, lambda f: f.write(text.encode()))


def _atomic(path: Path, write) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_file(path: Path, what: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise RunError(f"{what} {path} does not exist") from None
    except Exception as e:  # truncated or not a torch file
        raise RunError(f"{what} {path} is unreadable or corrupt ({type(e).__name__}); "
                       f"delete it to fall back to an earlier checkpoint, or start a fresh run") from None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.base_path = self.path / "base.pt"

    def exists(self) -> bool:
        return self.config_path.exists()

    def check_fresh(self) -> None:
        """Refuse to start a new run over an existing one."""
        if self.exists():
            raise RunError(f"run directory {self.path} already holds a run; pass --resume to continue it "
                           f"or choose another --out")

    def create(self, config: RunConfig) -> None:
        """Start a fresh run here; refuses to overwrite an existing one."""
        self.check_fresh()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.samples.mkdir(exist_ok=True)
        self.save_config(config)

    def save_config(self, config: RunConfig) -> None:
        """``config.json``, replaced atomically."""
        atomic_write_text(self.config_path, config.to_json())

    def config(self) -> RunConfig:
        if not self.exists():
            raise RunError(f"{self.path} is not a run directory (no config.json); train one with run/svi.py")
        try:
            return RunConfig.load(self.config_path)
        except (ValueError, TypeError, KeyError) as e:
            raise RunError(f"{self.config_path} is not a valid run config ({e})") from None

    def checkpoint_paths(self) -> list[Path]:
        return sorted(self.checkpoints.glob("step_*.pt"))

    def save_checkpoint(self, step: int, state: dict, keep: int) -> Path:
        """Write the checkpoint of ``step``; keep the latest ``keep`` checkpoints (0: all)."""
        path = self.checkpoints / f"step_{step:07d}.pt"
        atomic_save({"step": step, "rng": rng_state(), **state}, path)
        for old in self.checkpoint_paths()[:-keep] if keep else []:
            old.unlink()
        return path

    def checkpoint_steps(self) -> list[int]:
        return [int(p.stem.removeprefix("step_")) for p in self.checkpoint_paths()]

    def latest_checkpoint(self) -> dict:
        paths = self.checkpoint_paths()
        if not paths:
            raise RunError(f"{self.path} has no checkpoint yet; start it again without --resume")
        return load_file(paths[-1], "checkpoint")

    def checkpoint_at(self, step: int) -> dict:
        path = self.checkpoints / f"step_{step:07d}.pt"
        if not path.exists():
            kept = ", ".join(map(str, self.checkpoint_steps())) or "none"
            raise RunError(f"{self.path} has no checkpoint of step {step}; the steps kept are: {kept}")
        return load_file(path, "checkpoint")

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
