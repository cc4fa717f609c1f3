"""The lake: where a run's tables live and how they are opened, built from conf and passed to every job.

A :class:`Lake` carries the warehouse root and the table settings of ``delta.*`` (storage options,
vacuum retention, target file size) and hands them to every :mod:`lakeloop.tables` call it makes, so no
table setting is module-global state: two lakes with different options can be used side by side.

>>> from lakeloop.conf import load_conf  # doctest: +SKIP
>>> lake = Lake.from_conf(load_conf("local"))  # doctest: +SKIP
>>> lake.uri("silver.events")  # doctest: +SKIP
'/path/to/warehouse/silver/events'
>>> lake.read(spark, "silver.events", where="dt = '2026-11-01'").count()  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloop import tables
from lakeloop.conf import DEFAULTS, resolve_uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

__all__ = ["Lake"]

_NAME = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Lake:
    """Tables under one warehouse root, opened with one set of storage options.

    Parameters
    ----------
    warehouse : str
        Root URI of the tables: ``<warehouse>/<layer>/<table>``.
    storage_options : dict
        delta-rs storage options (object stores, HDFS), passed to every table operation.
    vacuum_retention_hours : int
        Retention of :meth:`vacuum` when none is given.
    target_file_size : int
        Target size in bytes of the files :meth:`optimize` writes.
    """

    warehouse: str
    storage_options: dict[str, str] = field(default_factory=dict)
    vacuum_retention_hours: int = DEFAULTS["delta.vacuum_retention_hours"]
    target_file_size: int = DEFAULTS["delta.target_file_size"]

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> Lake:
        """The lake of ``conf``: ``warehouse`` and ``delta.*``."""
        return cls(warehouse=resolve_uri(conf["warehouse"]).rstrip("/"),
                   storage_options={str(k): str(v) for k, v in conf["delta.storage_options"].items()},
                   vacuum_retention_hours=int(conf["delta.vacuum_retention_hours"]),
                   target_file_size=int(conf["delta.target_file_size"]))

    def uri(self, table: str) -> str:
        """URI of ``table``: a name ``layer.name`` (``silver.events`` -> ``<warehouse>/silver/events``), or a
        path or URI, returned as it is."""
        if _NAME.match(table):
            layer, name = table.split(".")
            return f"{self.warehouse}/{layer}/{name}"
        if "/" in table:
            return table
        raise ValueError(f"table name {table!r}: expected layer.name, e.g. silver.events")

    def path(self, relative: str) -> str:
        """A location under the warehouse root (reports, state, checkpoints)."""
        return f"{self.warehouse}/{relative.lstrip('/')}"

    def table_names(self, layers: tuple[str, ...] = ("bronze", "silver", "gold")) -> list[str]:
        """Every Delta table ``layer.name`` under the warehouse's ``layers``, sorted."""
        from pyarrow import fs as pafs

        from lakeloop.delta.log import locate

        loc = locate(self.warehouse, self.storage_options)
        names = []
        for layer in layers:
            selector = pafs.FileSelector(loc.fs_join(layer), allow_not_found=True)
            for info in loc.fs.get_file_info(selector):
                if info.type == pafs.FileType.Directory and _NAME.match(f"{layer}.{info.base_name}"):
                    names.append(f"{layer}.{info.base_name}")
        return sorted(n for n in names if self.exists(n))

    def partition_values(self, table: str, column: str = "dt") -> list[str]:
        """The distinct values of partition column ``column`` in ``table``'s latest snapshot (from the log: no
        data is read), sorted; empty when there is no table."""
        return sorted(self.partition_files(table, column))

    def partition_files(self, table: str, column: str = "dt") -> dict[str, list[str]]:
        """``{value: data file paths}`` of partition column ``column`` in ``table``'s latest snapshot (from the
        log: no data is read); empty when there is no table or it is not partitioned by ``column``."""
        return self._partitioned(table, column)[1] or {}

    def partition_state(self, table: str, column: str = "dt") -> tuple[int | None, dict[str, str]]:
        """``(version, {value: fingerprint})`` of ``table``'s latest snapshot, from the log (no data is read): the
        fingerprint of a partition is a digest of its data files' paths, so it changes exactly when a commit
        adds or removes a file of that partition.  ``(None, {})`` when there is no table."""
        import hashlib

        version, files = self._partitioned(table, column)
        return version, {v: hashlib.sha256("\n".join(sorted(p)).encode()).hexdigest()[:20]
                         for v, p in (files or {}).items()}

    def _partitioned(self, table: str, column: str) -> tuple[int | None, dict[str, list[str]] | None]:
        """The latest snapshot's version and its data files by value of ``column`` (None values left out):
        ``(None, None)`` without a table, ``(version, None)`` when it is not partitioned by ``column``."""
        import pyarrow as pa

        from lakeloop.delta.log import load_table, locate

        snapshot = load_table(locate(self.uri(table), self.storage_options))
        if snapshot is None:
            return None, None
        if column not in snapshot.metadata().partition_columns:
            return snapshot.version(), None
        actions = pa.table(snapshot.get_add_actions(flatten=True))
        files: dict[str, list[str]] = {}
        for value, path in zip(actions.column(f"partition.{column}").to_pylist(),
                               actions.column("path").to_pylist(), strict=True):
            if value is not None:
                files.setdefault(value, []).append(path)
        return snapshot.version(), files

    @staticmethod
    def partitions_between(state: tuple[int | None, dict[str, str]], lo: str | None, hi: str) -> Any:
        """What a reader of ``dt`` partitions ``lo..hi`` (``lo`` None: from the first) of a table depends on, from
        its :meth:`partition_state`: those partitions' fingerprints, or the table version when it has no ``dt``."""
        version, parts = state
        if not parts:
            return version
        return sorted((d, f) for d, f in parts.items() if (lo is None or d >= lo) and d <= hi)

    def exists(self, table: str) -> bool:
        return tables.exists(self.uri(table), storage_options=self.storage_options)

    def version(self, table: str) -> int | None:
        return tables.version(self.uri(table), storage_options=self.storage_options)

    def read(self, spark: SparkSession, table: str, **kwargs: Any) -> DataFrame:
        """:func:`lakeloop.tables.read` of ``table`` (``version``, ``timestamp``, ``where``, ``filters``)."""
        return tables.read(spark, self.uri(table), storage_options=self.storage_options, **kwargs)

    def write(self, df: DataFrame, table: str, **kwargs: Any) -> tables.WriteResult:
        """:func:`lakeloop.tables.write` to ``table`` (``mode``, ``partition_by``, ``replace_where``, ``txn``)."""
        return tables.write(df, self.uri(table), storage_options=self.storage_options, **kwargs)

    def merge(self, spark: SparkSession, table: str, source_df: DataFrame, keys: list[str],
              **kwargs: Any) -> tables.MergeResult:
        return tables.merge(spark, self.uri(table), source_df, keys, storage_options=self.storage_options, **kwargs)

    def history(self, table: str, limit: int | None = None) -> list[dict]:
        return tables.history(self.uri(table), limit, storage_options=self.storage_options)

    def optimize(self, table: str, partition_filters: list | None = None, z_order: list[str] | None = None,
                 *, target_size: int | None = None) -> dict[str, Any]:
        return tables.optimize(self.uri(table), partition_filters, z_order,
                               target_size=target_size or self.target_file_size,
                               storage_options=self.storage_options)

    def vacuum(self, table: str, retention_hours: int | None = None, dry_run: bool = False) -> list[str]:
        hours = self.vacuum_retention_hours if retention_hours is None else retention_hours
        return tables.vacuum(self.uri(table), hours, dry_run, storage_options=self.storage_options)

    def restore(self, table: str, version: Any) -> dict[str, Any]:
        return tables.restore(self.uri(table), version, storage_options=self.storage_options)

    def read_stream(self, spark: SparkSession, table: str, **kwargs: Any) -> DataFrame:
        return tables.read_stream(spark, self.uri(table), storage_options=self.storage_options, **kwargs)

    def stream_to(self, df: DataFrame, table: str, checkpoint: str, **kwargs: Any) -> StreamingQuery:
        return tables.stream_to(df, self.uri(table), checkpoint, storage_options=self.storage_options, **kwargs)
