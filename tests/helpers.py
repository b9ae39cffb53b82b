"""Small shared builders for the tests."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from mmvae_zoo.datasets.two_objects import VOCAB
from mmvae_zoo.models.vlvae import VLVAEConfig
from mmvae_zoo.training.config import preset, resolve


def tiny_net(image_size: int = 32, **changes) -> VLVAEConfig:
    net = preset("tiny").net
    net.image_shape = (3, image_size, image_size)
    net.vocab = VOCAB.to_list()
    for k, v in changes.items():
        setattr(net, k, v)
    return net


def batch(net: VLVAEConfig, n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n,) + tuple(net.image_shape), generator=g)
    y = torch.randint(1, len(net.vocab) + 1, (n, net.text_length), generator=g)
    return x, y


def tiny_config(tmp_path, guide: str = "image", steps: int = 4):
    config = preset("tiny")
    config.guide = guide
    config.data.root = str(tmp_path / "data")
    config.train.steps = config.train.guide_steps = steps
    return resolve(config)


def copy_run(path, out, **train) -> Path:
    """A copy of the run directory ``path`` at ``out`` whose config.json has the TrainConfig fields
    ``train`` changed (e.g. ``seed=1``: the same networks, saved as another seed's run)."""
    out = Path(shutil.copytree(path, out))
    config = json.loads((out / "config.json").read_text())
    config["train"].update(train)
    (out / "config.json").write_text(json.dumps(config))
    return out


def python_path(*first: str) -> str:
    """PYTHONPATH for a child process: ``first``, then this process's PYTHONPATH (on a machine
    without an install the packages are found only through it)."""
    return os.pathsep.join(filter(None, [*first, os.environ.get("PYTHONPATH")]))


def bare_env(data_root) -> dict:
    """A user's bare shell for the commands: a fresh data root and no settings of ours."""
    return {"MMVAE_DATA_ROOT": str(data_root), "PATH": "/usr/bin:/bin", "PYTHONPATH": python_path()}
