"""Serving stores: versioned keyspace with an atomic switch, batch view + real-time view.

>>> store = open_store(conf)                                   # doctest: +SKIP
>>> load_dataframe(store, predictions, "2026-11-22", "key", "value")  # doctest: +SKIP
>>> store.lookup(42)                                          # doctest: +SKIP
{'value': [...], 'realtime': {...}}

``serving.store`` picks the backend: ``sqlite`` (embedded file, the default) or
``redis``.  See docs/serving.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakeloop.conf import Conf, ConfError, resolve_uri
from lakeloop.serving.base import LoadInfo, LoadRefused, ServingError, ServingStore, StoreSettings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["ServingStore", "StoreSettings", "ServingError", "LoadRefused", "LoadInfo", "open_store",
           "settings_from_conf", "store_from_config", "load_dataframe", "load_changes", "LoadCounts"]

log = logging.getLogger(__name__)


def _store_class(kind: str) -> type[ServingStore]:
    # imported on demand: the redis client is an optional dependency
    if kind == "sqlite":
        from lakeloop.serving.sqlite import SQLiteStore

        return SQLiteStore
    if kind == "redis":
        from lakeloop.serving.redis import RedisStore

        return RedisStore
    raise ConfError(f"serving.store: unknown store {kind!r} (expected sqlite or redis)")


def _sqlite_path(conf: Mapping[str, Any]) -> str:
    path = conf.get("serving.sqlite.path")
    if path:
        return resolve_uri(path)
    warehouse = resolve_uri(conf["warehouse"])
    if "://" in warehouse:
        raise ConfError(f"serving.sqlite.path: the warehouse {warehouse} is not a local directory; "
                        "set serving.sqlite.path to a local file or use serving.store: redis")
    return str(Path(warehouse) / "_serving" / "serving.sqlite")


def settings_from_conf(conf: Conf | Mapping[str, Any]) -> StoreSettings:
    """The serving settings in ``conf`` (``serving.*``), with the SQLite path made absolute."""
    kind = conf["serving.store"]
    if kind == "redis":
        options = {name: conf.get(f"serving.redis.{name}") for name in ("host", "port", "db", "password_env")}
        options = {k: v for k, v in options.items() if v is not None}
    else:
        options = {"path": _sqlite_path(conf)}
    try:
        return StoreSettings(store=kind, namespace=conf["serving.namespace"],
                             keep_versions=conf["serving.keep_versions"],
                             ttl_seconds=conf.get("serving.ttl_seconds"),
                             batch_size=conf["serving.batch_size"], options=options,
                             loading_grace_seconds=conf["serving.loading_grace_seconds"])
    except ServingError as exc:
        raise ConfError(str(exc)) from None


def store_from_config(config: StoreSettings | Mapping[str, Any]) -> ServingStore:
    """Rebuild a store from :meth:`ServingStore.config` (e.g. in another process)."""
    settings = config if isinstance(config, StoreSettings) else StoreSettings.from_dict(config)
    return _store_class(settings.store)(settings)


def open_store(conf: Conf | Mapping[str, Any]) -> ServingStore:
    """The serving store configured by ``serving.*``; it connects on first use."""
    return store_from_config(settings_from_conf(conf))


def load_dataframe(store: ServingStore, df: DataFrame, version: str, key_col: str, value_col: str) -> int:
    """Load ``df`` as ``version``: one row per key, written from the executors, then switch.

    Struct, array and map values are turned into JSON by Spark (``to_json``); other values
    by the store.  Executors write Arrow batches (``mapInArrow``) and report the rows they
    wrote; the switch requires as many distinct keys as rows, so duplicate or null keys stop
    the load with an error and the version served before stays current.  A failed load is
    aborted.  ``df`` is computed once.  Returns the number of keys loaded.
    """
    return load_changes(store, df, version, key_col, value_col).keys


@dataclass(frozen=True)
class LoadCounts:
    """What :func:`load_changes` did: the keys of the new version, those the executors wrote, those copied."""

    keys: int
    written: int
    copied: int = 0
    incremental: bool = False


def load_changes(store: ServingStore, df: DataFrame, version: str, key_col: str, value_col: str,
                 base: str | None = None) -> LoadCounts:
    """:func:`load_dataframe`, incremental from the committed version ``base`` when given.

    The new version starts as a copy of ``base`` made inside the store; each executor reads ``base``'s values
    of its batch's keys and writes only the rows whose JSON differs (new or changed keys).  The switch then
    requires the version to hold exactly as many keys as ``df`` has rows: true only when every key of ``base``
    still has a row, so the version equals what a full load writes.  When a key of ``base`` has no row any
    more the switch is refused, and the version is loaded again in full (logged).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    encoded = isinstance(df.schema[value_col].dataType, (StructType, ArrayType, MapType))
    value = F.to_json(F.col(value_col)) if encoded else F.col(value_col)
    pairs = df.select(F.col(key_col).alias("key"), value.alias("value"))
    copied = store.begin_load(version, base)
    try:
        totals = (pairs.mapInArrow(_ArrowWriter(store, version, encoded, base), "rows long, written long")
                  .agg(F.sum("rows"), F.sum("written")).first())
        rows, written = totals[0] or 0, totals[1] or 0
        store.commit_load(version, rows)
    except LoadRefused as exc:
        store.abort_load(version)
        if base is None:
            raise
        log.warning("%s: incremental load of %s from %s refused (%s); loading it in full", store.namespace,
                    version, base, exc)
        return load_changes(store, df, version, key_col, value_col)
    except BaseException:
        store.abort_load(version)
        raise
    return LoadCounts(rows, written, copied, base is not None)


class _ArrowWriter:
    """``mapInArrow`` body of :func:`load_changes`: writes each batch (with a ``base``, only its rows whose value
    differs from the base version's), yields the rows seen and written."""

    def __init__(self, store: ServingStore, version: str, encoded: bool, base: str | None = None) -> None:
        self.store, self.version, self.encoded, self.base = store, version, encoded, base

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        rows = written = 0
        for batch in batches:
            keys, values = batch.column(0), batch.column(1)
            rows += len(keys)
            if self.base is not None:
                keys, values = self._changed(keys, values)
            written += self.store.write_arrow(self.version, keys, values, encoded=self.encoded) if len(keys) else 0
        yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64()), pa.array([written], pa.int64())],
                                         ["rows", "written"])

    def _changed(self, keys: pa.Array, values: pa.Array) -> tuple[pa.Array, pa.Array]:
        import pyarrow as pa

        from lakeloop.serving.base import encode_value

        new = ([None if v is None else v.encode() for v in values.to_pylist()] if self.encoded
               else [encode_value(v) for v in values.to_pylist()])
        old = self.store.get_version_many(self.base, keys.to_pylist())
        mask = pa.array([o is None or o != n for o, n in zip(old, new, strict=True)])
        return keys.filter(mask), values.filter(mask)
