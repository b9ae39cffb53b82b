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
from pyro.distributions import constraints
from pyro.params.param_store import param_with_module_name
from torch import nn


def register(name: str, module: nn.Module) -> None:
    """``pyro.module(name, module)``, with ``module``'s own tensors under its names in the param store."""
    store = pyro.get_param_store()
    for param_name, param in module.named_parameters():
        if param.requires_grad:
            full_name = param_with_module_name(name, param_name)
            if store._params.get(full_name) is not param:
                _put(store, full_name, param)
            pyro.param(full_name, param)


def _put(store, name: str, param: nn.Parameter) -> None:
    """``param`` itself under ``name``, in place of whatever was there. ParamStoreDict has no public way to
    replace an entry, and its ``__setitem__`` stores a contiguous copy of a non-contiguous tensor (a
    channels-last convolution's weight), which SVI would then train instead of the module's own."""
    stale = store._params.pop(name, None)
    store._param_to_name.pop(stale, None)
    store._params[name] = param
    store._param_to_name[param] = name
    store._constraints[name] = constraints.real
