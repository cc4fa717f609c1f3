"""``kind: transform``: a Python function named by dotted path, for what the declarative kinds cannot say.

``function: package.module:name`` is called as ``name(rows, **params)`` where ``rows`` are the
set's source rows in ``[t - window, t)`` with a column ``_t`` (the time they are seen from); it
returns a DataFrame with the set's entity columns, ``_t`` and the ``columns`` it declares, one row
per (entity, ``_t``).  The engine never hands it a row at or after ``t``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakeloop.featuresets.spec import Node

__all__ = ["parse", "resolve", "frame"]


def resolve(path: str) -> Callable[..., DataFrame]:
    """``package.module:function`` -> the function; ValueError naming what is missing."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected package.module:function, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{module_name} has no function {attr}")
    return fn


def parse(node: Node) -> dict[str, Any]:
    path = node.text("function", required=True)
    try:
        resolve(path)
    except ValueError as exc:
        raise node.error(str(exc), "function") from None
    params = node.raw("params", {})
    if not isinstance(params, dict):
        raise node.error(f"expected a mapping, got {params!r}", "params")
    return {"function": path, "params": params}


def frame(rows: DataFrame, function: str, params: dict[str, Any], keys: list[str], name: str,
          origin: str) -> DataFrame:
    from lakeloop.conf import ConfError

    out = resolve(function)(rows, **params)
    missing = [c for c in (*keys, name) if c not in out.columns]
    if missing:
        raise ConfError(f"{origin}: {function} returned no column {', '.join(missing)} "
                        f"(columns: {', '.join(out.columns)})")
    return out.select(*keys, name)
