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
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from mmvae_zoo.training.config import RunConfig


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
    """The dict a torch file holds (a checkpoint, weights); a RunError if it is missing, corrupt or no dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise RunError(f"{what} {path} does not exist") from None
    except Exception as e:  # truncated or not a torch file
        raise RunError(f"{what} {path} is unreadable or corrupt ({type(e).__name__}); "
                       f"delete it to fall back to an earlier checkpoint, or start a fresh run") from None
    if not isinstance(state, dict):
        raise RunError(f"{what} {path} holds a {type(state).__name__}, not the dict of weights it should; "
                       f"delete it to fall back to an earlier checkpoint, or start a fresh run")
    return state


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
        """The run's settings; a RunError if this is no run directory or its config.json is not one."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a run directory; give the folder run/svi.py wrote")
        if not self.exists():
            raise RunError(f"{self.path} is not a run directory (no config.json); train one with run/svi.py")
        try:
            config = RunConfig.load(self.config_path)
            _check_config(config)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # not JSON, or JSON of another shape
            raise RunError(f"{self.config_path} is not a valid run config ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'no detail'}); restore it, or train the run "
                           f"again in another folder") from None
        except OSError as e:  # a folder, or unreadable
            raise RunError(f"{self.config_path} cannot be read ({e.strerror}); restore it, or train the run "
                           f"again in another folder") from None
        return config

    def check(self) -> None:
        """Everything about the run but its checkpoints' contents, cheaply, before long work reads or
        writes it: config.json, metrics.jsonl, and that its sub-folders are folders."""
        self.config()
        for folder in (self.checkpoints, self.samples):
            if folder.exists() and not folder.is_dir():
                raise RunError(f"{folder} is a file, not a folder; move it away or restore the run")
        self.metrics()

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
            raise RunError(f"{self.path} has no checkpoint yet; train it with run/svi.py (without --resume if it "
                           f"never wrote one)")
        return _checkpoint(paths[-1])

    def checkpoint_at(self, step: int) -> dict:
        path = self.checkpoints / f"step_{step:07d}.pt"
        if not path.exists():
            kept = ", ".join(map(str, self.checkpoint_steps())) or "none"
            raise RunError(f"{self.path} has no checkpoint of step {step}; the steps kept are: {kept}")
        return _checkpoint(path)

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def keep_metrics_until(self, step: int) -> None:
        """Keep the records of steps up to ``step`` (a resumed run's checkpoint), one per step, and drop
        the rest: a run resumed from ``step`` logs the later steps again. Rewritten atomically, and only
        where something is dropped. Of a step logged twice (by a run resumed before this was done) the
        later record stays, the one that led to the checkpoint."""
        records = self.metrics()
        latest = {}
        for record in records:
            if record["step"] <= step:
                latest[record["step"]] = record
        kept = sorted(latest.values(), key=lambda record: record["step"])
        if kept != records:
            atomic_write_text(self.metrics_path, "".join(json.dumps(record) + "\n" for record in kept))

    def metrics(self) -> list[dict]:
        """The logged records, oldest first; a RunError naming the first line that is not one."""
        if not self.metrics_path.exists():
            return []
        try:
            lines = self.metrics_path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"{self.metrics_path} cannot be read ({getattr(e, 'strerror', None) or e}); restore it "
                           f"or delete it (the run's curves go with it)") from None
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
                raise RunError(f"{self.metrics_path} line {number} is not a JSON record with a step "
                               f"({line[:40]!r}); delete that line")
            records.append(record)
        return records


def _checkpoint(path: Path) -> dict:
    state = load_file(path, "checkpoint")
    if not isinstance(state.get("step"), int):
        raise RunError(f"checkpoint {path} has no step: it is not a checkpoint of run/svi.py; delete it to fall "
                       f"back to an earlier checkpoint, or start a fresh run")
    return state


def _check_config(config: RunConfig) -> None:
    """Refuse a config.json that parsed but names no model, scheme or settings a run can have."""
    from mmvae_zoo.training.config import check_train
    from mmvae_zoo.training.schemes import MODELS, schemes_of

    if config.model not in MODELS:
        raise ValueError(f"unknown model {config.model!r}")
    if config.guide not in schemes_of(config.model):
        raise ValueError(f"unknown guide {config.guide!r} for model {config.model}")
    check_train(config.train)


