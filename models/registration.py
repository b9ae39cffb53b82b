"""Registering a module's parameters with Pyro, so that ``SVI`` and ``pyro.optim`` train them.

Every model and guide of the zoo calls :func:`register` at the top of its ``forward`` (its Pyro
program), as Pyro's own VAE example calls ``pyro.module``: each trainable parameter becomes a
``param`` site of the trace, which is how ``SVI`` finds what to optimise. Frozen parameters
(``requires_grad=False``) are left out, so ``SVI`` never moves them.

It differs from ``pyro.module`` in one respect. Pyro's param store is global and keyed by name;
``pyro.module`` keeps the tensor stored first under a name, so a second module of the same name
(two text guides, a model built again in a notebook) would compute with its own tensors while
``SVI`` optimised the first module's: nothing trains, silently. Here the module that runs takes
the name over, and ``SVI`` always optimises the tensors that the program used.
"""
from __future__ import annotations

import pyro
from pyro.params.param_store import param_with_module_name
from torch import nn


def register(name: str, module: nn.Module) -> None:
    """``pyro.module(name, module)``, with ``module``'s own tensors under its names in the param store."""
    store = pyro.get_param_store()
    for param_name, param in module.named_parameters():
        if param.requires_grad:
            full_name = param_with_module_name(name, param_name)
            stored = store._params.get(full_name)  # ParamStoreDict has no public "replace"
            if stored is not None and stored is not param:
                del store._params[full_name]
                store._param_to_name.pop(stored, None)
            pyro.param(full_name, param)
