"""Loading trained runs back: a run directory as ready-to-use networks (``load_run``), a base run's
frozen VLVAE and q(z|x) copied into a fitted scheme (``load_base``), and the device a command asked for
(``pick_device``). Every command and notebook that reads a run imports this module, not the trainer."""
from __future__ import annotations

import torch

from mmvae_zoo.training.rundir import RunDir, RunError, load_file
from mmvae_zoo.training.schemes import Components, build


def pick_device(name: str = "auto") -> torch.device:
    """The device named ``name`` (``auto``: CUDA when there is one, else the CPU); a RunError if CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


def load_base(components: Components, base: RunDir) -> None:
    """Copy the trained VLVAE and q(z|x) of ``base`` into ``components`` (for text guides and q(z))."""
    base_config = base.config()
    config = components.config
    if base_config.guide != components.scheme.base:
        raise RunError(f"base run {base.path} trained guide {base_config.guide!r}; text guides and the prior "
                       f"need a base trained with --guide {components.scheme.base}")
    if base_config.data.name != config.data.name or base_config.net.vocab != config.net.vocab:
        raise RunError(f"base run {base.path} was trained on {base_config.data.name!r} with vocabulary "
                       f"{base_config.net.vocab}; this run uses {config.data.name!r} with {config.net.vocab}")
    if base_config.net != config.net:
        raise RunError(f"base run {base.path} has other network shapes than this run's config; "
                       f"use the same --preset and --image-size as the base")
    state = base.latest_checkpoint()
    load_modules(components.frozen(), {"model": state["model"], "image_guide": state["guide"]}, base.path)


def load_modules(modules: dict, state: dict, source) -> None:
    """Load ``state[name]`` into each module of ``modules``; a RunError naming ``source`` if one does not fit."""
    try:
        for name, module in modules.items():
            module.load_state_dict(state[name])
    except (KeyError, RuntimeError) as e:
        raise RunError(f"{source} does not fit this run's networks ({str(e).splitlines()[0]}); "
                       f"was it made with another preset, dataset or vocabulary?") from None


def load_run(path, device="cpu", step: int | None = None) -> Components:
    """A trained run directory as ready-to-use networks (eval mode, on ``device``), from its last
    checkpoint or, with ``step``, from the checkpoint of that step. (A ``prior_agg`` run's model has
    the learned prior as its prior, by construction.)
    """
    run = RunDir(path)
    config = run.config()
    components = build(config)
    load_modules(components.trained(), run.latest_checkpoint() if step is None else run.checkpoint_at(step), run.path)
    if not components.trains_model:
        load_modules(components.frozen(), load_file(run.base_path, "base weights"), run.base_path)
    components.to(device)
    for m in components.modules():
        m.eval()
    return components