# Checks of the command lines' paths, devices and numbers, made before any long work starts -------------

def check_folder(path, flag: str, writable: bool = True) -> Path:
    """A folder a command writes in (``writable``) or reads from, made there if missing: a RunError
    unless ``path`` is a folder or can be made one."""
    path = Path(path)
    existing = _existing_ancestor(path, flag)
    if existing == path and not path.is_dir():
        raise RunError(f"{flag} {path} is a file, not a folder; give a folder, or move the file away")
    if (writable or existing != path) and not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{flag} {path}: you may not write in {existing}; give another path")
    return path


def check_output_file(path, flag: str, overwrite: bool, suffixes=None) -> Path:
    """A file a command writes: a RunError if it is a folder, cannot be made there, exists and
    ``overwrite`` is not asked, or (given ``suffixes``, lower case) has no type it can be written as."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{flag} {path} is a folder; give a file name, such as {path / 'figure.png'}")
    if suffixes is not None and path.suffix.lower().lstrip(".") not in suffixes:
        others = ", .".join(sorted(s for s in suffixes if s != "png"))
        raise RunError(f"{flag} {path} {'has no file type' if not path.suffix else 'is of no image type'}; "
                       f"end it in .png (or .{others})")
    existing = _existing_ancestor(path.parent, flag, path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{flag} {path}: you may not write in {existing}; give another path")
    if path.exists() and not overwrite:
        raise RunError(f"{path} exists; pass --overwrite to replace it or choose another {flag}")
    return path


def _existing_ancestor(path: Path, flag: str, given: Path | None = None) -> Path:
    """``path`` or its closest existing ancestor; a RunError if that is a file (other than ``path`` itself)."""
    given = given or path
    try:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        if not existing.is_dir() and existing != given:
            raise RunError(f"{flag} {given} is inside {existing}, which is a file, not a folder; give another path")
    except PermissionError:
        raise RunError(f"{flag} {given} cannot be reached (permission denied); give another path") from None
    return existing


def check_count(value, flag: str, minimum: int = 1) -> None:
    """An integer flag's value (None: not given): at least ``minimum``."""
    if value is None or value >= minimum:
        return
    if minimum == 1:
        raise RunError(f"{flag} must be a positive integer, got {value}; pass {flag} > 0")
    if minimum == 0:
        raise RunError(f"{flag} must not be negative, got {value}; pass {flag} >= 0")
    raise RunError(f"{flag} must be at least {minimum}, got {value}")


def check_seed(seed, flag: str = "--seed") -> None:
    """What every generator takes (NumPy's seeds stop at 2**32 - 1)."""
    if seed is not None and not 0 <= seed < 2 ** 32:
        raise RunError(f"{flag} must be between 0 and {2 ** 32 - 1}, got {seed}")


def check_finite(value, flag: str) -> None:
    if value is not None and not math.isfinite(value):
        raise RunError(f"{flag} must be a finite number, got {value}")


def parse_device(name: str) -> torch.device:
    """--device: auto (CUDA when present), cpu, cuda or cuda:N; a RunError saying what to pass otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise RunError(f"--device {name!r} is not a device this zoo runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError("--device cuda was asked for but CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunError(f"--device {name}: there are {torch.cuda.device_count()} GPUs here, cuda:0 to "
                           f"cuda:{torch.cuda.device_count() - 1}; use one of them, cuda, or auto")
    return device


# What a command reports as one line on stderr with exit status 2 (anything else is a bug: a traceback).
REPORTED_ERRORS = (RunError, ValueError, OSError)


def error_message(e: BaseException) -> str:
    """``e`` (one of ``REPORTED_ERRORS``) as one line saying what to do. Our own errors say it
    already; an OS error (a path of the wrong kind, a permission, a full disk) gets a line naming the file."""
    if isinstance(e, OSError) and e.filename is not None:
        text = (f"{e.filename}: {e.strerror or e}; check that the path is of the right kind (file or folder), "
                f"that you may read and write it, and that its disk has room")
    else:
        text = str(e) or type(e).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
