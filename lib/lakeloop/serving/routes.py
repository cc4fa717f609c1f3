"""Lookups by key: the engine's ``/v1/predictions/{key}`` and the app's routes declared in ``serve.routes``.

An app declares each lookup route by name (docs/serving.md)::

    serve:
      routes:
        scores:                   # GET /v1/scores/{account_id}, POST /v1/scores
          key: account_id         # path parameter, and the response field naming the key
          key_type: int           # int: a 64-bit integer; str: letters, digits, '_', '.' or '-'
          value_field: score      # response field of the batch value ([] when only the real-time view has the key)
          batch_field: account_ids  # POST body field listing keys (optional: no batch route without it)
          docs: {get: ..., post: ..., value: ..., realtime: ...}   # OpenAPI texts (optional)

The answer of a declared route is ``{key: <key>, value_field: <batch value>, "realtime": {...}}``
(``realtime`` only when the real-time view has the key); ``/v1/predictions/{key}`` answers the fields of
a mapping value (or ``value``) plus ``realtime``.  Every handler raises :class:`ServiceError` for an answer
other than 200.  Messages name the key by its field: key ``account_id`` reads ``account id '4.2': expected
a 64-bit integer`` and ``account 41: no scores``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from lakeloop.conf import ConfError
from lakeloop.serving.base import ServingStore, decode_value, merge_views

__all__ = ["ServiceError", "RouteSpec", "parse_routes", "parse_key", "read_store", "prediction", "prediction_body",
           "PREDICTIONS", "KEY_TYPES", "DOCS", "batch_json", "predictions_json"]

log = logging.getLogger(__name__)

#: the engine's own lookup route (any key of the current version); no app route may take its name
PREDICTIONS = "predictions"
KEY_TYPES = ("int", "str")
#: the OpenAPI texts a route may set under ``docs``
DOCS = ("get", "post", "value", "realtime")
_FIELDS = ("key", "key_type", "value_field", "batch_field", "docs")
_INT = re.compile(r"^-?[0-9]{1,19}$")
# serving keys are written as text; ':' and glob characters never occur in them
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")
_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
INT64 = 2 ** 63


class ServiceError(Exception):
    """A request that is answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = int(status), message


def parse_key(raw: str) -> str:
    """A text key as written to the store, or a 400."""
    if not _KEY.match(raw):
        raise ServiceError(400, f"key {raw!r}: expected letters, digits, '_', '.' or '-'")
    return raw


