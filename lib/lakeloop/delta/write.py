"""Writes: Spark's native parquet writer into a staging folder, committed by delta-rs on the driver."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.delta.files import StagedFile, delete_staging, list_staged, publish, staging_name
from lakeloop.delta.log import (
    ConcurrentWriteError,
    DeltaError,
    ReplaceWhereViolation,
    SchemaMismatchError,
    TableLocation,
    check_readable,
    commit_actions,
    delta_schema_json,
    load_table,
    locate,
    snapshot_files,
    spark_schema,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructField, StructType

__all__ = ["WriteResult", "write", "commit_files", "MODES"]

MODES = ("append", "overwrite")
_VIOLATION_TAG = "LAKELOOP_REPLACE_WHERE_VIOLATION"
# Spark's default INT96 timestamps carry no parquet statistics; the standard type does
_PARQUET_TIMESTAMPS = "spark.sql.parquet.outputTimestampType"


@contextmanager
def _session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    old = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)


@dataclass(frozen=True)
class WriteResult:
    """Outcome of :func:`write`: the committed version (None when skipped), files and rows added."""

    version: int | None
    files: int
    rows: int
    skipped: bool = False


@dataclass
class _Plan:
    loc: TableLocation
    snapshot: DeltaTable | None
    schema: StructType  # target table schema (Spark), after evolution
    partition_by: list[str]
    new_fields: list[StructField]
    rewrite: list[Any] | None = None  # files replaced by a replace_where on data columns


def write(df: DataFrame, uri: str, mode: str = "append", partition_by: Sequence[str] | str | None = None,
          replace_where: str | None = None, txn: tuple[str, int] | None = None, merge_schema: bool = False,
          *, storage_options: dict[str, str] | None = None,
          commit_metadata: dict[str, str] | None = None) -> WriteResult:
    """Write ``df`` to the Delta table at ``uri`` (created on first write).

    Parameters
    ----------
    df : :class:`DataFrame`
    uri : str
        Local path, ``file://`` URI or object-store URI of the table root.
    mode : str
        ``append`` or ``overwrite`` (all rows, or only those matching ``replace_where``).
    partition_by : list of str, optional
        Partition columns of a new table; for an existing table they must match.
    replace_where : str, optional
        With ``mode="overwrite"``: SQL predicate selecting the rows replaced.  Every written row must
        satisfy it, else :class:`ReplaceWhereViolation` and nothing is committed.  On partition columns
        whole files are replaced; on data columns the files that may hold matching rows are rewritten
        without those rows.
    txn : tuple of (str, int), optional
        ``(app_id, version)``: skipped (``skipped=True``) when the table already recorded a version
        at or above ``version`` for ``app_id``; recorded atomically with the data otherwise.
    merge_schema : bool
        Add columns of ``df`` that the table lacks (additive evolution); otherwise they are an error.
    storage_options : dict, optional
        delta-rs storage options (:class:`lakeloop.lake.Lake` passes ``delta.storage_options``).
    commit_metadata : dict, optional
        Extra key/values recorded in the commit info.

    Returns
    -------
    :class:`WriteResult`
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if replace_where is not None and mode != "overwrite":
        raise ValueError("replace_where needs mode='overwrite'")
    loc = locate(uri, storage_options)
    snapshot = load_table(loc)
    if snapshot is not None:
        check_readable(snapshot, loc)
        if txn is not None and _already_done(snapshot, txn):
            return WriteResult(snapshot.version(), 0, 0, skipped=True)
    df = _utc_timestamps(df)
    plan = _plan(df.schema, loc, snapshot, partition_by, merge_schema)
    df = _conform(df, plan.schema)
    if replace_where is not None:
        partitions_only = _on_partitions_only(df.sparkSession, replace_where, plan)
        df = _enforce(df, replace_where)
        if not partitions_only and plan.snapshot is not None:
            df = _with_kept_rows(df, plan, replace_where)
    staging = staging_name()
    try:
        staged = _write_files(df, loc, staging, plan.partition_by, replace_where)
    except BaseException:
        delete_staging(loc, staging)
        raise
    try:
        result = _commit(df.sparkSession, plan, staged, mode, replace_where, txn,
                         {"lakeloop.writeId": staging, **(commit_metadata or {})})
    except BaseException:
        delete_files(loc, staged)
        delete_staging(loc, staging)
        raise
    if result.version is None and not result.skipped:
        # delta-rs committed with put-if-absent of _delta_log/<version>.json, yet no commit carries the id:
        # another writer replaced the file (a log store without put-if-absent); its files stay for vacuum
        raise DeltaError(f"{loc.delta}: the commit of write {staging} is not in the log: another writer "
                         "replaced it, its rows are not in the table; retry the write")
    return result


