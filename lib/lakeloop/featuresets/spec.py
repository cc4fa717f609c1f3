"""Feature-set and training-set declarations: YAML files under the conf directory, validated.

Layout (``features.spec_dir``, default the conf directory itself)::

    <spec_dir>/features/<feature_set>.yaml        one feature set per file, named by the file
    <spec_dir>/training_sets/<training_set>.yaml  one training set (labels + feature sets) per file

Every error is a :class:`lakeloop.conf.ConfError` (job exit code 2) whose message names the file,
the dotted key inside it and, for a choice, the allowed values.  String values may reference conf
keys as ``${conf:features.lookback_days}``: a whole-value reference keeps the conf value's type
(a list stays a list), an embedded one is replaced by its text (``${conf:features.lookback_days}d``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakeloop.conf import ConfError

__all__ = ["Node", "Feature", "DimensionSpec", "EnrichSpec", "FeatureSet", "LabelSpec", "NegativeSpec",
           "JoinSpec", "TrainingSpec", "Specs", "parse_duration", "AS_OF"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: when a run date's feature time ``t`` falls: 00:00 UTC opening the day after it, or opening it
AS_OF = ("end_of_day", "start_of_day")


def parse_duration(text: Any) -> dt.timedelta:
    """``'30d'``, ``'12h'``, ``'90m'``, ``'45s'``, ``'2w'``, ``'7.5d'`` -> timedelta; ValueError otherwise."""
    m = _DURATION.match(str(text)) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a duration such as 30d, 12h, 90m or 45s, got {text!r}")
    value = dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if value <= dt.timedelta(0):
        raise ValueError(f"duration must be positive, got {text!r}")
    return value


class Node:
    """One mapping of a spec file, with the file and dotted key it came from, for error messages."""

    def __init__(self, value: Any, file: str, path: str = "") -> None:
        self.value, self.file, self.path = value, file, path
        if not isinstance(value, Mapping):
            raise self.error(f"expected a mapping, got {value!r}")
        self._seen: set[str] = set()

    def key(self, name: str | None = None) -> str:
        return ".".join(p for p in (self.path, name) if p) or "top level"

    def error(self, message: str, name: str | None = None) -> ConfError:
        return ConfError(f"{self.file}: {self.key(name)}: {message}")

    def has(self, name: str) -> bool:
        return self.value.get(name) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        self._seen.add(name)
        value = self.value.get(name)
        return default if value is None else value

    def child(self, name: str) -> Node:
        self._seen.add(name)
        return Node(self.value.get(name), self.file, self.key(name))

    def text(self, name: str, default: str | None = None, *, required: bool = False,
             choices: tuple[str, ...] = ()) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error("a value is required" + _allowed(choices), name)
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"expected a non-empty string{_allowed(choices)}, got {value!r}", name)
        if choices and value not in choices:
            raise self.error(f"expected one of {', '.join(choices)}, got {value!r}", name)
        return value

    def ident(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.text(name, default, required=required)
        if value is not None and not _NAME.match(value):
            raise self.error(f"expected a column name (letters, digits, _), got {value!r}", name)
        return value

    def table(self, name: str, *, required: bool = True) -> str | None:
        value = self.text(name, required=required)
        if value is not None and not _TABLE.match(value):
            raise self.error(f"expected a table name layer.name (silver.events, gold.x), got {value!r}", name)
        return value

    def names(self, name: str, default: tuple[str, ...] = (), *, required: bool = False) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error("a value is required: a column name or a list of them", name)
            return default
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and _NAME.match(v) for v in items):
            raise self.error(f"expected a column name or a non-empty list of them, got {value!r}", name)
        if len(set(items)) != len(items):
            raise self.error(f"names repeat: {items}", name)
        return tuple(items)

    def integer(self, name: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(f"expected an integer{'' if minimum is None else f' >= {minimum}'}, got {value!r}",
                             name)
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {value!r}", name)
        return value

    def duration(self, name: str, default: dt.timedelta | None = None, *,
                 required: bool = False) -> dt.timedelta | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error("a value is required: a duration such as 30d, 12h, 90m or 45s", name)
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(str(exc), name) from None

    def scalar(self, name: str) -> Any:
        value = self.raw(name)
        if value is not None and (isinstance(value, (list, Mapping))):
            raise self.error(f"expected a number, string or boolean, got {value!r}", name)
        return value

    def done(self, allowed: tuple[str, ...] | None = None) -> None:
        """Raise on keys nobody read (``allowed``: the keys to list in the message)."""
        unknown = [k for k in self.value if k not in self._seen]
        if unknown:
            known = sorted(allowed if allowed is not None else self._seen)
            raise self.error(f"unknown key {unknown[0]!r} (allowed: {', '.join(known)})")


def _allowed(choices: tuple[str, ...]) -> str:
    return f" (one of {', '.join(choices)})" if choices else ""


# -- declarations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    """One feature of a set; ``opts`` holds the kind-specific options after validation."""

    name: str
    kind: str
    origin: str
    window: dt.timedelta | None = None
    where: str | None = None
    default: Any = None
    opts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DimensionSpec:
    """A table read *as of t*: per key its latest row with ``time < t`` (``<= t`` with ``include_t``).

    ``fallback: earliest`` gives a key with no such row its earliest row (a deliberate look-ahead,
    off by default); ``time: null`` reads a table with one row per key.
    """

    name: str
    table: str
    key: tuple[str, ...]
    time: str | None
    include_t: bool
    fallback: str
    filter: str | None
    origin: str


@dataclass(frozen=True)
class EnrichSpec:
    """Attributes of a dimension joined (as of t) onto every source row before the features."""

    dimension: str
    on: tuple[str, ...]
    columns: tuple[tuple[str, str, Any], ...]  # (output name, dimension column, default)
    origin: str


@dataclass(frozen=True)
class FeatureSet:
    name: str
    file: str
    source: str
    entity: tuple[str, ...]
    time: str
    filter: str | None
    window: dt.timedelta
    as_of: str
    spine: tuple[str, ...]
    dimensions: Mapping[str, DimensionSpec]
    enrich: tuple[EnrichSpec, ...]
    features: tuple[Feature, ...]
    materialize: bool
    allow_empty: bool
    table: str
    as_of_column: str | None
    include_t: bool = False

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    @property
    def max_window(self) -> dt.timedelta:
        return max([self.window, *[f.window for f in self.features if f.window]])


@dataclass(frozen=True)
class LabelSpec:
    kind: str  # row | outcome
    source: str
    entity: tuple[str, ...]
    time: str
    filter: str | None
    column: str
    type: str | None
    origin: str
    expr: str = "1"
    where: str | None = None
    at: str = "start_of_day"
    window: dt.timedelta | None = None
    agg: str = "max"
    select: str = "time"  # row labels: "time" (on the run date) or "partition" (the run date's dt partition)


@dataclass(frozen=True)
class NegativeSpec:
    per_positive: int
    seed: int
    sample: str
    pool: DimensionSpec
    value: Any
    origin: str


@dataclass(frozen=True)
class JoinSpec:
    set: str
    columns: tuple[tuple[str, str], ...]  # (output name, feature name)
    origin: str


@dataclass(frozen=True)
class TrainingSpec:
    name: str
    file: str
    table: str
    label: LabelSpec
    negatives: NegativeSpec | None
    joins: tuple[JoinSpec, ...]
    fill: Mapping[str, Any]
    columns: tuple[str, ...] | None
    as_of_join: str
    max_label_times: int
    label_time_column: str
    materialize: bool
    allow_empty: bool


@dataclass(frozen=True)
class Specs:
    sets: Mapping[str, FeatureSet]
    training: Mapping[str, TrainingSpec]
    directory: Path
