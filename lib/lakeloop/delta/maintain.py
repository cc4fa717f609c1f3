"""Table maintenance through delta-rs: merge, history, optimize, vacuum (with orphan sweep), restore."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloop.conf import DEFAULTS
from lakeloop.delta.log import (
    DeltaError,
    SchemaMismatchError,
    TableLocation,
    check_readable,
    load_table,
    locate,
    open_table,
    spark_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["MergeResult", "merge", "history", "optimize", "vacuum", "restore"]


@dataclass(frozen=True)
class MergeResult:
    """Outcome of :func:`merge`: the committed version and delta-rs's metrics."""

    version: int | None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def inserted(self) -> int:
        return int(self.metrics.get("num_target_rows_inserted", 0))

    @property
    def updated(self) -> int:
        return int(self.metrics.get("num_target_rows_updated", 0))

    @property
    def deleted(self) -> int:
        return int(self.metrics.get("num_target_rows_deleted", 0))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def merge(spark: SparkSession, uri: str, source_df: DataFrame, keys: list[str], *, delete_when: str | None = None,
          update: bool = True, insert: bool = True, partition_by: list[str] | None = None,
          extra_columns: list[str] | None = None,
          storage_options: dict[str, str] | None = None) -> MergeResult:
    """Upsert ``source_df`` into the table at ``uri`` by ``keys`` (created from the source if missing).

    Matched rows are updated with the source's columns (``update``), unmatched source rows inserted
    (``insert``).  ``delete_when`` is a SQL predicate over the source row, its columns written as
    ``s.<column>`` (e.g. ``"s.op = 'D'"``): matching target rows are deleted and such source rows are
    never inserted.  The source is collected to the driver as Arrow and merged by delta-rs, so it
    should be the changed rows, not a full table.  Source keys must be unique.  Source columns the
    table lacks (e.g. an operation code) are only visible to ``delete_when``; table columns the source
    lacks keep their values on update and are null on insert.  ``extra_columns``: source columns not
    to store when the merge creates the table.
    """
    from lakeloop.delta.write import _plan, _utc_timestamps, write

    if not keys:
        raise ValueError("merge needs at least one key column")
    loc = locate(uri, storage_options)
    source_df = _utc_timestamps(source_df)
    missing = [k for k in keys if k not in source_df.columns]
    if missing:
        raise SchemaMismatchError(f"{loc.delta}: merge key(s) {missing} not in the source {source_df.columns}")
    table = load_table(loc)
    if table is None:
        rows = source_df if delete_when is None else source_df.where(_unaliased(delete_when, negate=True))
        rows = rows.drop(*[c for c in extra_columns or () if c in rows.columns])
        result = write(rows, uri, partition_by=partition_by, storage_options=storage_options)
        return MergeResult(result.version, {"num_target_rows_inserted": result.rows})
    check_readable(table, loc)
    table_columns = set(spark_schema(table).fieldNames())
    written = [c for c in source_df.columns if c in table_columns]
    plan = _plan(source_df.select(*[f"`{c}`" for c in written]).schema, loc, table, None, False)
    source = _arrow_source(source_df, plan.schema, keys, loc)
    on = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
    merger = table.merge(source, on, source_alias="s", target_alias="t")
    columns = {_quote(c): f"s.{_quote(c)}" for c in written}
    if delete_when is not None:
        merger = merger.when_matched_delete(predicate=delete_when)
    if update:
        merger = merger.when_matched_update(columns)
    if insert:
        merger = merger.when_not_matched_insert(
            columns, predicate=None if delete_when is None else f"NOT coalesce(({delete_when}), false)")
    metrics = merger.execute()
    return MergeResult(int(table.version()), dict(metrics))


def _unaliased(predicate: str, negate: bool) -> str:
    import re

    text = re.sub(r"\bs\.", "", predicate)
    return f"NOT coalesce(({text}), false)" if negate else text


def _arrow_source(source_df: DataFrame, schema: Any, keys: list[str], loc: TableLocation) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    # table columns cast to the table's types; extra source columns (e.g. an op code) kept for predicates
    types = {f.name: f.dataType for f in schema.fields}
    arrow = source_df.select(*[F.col(f"`{c}`").cast(types[c]).alias(c) if c in types else F.col(f"`{c}`")
                               for c in source_df.columns]).toArrow()
    if arrow.num_rows:
        counts = arrow.group_by(keys).aggregate([([], "count_all")])
        dup = counts.filter(pc.greater(counts["count_all"], 1))
        if dup.num_rows:
            sample = dup.slice(0, 3).select(keys).to_pylist()
            raise DeltaError(f"{loc.delta}: merge source has {dup.num_rows} duplicate key(s) on {keys}, e.g. {sample}")
    return pa.table(arrow)


