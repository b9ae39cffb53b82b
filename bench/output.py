"""What every benchmark script shares: writing its figures for ``bench/report.py``."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(result, path: str | None) -> None:
    """Write ``result`` as JSON to ``path`` (the scripts' ``--json`` flag, which bench/report.py sets), if given."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2))
