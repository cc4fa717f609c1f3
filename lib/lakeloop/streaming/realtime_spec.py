"""What the real-time view counts, read from the ``stream.realtime.*`` keys (docs/streaming.md).

An app declares its entities (each an integer key column of the events), the event-type column and
the counts, the entity whose views the lookup service merges with the batch values, and optionally
a group: the latest value of a column of another table, joined to every event by a key column, whose
distinct values each window collects.  The engine's defaults count nothing (no entities: no
real-time view).

>>> spec = RealtimeSpec.from_conf(conf)  # doctest: +SKIP
>>> spec.columns  # doctest: +SKIP
('sensor', 'site', 'level')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.conf import ConfError

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["Group", "RealtimeSpec", "RESERVED"]

PREFIX = "stream.realtime"
#: columns of every window row; no count or group field may take these names
RESERVED = ("window_start", "window_end", "entity", "key", "events", "updated_at", "_stream_batch")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
_GROUP_KEYS = ("table", "key", "column", "field")


@dataclass(frozen=True)
class Group:
    """The latest ``column`` of ``table`` per ``key`` (by its ``dt`` partitions), joined to each event on
    ``key``; a window row collects its distinct values into ``field``."""

    table: str
    key: str
    column: str
    field: str


@dataclass(frozen=True)
class RealtimeSpec:
    """The ``stream.realtime.*`` keys, checked."""

    entities: Mapping[str, str]     # entity name -> integer key column of the events
    type_column: str | None         # column the counts compare with their event type
    counts: Mapping[str, str]       # count column -> event type counted
    lookup_entity: str | None       # views stored under the bare key (merged with batch values by lookup)
    group: Group | None

    @classmethod
    def from_conf(cls, conf: Conf) -> RealtimeSpec:
        """The spec of ``conf``; :class:`~lakeloop.conf.ConfError` naming the key and its file when a value
        does not fit."""
        def fail(key: str, message: str) -> ConfError:
            origin = conf.origin(f"{PREFIX}.{key.split('.')[0]}")  # the file that set the declared key
            return ConfError(f"{origin}: {PREFIX}.{key}: {message}")

        entities = _names_to_names(conf[f"{PREFIX}.entities"], "entities", fail)
        counts = _names_to_names(conf[f"{PREFIX}.counts"], "counts", fail)
        type_column = conf[f"{PREFIX}.type_column"]
        if counts and not type_column:
            raise fail("type_column", "required when stream.realtime.counts is set")
        lookup = conf[f"{PREFIX}.lookup_entity"]
        if lookup is not None and lookup not in entities:
            raise fail("lookup_entity", f"{lookup!r} is not one of stream.realtime.entities "
                                        f"({', '.join(entities) or 'none'})")
        group = _group(conf[f"{PREFIX}.group"], fail)
        taken = [n for n in [*counts, *([group.field] if group else [])] if n in RESERVED]
        if taken:
            raise fail("counts" if taken[0] in counts else "group.field",
                       f"{taken[0]!r} is a column of every window row ({', '.join(RESERVED)})")
        if group is not None and group.field in counts:
            raise fail("group.field", f"{group.field!r} is also a count")
        return cls(entities, type_column, counts, lookup, group)

    @property
    def columns(self) -> tuple[str, ...]:
        """Event columns the view reads (besides the event time), each once."""
        wanted = [*self.entities.values(), *([self.type_column] if self.type_column else []),
                  *([self.group.key] if self.group else [])]
        return tuple(dict.fromkeys(wanted))

    def serving_key(self, entity: str, key: int) -> Any:
        """Key of a view in the serving store: the bare key for :attr:`lookup_entity` (``lookup(key)`` merges
        it with the batch value), ``<entity>:<key>`` for the others."""
        return int(key) if entity == self.lookup_entity else f"{entity}:{int(key)}"

    def carries_group(self, entity: str) -> bool:
        """Whether the published views of ``entity`` carry the group field: not for the entity keyed by the
        group's own key (its group is its own value, not a summary)."""
        return self.group is not None and self.entities[entity] != self.group.key


def _names_to_names(value: Mapping[str, Any], key: str, fail: Any) -> dict[str, str]:
    out = {}
    for name, target in value.items():
        if not _NAME.match(str(name)):
            raise fail(f"{key}.{name}", "expected a name of letters, digits and '_'")
        if not isinstance(target, str) or not target:
            raise fail(f"{key}.{name}", f"expected a non-empty string, got {target!r}")
        out[str(name)] = target
    return out


def _group(value: Mapping[str, Any] | None, fail: Any) -> Group | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(_GROUP_KEYS))
    if unknown:
        raise fail(f"group.{unknown[0]}", f"unknown key (expected {', '.join(_GROUP_KEYS)})")
    missing = [k for k in _GROUP_KEYS if not isinstance(value.get(k), str) or not value.get(k)]
    if missing:
        raise fail(f"group.{missing[0]}", "required: a non-empty string")
    if not _TABLE.match(value["table"]):
        raise fail("group.table", f"{value['table']!r}: expected a table name layer.name")
    if not _NAME.match(value["field"]):
        raise fail("group.field", f"{value['field']!r}: expected a name of letters, digits and '_'")
    return Group(value["table"], value["key"], value["column"], value["field"])
