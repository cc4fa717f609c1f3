"""Imported first by a benchmark script: it runs this checkout's lakeloop, in the driver and in Spark's
Python workers (``PYTHONPATH``), with the interpreter that runs the script."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["ROOT"]

ROOT = Path(__file__).resolve().parents[1]
_LIB = str(ROOT / "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_LIB, os.environ.get("PYTHONPATH")]))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
