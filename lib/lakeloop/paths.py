"""Where the project's folders (jobs/, conf/, schemas/) are, however lakeloop was imported."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root"]


def project_root() -> Path:
    """The project folder: ``$LAKELOOP_HOME`` if set, else the nearest parent of this module that
    holds ``conf/base.yaml`` and ``jobs/`` (this also works when lakeloop is imported from the
    ``--py-files`` zip under ``build/``), else the folder two levels above the package."""
    if os.environ.get("LAKELOOP_HOME"):
        return Path(os.environ["LAKELOOP_HOME"]).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "base.yaml").is_file() and (parent / "jobs").is_dir():
            return parent
    return here.parents[2]
