"""Imported first by a benchmark script: it runs this checkout's lakeloop, in the driver and in Spark's
Python workers (``PYTHONPATH``), with the interpreter that runs the script."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["ROOT", "tests_module"]

ROOT = Path(__file__).resolve().parents[1]
_LIB = str(ROOT / "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_LIB, os.environ.get("PYTHONPATH")]))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def tests_module(name: str):
    """``tests/<name>.py`` (a server fixture), loaded by path: a site-packages ``tests`` package may shadow
    ours; ``tests/server_process.py``, which the fixtures build on, is registered under its import name first."""
    import importlib.util

    def load(module: str):
        spec = importlib.util.spec_from_file_location(f"tests.{module}", ROOT / "tests" / f"{module}.py")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded
        spec.loader.exec_module(loaded)
        return loaded

    if "tests.server_process" not in sys.modules:
        load("server_process")
    return load(name)