def history(uri: str, limit: int | None = None, *, storage_options: dict[str, str] | None = None) -> list[dict]:
    """Commit infos, newest first, each with its ``version``."""
    return open_table(locate(uri, storage_options)).history(limit)


def optimize(uri: str, partition_filters: list | None = None, z_order: list[str] | None = None, *,
             target_size: int | None = None, storage_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Compact small files (``z_order``: and cluster rows by these columns); returns delta-rs metrics.

    ``partition_filters`` are delta-rs tuple filters, e.g. ``[("dt", "=", "2026-11-01")]``.
    """
    loc = locate(uri, storage_options)
    table = open_table(loc)
    check_readable(table, loc)
    size = target_size or DEFAULTS["delta.target_file_size"]
    if z_order:
        return table.optimize.z_order(z_order, partition_filters=partition_filters, target_size=size)
    return table.optimize.compact(partition_filters=partition_filters, target_size=size)


def restore(uri: str, version: int | dt.datetime | str, *,
            storage_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Make ``version`` (or the version at a UTC timestamp) the latest state with a new commit."""
    return open_table(locate(uri, storage_options)).restore(version)


def vacuum(uri: str, retention_hours: int | None = None, dry_run: bool = False, *,
           storage_options: dict[str, str] | None = None) -> list[str]:
    """Delete files no version within the retention needs, plus what killed writers left behind.

    delta-rs removes unreferenced data files; it ignores paths starting with ``_`` or ``.``,
    so the leftovers of Spark's committer (``_temporary/``, ``_SUCCESS``, ``.crc``) and then empty
    folders are swept here.  Retention defaults to the default of ``delta.vacuum_retention_hours``
    (:class:`lakeloop.lake.Lake` passes the conf's value).

    Returns
    -------
    list of str
        The deleted (with ``dry_run``: deletable) paths, relative to the table root.
    """
    loc = locate(uri, storage_options)
    table = open_table(loc)
    hours = DEFAULTS["delta.vacuum_retention_hours"] if retention_hours is None else int(retention_hours)
    if hours < 0:
        raise ValueError(f"retention_hours must be >= 0, got {hours}")
    removed = [_relative(loc, p) for p in
               table.vacuum(retention_hours=hours, dry_run=dry_run, enforce_retention_duration=False,
                                         full=True)]
    partition_columns = set(table.metadata().partition_columns)
    live = _referenced(table)
    cutoff = time.time() - hours * 3600
    removed += _sweep(loc, partition_columns, live, cutoff, dry_run, skip=set(removed))
    return removed


def _relative(loc: TableLocation, path: str) -> str:
    from urllib.parse import unquote

    path = unquote(path)
    for prefix in (loc.fs_path + "/", loc.delta + "/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _referenced(table: Any) -> set[str]:
    from urllib.parse import unquote

    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=False)).column("path").to_pylist()
    return {unquote(p) for p in actions}


def _hidden(relative: str, partition_columns: set[str]) -> bool:
    for segment in relative.split("/"):
        if segment.startswith(("_", ".")) and segment.split("=", 1)[0] not in partition_columns:
            return True
    return False


def _sweep(loc: TableLocation, partition_columns: set[str], live: set[str], cutoff: float, dry_run: bool,
           skip: set[str]) -> list[str]:
    from pyarrow import fs as pafs

    filesystem = loc.fs
    root = loc.fs_path
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    gone: list[str] = []
    dirs: list[Any] = []
    for info in infos:
        relative = info.path[len(root) + 1:]
        if relative == "_delta_log" or relative.startswith("_delta_log/"):
            continue
        if info.type == pafs.FileType.Directory:
            dirs.append(info)
            continue
        old = info.mtime is None or info.mtime.timestamp() < cutoff
        if old and relative not in live and relative not in skip and _hidden(relative, partition_columns):
            gone.append(relative)
            if not dry_run:
                filesystem.delete_file(info.path)
    if not dry_run:
        for info in sorted(dirs, key=lambda i: i.path.count("/"), reverse=True):
            _remove_if_empty(filesystem, info, cutoff)
    return gone


def _remove_if_empty(filesystem: Any, info: Any, cutoff: float) -> None:
    from pyarrow import fs as pafs

    if info.mtime is not None and info.mtime.timestamp() >= cutoff:
        return
    if not filesystem.get_file_info(pafs.FileSelector(info.path, recursive=False)):
        try:
            filesystem.delete_dir(info.path)
        except OSError:
            pass