def _already_done(table: DeltaTable, txn: tuple[str, int]) -> bool:
    app_id, version = txn
    recorded = table.transaction_version(app_id)
    return recorded is not None and int(version) <= recorded


def _utc_timestamps(df: DataFrame) -> DataFrame:
    """timestamp_ntz columns become UTC timestamps (Delta's timestampNtz feature breaks some readers)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    for field in df.schema.fields:
        if isinstance(field.dataType, T.TimestampNTZType):
            df = df.withColumn(field.name, F.to_utc_timestamp(F.col(field.name).cast("timestamp"),
                                                              df.sparkSession.conf.get("spark.sql.session.timeZone")))
        elif "timestamp_ntz" in field.dataType.json():
            raise SchemaMismatchError(f"column {field.name}: nested timestamp_ntz ({field.dataType.simpleString()}) "
                                      "is not supported; cast it to timestamp (UTC)")
    return df


def _plan(incoming: StructType, loc: TableLocation, snapshot: DeltaTable | None,
          partition_by: Sequence[str] | str | None, merge_schema: bool) -> _Plan:
    from pyspark.sql.types import StructType

    wanted = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    if snapshot is None:
        missing = [c for c in wanted if c not in incoming.fieldNames()]
        if missing:
            raise SchemaMismatchError(f"{loc.delta}: partition column(s) {missing} not in the data "
                                      f"(columns: {incoming.fieldNames()})")
        _check_names(incoming, loc)
        return _Plan(loc, None, _nullable(incoming), wanted, [])
    current = spark_schema(snapshot)
    existing = list(snapshot.metadata().partition_columns)
    if wanted and wanted != existing:
        raise SchemaMismatchError(f"{loc.delta}: partition_by {wanted} differs from the table's {existing}")
    table_types = {f.name: f for f in current.fields}
    lower = {n.lower(): n for n in table_types}
    new_fields = []
    for field in incoming.fields:
        if field.name in table_types:
            have = table_types[field.name].dataType
            if _strip_nullability(have) != _strip_nullability(field.dataType):
                raise SchemaMismatchError(f"{loc.delta}: column {field.name}: table has {have.simpleString()}, "
                                          f"data has {field.dataType.simpleString()}")
        elif field.name.lower() in lower:
            raise SchemaMismatchError(f"{loc.delta}: column {field.name} differs only in case from the table's "
                                      f"{lower[field.name.lower()]}")
        elif merge_schema:
            new_fields.append(_nullable(StructType([field])).fields[0])
        else:
            raise SchemaMismatchError(f"{loc.delta}: column {field.name} ({field.dataType.simpleString()}) is not "
                                      f"in the table schema {current.simpleString()}; "
                                      "pass merge_schema=True to add it")
    return _Plan(loc, snapshot, StructType(current.fields + new_fields), existing, new_fields)


def _check_names(schema: StructType, loc: TableLocation) -> None:
    seen: dict[str, str] = {}
    for name in schema.fieldNames():
        if name.lower() in seen:
            raise SchemaMismatchError(f"{loc.delta}: columns {seen[name.lower()]} and {name} differ only in case")
        seen[name.lower()] = name


def _strip_nullability(data_type: Any) -> Any:
    from pyspark.sql.types import _parse_datatype_json_value

    from lakeloop.delta.log import _all_nullable

    return _parse_datatype_json_value(_all_nullable(data_type.jsonValue()))


def _nullable(schema: StructType) -> StructType:
    from pyspark.sql.types import StructType

    from lakeloop.delta.log import _all_nullable

    return StructType.fromJson(_all_nullable(schema.jsonValue()))


def _conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Columns in table order; columns the data lacks are written as nulls."""
    from pyspark.sql import functions as F

    present = set(df.columns)
    return df.select(*[F.col(f"`{f.name}`") if f.name in present else F.lit(None).cast(f.dataType).alias(f.name)
                       for f in schema.fields])


