"""mmvae-zoo's one importable name: ``mmvae_zoo.models``, ``mmvae_zoo.guides``, ``mmvae_zoo.flows``,
``mmvae_zoo.datasets``, ``mmvae_zoo.metrics``, ``mmvae_zoo.training``, ``mmvae_zoo.evaluation`` and
``mmvae_zoo.run`` (docs/design.md, "Layout").

Installed (``pip install .``), they are this package's sub-folders in site-packages (setup.cfg maps
each repository folder there with ``package_dir``). In a checkout they are the repository's top-level
folders: then, and only then (this file next to setup.cfg and models/), the repository root joins this
package's ``__path__``, so ``mmvae_zoo.models`` is ``./models`` without installing. No top-level
``models`` or ``datasets`` is ever importable through us, so another library's ``datasets`` coexists.
"""
from pathlib import Path as _Path

_root = _Path(__file__).resolve().parent.parent
if (_root / "setup.cfg").is_file() and (_root / "models" / "__init__.py").is_file():
    __path__.append(str(_root))
del _Path, _root