def read_store(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A store read; any store failure is a 503 and the service lives on."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - a store failure becomes a 503
        log.warning("%s failed: %s", what, exc)
        raise ServiceError(503, f"lookup failed: serving store unavailable ({exc})") from None


def prediction_body(key: str, found: Mapping[str, Any]) -> dict[str, Any]:
    return {"key": key, **found}


def batch_json(store: ServingStore, keys: list[Any], names: tuple[str, str],
               body: Callable[[Any, Mapping[str, Any]], dict[str, Any]]) -> bytes:
    """The answer of a batch lookup, ``{"version": ..., "results": [...]}``, as JSON.

    Every key is read from one version (:meth:`~lakeloop.serving.ServingStore.lookup_many_raw`).  A result is
    ``body(key, found)``; where the stored value is a list or a scalar and the key has no real-time value, that
    is ``{names[0]: key, names[1]: <the stored JSON>}``, and the stored JSON goes into the answer as it is,
    neither decoded nor encoded again (the same bytes: values are stored as compact JSON).
    """
    version, batches, realtimes = read_store("lookup", store.lookup_many_raw, keys)
    key_name, value_name = orjson.dumps(names[0]), orjson.dumps(names[1])
    parts = []
    for key, batch, realtime in zip(keys, batches, realtimes, strict=True):
        if isinstance(batch, str):
            batch = batch.encode()
        if realtime is None and batch is not None and batch[0] not in b"{n":  # not a mapping, not null
            parts.append(b"{%b:%b,%b:%b}" % (key_name, orjson.dumps(key), value_name, batch))
            continue
        found = merge_views(decode_value(batch), decode_value(realtime))
        parts.append(b"null" if found is None else orjson.dumps(body(key, found)))
    return b'{"version":%b,"results":[%b]}' % (orjson.dumps(version), b",".join(parts))


def predictions_json(store: ServingStore, keys: list[str]) -> bytes:
    """``POST /v1/predictions`` of checked ``keys``: :func:`batch_json` of :func:`prediction_body`."""
    return batch_json(store, keys, ("key", "value"), prediction_body)


def prediction(store: ServingStore, raw: str) -> dict[str, Any]:
    """``GET /v1/predictions/{raw}``: the body of a 200, or :class:`ServiceError`."""
    key = parse_key(raw)
    found = read_store("lookup", store.lookup, key)
    if found is None:
        raise ServiceError(404, f"key {key!r}: not found")
    return prediction_body(key, found)


@dataclass(frozen=True)
class RouteSpec:
    """One route of ``serve.routes``: ``GET /v1/<name>/{key}`` and, with ``batch_field``, ``POST /v1/<name>``."""

    name: str
    key: str
    key_type: str
    value_field: str
    batch_field: str | None = None
    docs: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The key in messages: ``account_id`` -> ``account id``."""
        return self.key.replace("_", " ")

    @property
    def noun(self) -> str:
        """What a key names: ``account_id`` -> ``account``."""
        return self.key.removesuffix("_id").replace("_", " ")

    @property
    def template(self) -> str:
        return f"/v1/{self.name}/{{{self.key}}}"

    def parse(self, raw: str) -> int | str:
        """The key of a request path, or a 400."""
        if self.key_type == "str":
            if not _KEY.match(raw):
                raise ServiceError(400, f"{self.label} {raw!r}: expected letters, digits, '_', '.' or '-'")
            return raw
        if not _INT.match(raw) or not -INT64 <= int(raw) < INT64:
            raise ServiceError(400, f"{self.label} {raw!r}: expected a 64-bit integer")
        return int(raw)

    def check_batch_key(self, key: int | str) -> int | str:
        """A key of a batch body (typed by the request model already): in range, or an error."""
        if self.key_type == "str":
            return self.parse(key)  # type: ignore[arg-type]
        if not -INT64 <= key < INT64:  # type: ignore[operator]
            raise ServiceError(422, f"{self.label} {key}: expected a 64-bit integer")
        return key

    def body(self, key: int | str, found: Mapping[str, Any]) -> dict[str, Any]:
        """The answer for ``key`` from what ``lookup`` found."""
        # a scalar or list value comes as "value"; a mapping of declared fields is the found mapping itself
        value = found["value"] if "value" in found else ({k: v for k, v in found.items() if k != "realtime"} or None)
        out: dict[str, Any] = {self.key: key, self.value_field: [] if value is None else value}
        if "realtime" in found:
            out["realtime"] = found["realtime"]
        return out

    def batch_json(self, store: ServingStore, keys: list[int | str]) -> bytes:
        """``POST /v1/<name>`` of checked ``keys``: :func:`batch_json` of :meth:`body`."""
        return batch_json(store, keys, (self.key, self.value_field), self.body)

    def lookup(self, store: ServingStore, raw: str) -> dict[str, Any]:
        """``GET /v1/<name>/{raw}``: the body of a 200, or :class:`ServiceError`."""
        key = self.parse(raw)
        found = read_store("lookup", store.lookup, key)
        if found is None:
            raise ServiceError(404, f"{self.noun} {key}: no {self.name}")
        return self.body(key, found)


def parse_routes(value: Mapping[str, Any] | None, origin: str = "serve.routes") -> dict[str, RouteSpec]:
    """The routes of a ``serve.routes`` mapping; :class:`~lakeloop.conf.ConfError` naming the key (and
    ``origin``, the file that set it) when an entry does not fit."""
    routes = {}
    for name, entry in (value or {}).items():
        routes[name] = _route(str(name), entry, lambda k, m, n=name: ConfError(
            f"{origin}: serve.routes.{n}{'.' + k if k else ''}: {m}"))
    return routes


def _route(name: str, entry: Any, fail: Callable[[str, str], ConfError]) -> RouteSpec:
    if name == PREDICTIONS:
        raise fail("", f"{PREDICTIONS!r} is the engine's own route (/v1/{PREDICTIONS}/<key>)")
    if not _NAME.match(name):
        raise fail("", "expected a route name of lower-case letters, digits, '_' or '-'")
    if not isinstance(entry, Mapping):
        raise fail("", f"expected a mapping with {', '.join(_FIELDS)}, got {entry!r}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise fail(unknown[0], f"unknown key (expected {', '.join(_FIELDS)})")
    for required in ("key", "value_field"):
        if required not in entry:
            raise fail(required, "required")
    names = {k: entry.get(k) for k in ("key", "value_field", "batch_field") if entry.get(k) is not None}
    for k, v in names.items():
        if not isinstance(v, str) or not _FIELD.match(v):
            raise fail(k, f"expected a field name of letters, digits and '_', got {v!r}")
    if len(set(names.values())) < len(names) or "realtime" in (names["key"], names["value_field"]):
        raise fail("", "key, value_field and batch_field must differ from each other and from 'realtime'")
    key_type = entry.get("key_type", "int")
    if key_type not in KEY_TYPES:
        raise fail("key_type", f"expected one of {', '.join(KEY_TYPES)}, got {key_type!r}")
    docs = entry.get("docs") or {}
    if not isinstance(docs, Mapping) or not all(k in DOCS and isinstance(v, str) for k, v in docs.items()):
        raise fail("docs", f"expected a mapping of {', '.join(DOCS)} to texts, got {docs!r}")
    return RouteSpec(name, names["key"], key_type, names["value_field"], names.get("batch_field"), dict(docs))