def _on_partitions_only(spark: SparkSession, predicate: str, plan: _Plan) -> bool:
    """Validate ``predicate`` against the table schema; True when it reads partition columns only."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    empty = spark.createDataFrame([], plan.schema)
    try:
        _resolve(empty.select(F.expr(predicate)))
    except AnalysisException as exc:
        raise ValueError(f"replace_where {predicate!r} is not a valid predicate for {plan.loc.delta}: {exc}") from None
    try:
        _resolve(empty.select(*plan.partition_by).select(F.expr(predicate)))
        return True
    except AnalysisException:
        return False


def _with_kept_rows(df: DataFrame, plan: _Plan, predicate: str) -> DataFrame:
    """For a predicate on data columns: the files that may hold matching rows are rewritten, so
    their rows outside the predicate are written again beside ``df`` (delta-spark does the same)."""
    from pyspark.sql import functions as F

    from lakeloop.delta.read import read_files

    assert plan.snapshot is not None
    try:
        plan.rewrite = snapshot_files(plan.snapshot, plan.partition_by, predicate)
    except Exception:  # noqa: BLE001 - delta-rs cannot parse every Spark predicate: rewrite all files
        plan.rewrite = snapshot_files(plan.snapshot, plan.partition_by)
    if not plan.rewrite:
        return df
    current = spark_schema(plan.snapshot)
    old = read_files(df.sparkSession, plan.loc, plan.rewrite, current, plan.partition_by)
    kept = _conform(old.where(~F.coalesce(F.expr(predicate), F.lit(False))), plan.schema)
    return df.unionByName(kept)


def _resolve(frame: DataFrame) -> StructType:
    """Analyse ``frame`` now (a projection's schema needs its expressions resolved)."""
    return frame.schema


def _enforce(df: DataFrame, predicate: str) -> DataFrame:
    """Fail the write task on the first row outside ``predicate`` (checked while writing: one pass)."""
    from pyspark.sql import functions as F

    message = F.concat(F.lit(f"{_VIOLATION_TAG}: row outside replace_where {predicate!r}: "),
                       F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns])))
    return df.where(F.when(F.coalesce(F.expr(predicate), F.lit(False)), F.lit(True))
                    .otherwise(F.raise_error(message)))


def _write_files(df: DataFrame, loc: TableLocation, staging: str, partition_by: list[str],
                 replace_where: str | None) -> list[StagedFile]:
    writer = df.write.mode("errorifexists").option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        with _session_conf(df.sparkSession, _PARQUET_TIMESTAMPS, "TIMESTAMP_MICROS"):
            writer.parquet(loc.spark_path(staging))
    except Exception as exc:
        text = str(exc)
        if _VIOLATION_TAG in text:
            detail = text[text.index(_VIOLATION_TAG) + len(_VIOLATION_TAG) + 2:].split("\n")[0]
            detail = detail.split(" SQLSTATE")[0]
            raise ReplaceWhereViolation(f"{loc.delta}: {detail}; nothing was committed") from None
        raise
    files = [f for f in list_staged(loc, staging, partition_by) if f.num_records > 0]
    if partition_by:
        files = publish(loc, staging, files)
        delete_staging(loc, staging)
    return files


