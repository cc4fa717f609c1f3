"""Serving stores: versioned keyspace with an atomic switch, batch view + real-time view.

>>> store = open_store(conf)                                   # doctest: +SKIP
>>> load_dataframe(store, predictions, "2026-11-22", "key", "value")  # doctest: +SKIP
>>> store.lookup(42)                                          # doctest: +SKIP
{'value': [...], 'realtime': {...}}

``serving.store`` picks the backend: ``sqlite`` (embedded file, the default) or
``redis``.  See docs/serving.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakeloop.conf import Conf, ConfError, resolve_uri
from lakeloop.serving.base import LoadInfo, LoadRefused, ServingError, ServingStore, StoreSettings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["ServingStore", "StoreSettings", "ServingError", "LoadRefused", "LoadInfo", "open_store",
           "settings_from_conf", "store_from_config", "load_dataframe"]


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
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    encoded = isinstance(df.schema[value_col].dataType, (StructType, ArrayType, MapType))
    value = F.to_json(F.col(value_col)) if encoded else F.col(value_col)
    pairs = df.select(F.col(key_col).alias("key"), value.alias("value"))
    store.begin_load(version)
    try:
        written = pairs.mapInArrow(_ArrowWriter(store, version, encoded), "rows long")
        expected = written.agg(F.sum("rows")).first()[0] or 0
        store.commit_load(version, expected)
    except BaseException:
        store.abort_load(version)
        raise
    return expected


class _ArrowWriter:
    """``mapInArrow`` body of :func:`load_dataframe`: writes each batch, yields its row count."""

    def __init__(self, store: ServingStore, version: str, encoded: bool) -> None:
        self.store, self.version, self.encoded = store, version, encoded

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        rows = 0
        for batch in batches:
            rows += self.store.write_arrow(self.version, batch.column(0), batch.column(1), encoded=self.encoded)
        yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64())], ["rows"])