def _removals(spark: SparkSession, plan: _Plan, mode: str, replace_where: str | None) -> list[Any]:
    """Files of the read snapshot that this overwrite replaces."""
    if mode != "overwrite" or plan.snapshot is None:
        return []
    if plan.rewrite is not None:
        return plan.rewrite
    entries = snapshot_files(plan.snapshot, plan.partition_by)
    if replace_where is None or not entries:
        return entries
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    types = {f.name: f.dataType for f in plan.schema.fields}
    rows = [(e.path, *[v for _, v in e.partition_values]) for e in entries]
    # partition values carry their logical types already; Spark evaluates the predicate exactly as in the check
    schema = StructType([StructField("__path", StringType())] +
                        [StructField(c, types[c]) for c in plan.partition_by])
    frame = spark.createDataFrame(rows, schema)
    hit = {r[0] for r in frame.where(F.coalesce(F.expr(replace_where), F.lit(False))).select("__path").collect()}
    return [e for e in entries if e.path in hit]


def _conflicts(plan: _Plan, latest: DeltaTable, removed: list[Any], mode: str, replace_where: str | None,
               spark: SparkSession) -> None:
    """An overwrite must not silently drop files another writer committed after our snapshot."""
    if mode != "overwrite" or plan.snapshot is None:
        return
    start, end = plan.snapshot.version(), latest.version()
    if end == start:
        return
    removed_paths = {e.path for e in removed}
    added: list[dict[str, Any]] = []
    for version in range(start + 1, end + 1):
        for action in commit_actions(plan.loc, version):
            if "remove" in action:
                from urllib.parse import unquote

                if unquote(action["remove"]["path"]) in removed_paths:
                    raise ConcurrentWriteError(
                        f"{plan.loc.delta}: version {version} removed a file this overwrite replaces; retry the write")
            elif "add" in action and action["add"].get("dataChange", True):
                added.append(action["add"])
    if not added:
        return
    if replace_where is None or plan.rewrite is not None:
        raise ConcurrentWriteError(f"{plan.loc.delta}: {len(added)} file(s) were added by versions "
                                   f"{start + 1}..{end} during this overwrite; retry the write")
    from pyspark.sql import functions as F

    frame = _partition_frame(spark, plan, [a["partitionValues"] for a in added])
    if frame.where(F.coalesce(F.expr(replace_where), F.lit(False))).limit(1).count():
        raise ConcurrentWriteError(f"{plan.loc.delta}: versions {start + 1}..{end} added files matching "
                                   f"replace_where {replace_where!r} during this overwrite; retry the write")


def _partition_frame(spark: SparkSession, plan: _Plan, values: Sequence[dict[str, str | None]]) -> DataFrame:
    """One row of typed partition columns per mapping of Delta's partition strings (``partitionValues``)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    rows = [tuple(v.get(c) for c in plan.partition_by) for v in values]
    frame = spark.createDataFrame(rows, StructType([StructField(c, StringType()) for c in plan.partition_by]))
    types = {f.name: f.dataType for f in plan.schema.fields}
    return frame.select(*[F.col(c).cast(types[c]).alias(c) for c in plan.partition_by])


def commit_files(spark: SparkSession, uri: str, files: Sequence[StagedFile], schema: StructType,
                 mode: str = "append", partition_by: Sequence[str] | str | None = None,
                 replace_where: str | None = None, *, replace_partition: dict[str, str] | None = None,
                 write_id: str | None = None, storage_options: dict[str, str] | None = None,
                 commit_metadata: dict[str, str] | None = None) -> WriteResult:
    """Commit parquet files written without Spark's writer as one transaction of the table at ``uri``.

    The files already lie under the table root (``files``' paths are relative to it) in ``k=v`` folders of
    their partition values; ``schema`` is the Spark schema of their rows, checked against the table's as
    :func:`write` checks a frame's (the table is created on the first commit).  ``mode`` and
    ``replace_where`` mean what they mean for :func:`write`, except that ``replace_where`` may read partition
    columns only: a file whose partition values lie outside it is a :class:`ReplaceWhereViolation` and
    nothing is committed.  ``replace_partition`` (``{column: value}`` in Delta's string form, with ``mode=
    "overwrite"``, instead of ``replace_where``) replaces exactly that partition and is checked without Spark;
    then a file another writer added meanwhile is a :class:`ConcurrentWriteError`.  The files are not deleted
    on failure (no snapshot lists them: vacuum removes them).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if (replace_where is not None or replace_partition is not None) and mode != "overwrite":
        raise ValueError("replace_where and replace_partition need mode='overwrite'")
    if replace_where is not None and replace_partition is not None:
        raise ValueError("pass replace_where or replace_partition, not both")
    loc = locate(uri, storage_options)
    snapshot = load_table(loc)
    if snapshot is not None:
        check_readable(snapshot, loc)
    plan = _plan(schema, loc, snapshot, partition_by, False)
    if replace_where is not None:
        _check_partition_predicate(spark, plan, files, replace_where)
    if replace_partition is not None:
        plan.rewrite = _partition_files(plan, files, replace_partition)
        replace_where = " AND ".join(f"{c} = '{v}'" for c, v in replace_partition.items())  # commit info only
    write_id = write_id or staging_name()
    result = _commit(spark, plan, list(files), mode, replace_where, None,
                     {"lakeloop.writeId": write_id, **(commit_metadata or {})})
    if result.version is None:
        raise DeltaError(f"{loc.delta}: the commit of write {write_id} is not in the log: another writer "
                         "replaced it, its rows are not in the table; retry the write")
    return result


def _partition_files(plan: _Plan, files: Sequence[StagedFile], values: dict[str, str]) -> list[Any]:
    """The snapshot's files of the partition ``values``; ReplaceWhereViolation when a file to commit is not in it."""
    if sorted(values) != sorted(plan.partition_by):
        raise ValueError(f"replace_partition {values}: {plan.loc.delta} is partitioned by "
                         f"{plan.partition_by or 'nothing'}")
    outside = [f for f in files if any(f.partition_values.get(c) != v for c, v in values.items())]
    if outside:
        raise ReplaceWhereViolation(f"{plan.loc.delta}: files of partition {outside[0].partition_values} lie "
                                    f"outside the replaced partition {values}; nothing was committed")
    if plan.snapshot is None:
        return []
    return [e for e in snapshot_files(plan.snapshot, plan.partition_by)
            if all(partition_string(dict(e.partition_values)[c]) == v for c, v in values.items())]


def _check_partition_predicate(spark: SparkSession, plan: _Plan, files: Sequence[StagedFile], predicate: str) -> None:
    """ReplaceWhereViolation naming a file whose partition values lie outside ``predicate``."""
    from pyspark.sql import functions as F

    if not _on_partitions_only(spark, predicate, plan):
        raise ValueError(f"replace_where {predicate!r}: committed files can replace partitions only "
                         f"({plan.loc.delta} is partitioned by {plan.partition_by or 'nothing'})")
    values = [f.partition_values for f in files]
    outside = _partition_frame(spark, plan, values).where(~F.coalesce(F.expr(predicate), F.lit(False)))
    first = outside.limit(1).collect()
    if first:
        raise ReplaceWhereViolation(f"{plan.loc.delta}: files of partition {first[0].asDict()} lie outside "
                                    f"replace_where {predicate!r}; nothing was committed")


def _commit(spark: SparkSession, plan: _Plan, staged: list[StagedFile], mode: str, replace_where: str | None,
            txn: tuple[str, int] | None, commit_metadata: dict[str, str] | None) -> WriteResult:
    from deltalake import Schema
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

    now = int(time.time() * 1000)
    adds = [AddAction(f.path, f.size, f.partition_values, f.modification_time, True, f.stats) for f in staged]
    metadata = {"lakeloop.mode": mode, **({"lakeloop.replaceWhere": replace_where} if replace_where else {}),
                **(commit_metadata or {})}
    props = CommitProperties(custom_metadata=metadata,
                             app_transactions=[Transaction(txn[0], int(txn[1]), now)] if txn else None)
    rows = sum(f.num_records for f in staged)
    loc = plan.loc
    if plan.snapshot is None:
        from deltalake.transaction import create_table_with_add_actions

        try:
            create_table_with_add_actions(loc.delta, Schema.from_json(delta_schema_json(plan.schema)), adds,
                                          mode="error", partition_by=plan.partition_by or None,
                                          storage_options=loc.storage_options or None, commit_properties=props)
            return WriteResult(0, len(adds), rows)
        except Exception as exc:
            latest = load_table(loc)
            if latest is None or mode != "append":
                raise DeltaError(f"{loc.delta}: creating the table failed: {exc}") from exc
            # another writer created the table meanwhile: append to it like any other write
            plan = _plan(plan.schema, loc, latest, plan.partition_by, False)
    removed = _removals(spark, plan, mode, replace_where)
    latest = load_table(loc)
    assert latest is not None
    if txn is not None and _already_done(latest, txn):
        delete_files(loc, staged)
        return WriteResult(latest.version(), 0, 0, skipped=True)
    _conflicts(plan, latest, removed, mode, replace_where, spark)
    if plan.new_fields:
        from deltalake import Field

        known = set(spark_schema(latest).fieldNames())
        fields = [Field.from_json(_field_json(f)) for f in plan.new_fields if f.name not in known]
        if fields:
            latest.alter.add_columns(fields)
    removes = [RemoveAction(e.path, True, now, e.size, _partition_strings(e)) for e in removed]
    start = latest.version()  # read before committing: the table object may move to the new version
    try:
        latest.create_write_transaction(adds + removes, "append", latest.schema(),
                                        partition_by=plan.partition_by or None, commit_properties=props)
    except CommitFailedError as exc:
        again = load_table(loc)
        if txn is not None and again is not None and _already_done(again, txn):
            delete_files(loc, staged)
            return WriteResult(again.version(), 0, 0, skipped=True)
        raise ConcurrentWriteError(f"{loc.delta}: commit failed: {exc}") from exc
    return WriteResult(_committed_version(loc, metadata["lakeloop.writeId"], start), len(adds), rows)


def _committed_version(loc: TableLocation, write_id: str, start: int) -> int | None:
    """The version our commit got: the one after ``start`` whose commit info carries ``write_id``.

    delta-rs rebases a blind append past versions other writers committed meanwhile, and more may land
    after it, so the latest version is not necessarily ours: each commit file after ``start`` is read (its
    name is its version; delta-rs's ``history()`` read right after a commit can pair an entry with the
    wrong version while other processes commit).  None when no commit carries the id (see :func:`write`).
    """
    table = load_table(loc)
    end = table.version() if table is not None else start
    for version in range(start + 1, end + 1):
        for action in commit_actions(loc, version):
            if "commitInfo" in action:
                if action["commitInfo"].get("lakeloop.writeId") == write_id:
                    return version
                break
    return None


def _field_json(field: StructField) -> str:
    import json

    return json.dumps(field.jsonValue())


def _partition_strings(entry: Any) -> dict[str, str | None]:
    return {name: partition_string(value) for name, value in entry.partition_values}


def partition_string(value: Any) -> str | None:
    """A typed partition value in Delta's string form (timestamps in UTC)."""
    import datetime as dt

    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def delete_files(loc: TableLocation, staged: list[StagedFile]) -> None:
    for f in staged:
        try:
            loc.fs.delete_file(loc.fs_join(f.path))
        except (FileNotFoundError, OSError):
            pass
