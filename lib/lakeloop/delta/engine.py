"""Which engine moves a table's rows: the delta-rs bridge or delta-spark (``delta.engine``).

``lakeloop.tables.read`` and ``write`` come from here: one signature, two engines.  ``bridge`` is the
delta-rs bridge of :mod:`lakeloop.delta.read` / :mod:`lakeloop.delta.write`; ``delta-spark`` is the JVM
connector (``spark.read.format("delta")`` / ``df.write.format("delta")``) with the same arguments mapped to
its options (``replaceWhere``, ``txnAppId`` / ``txnVersion``, ``mergeSchema``, ``versionAsOf`` /
``timestampAsOf``) and its errors mapped to lakeloop's; ``auto`` is delta-spark when the session has it
loaded (:func:`lakeloop.jvm.delta_loaded`), the bridge otherwise.  ``build_session`` records the conf's
choice in the session as ``spark.lakeloop.delta.engine``; an ``engine=`` argument overrides it per call.
Both engines write the same standard tables; maintenance (merge, optimize, vacuum, history) and streaming
stay on the bridge.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lakeloop.delta import read as bridge_read
from lakeloop.delta import write as bridge_write
from lakeloop.delta.files import staging_name
from lakeloop.delta.log import (
    ConcurrentWriteError,
    DeltaError,
    ReplaceWhereViolation,
    SchemaMismatchError,
    UnsupportedFeatureError,
    locate,
)
from lakeloop.delta.write import MODES, WriteResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["ENGINES", "ENGINE_KEY", "engine_of", "read", "write"]

ENGINES = ("auto", "bridge", "delta-spark")
ENGINE_KEY = "spark.lakeloop.delta.engine"
# delta-spark error classes / exception names -> lakeloop's errors (first match wins)
_ERRORS: tuple[tuple[type[DeltaError], tuple[str, ...]], ...] = (
    (ConcurrentWriteError, ("DELTA_CONCURRENT_", "ConcurrentAppendException", "ConcurrentDeleteReadException",
                            "ConcurrentDeleteDeleteException", "ConcurrentTransactionException",
                            "MetadataChangedException", "ProtocolChangedException", "DELTA_METADATA_CHANGED",
                            "DELTA_PROTOCOL_CHANGED")),
    (ReplaceWhereViolation, ("DELTA_REPLACE_WHERE_MISMATCH", "does not conform to partial table overwrite")),
    (SchemaMismatchError, ("DELTA_FAILED_TO_MERGE_FIELDS", "DELTA_METADATA_MISMATCH", "A schema mismatch detected",
                           "DELTA_SCHEMA_CHANGED", "DELTA_PARTITION_COLUMN")),
    (UnsupportedFeatureError, ("DELTA_FEATURES_REQUIRE_MANUAL_ENABLEMENT", "DELTA_UNSUPPORTED_FEATURES",
                               "DELTA_INVALID_PROTOCOL_VERSION")),
)


def engine_of(spark: SparkSession, engine: str | None = None) -> str:
    """``bridge`` or ``delta-spark`` for ``engine`` (default: the session's ``spark.lakeloop.delta.engine``).

    Raises
    ------
    DeltaError
        When ``delta-spark`` is asked for and the session has no delta-spark loaded.
    """
    from lakeloop.jvm import SETUP_HINT, delta_loaded

    chosen = engine or spark.conf.get(ENGINE_KEY, "auto") or "auto"
    if chosen not in ENGINES:
        raise ValueError(f"delta.engine {chosen!r}: expected one of {', '.join(ENGINES)}")
    if chosen == "bridge":
        return "bridge"
    loaded = delta_loaded(spark)
    if chosen == "delta-spark" and not loaded:
        raise DeltaError(f"delta.engine is delta-spark but this Spark {spark.version} session has no delta-spark "
                         f"loaded (jars from {SETUP_HINT}, Delta SQL extension and catalog)")
    return "delta-spark" if loaded else "bridge"


def read(spark: SparkSession, uri: str, version: int | None = None, timestamp: dt.datetime | str | None = None,
         *, where: str | None = None, filters: list | None = None, storage_options: dict[str, str] | None = None,
         engine: str | None = None) -> DataFrame:
    """Read a Delta table with the session's engine; parameters as :func:`lakeloop.delta.read.read`."""
    if engine_of(spark, engine) == "bridge":
        return bridge_read.read(spark, uri, version, timestamp, where=where, filters=filters,
                                storage_options=storage_options)
    if version is not None and timestamp is not None:
        raise ValueError("pass version or timestamp, not both")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    if timestamp is not None:
        reader = reader.option("timestampAsOf", _timestamp(timestamp))
    frame = _mapped(lambda: reader.load(locate(uri, storage_options).spark), uri)
    if filters is not None:
        frame = frame.where(bridge_read._filters_to_sql(filters))
    if where is not None:
        frame = frame.where(where)
    return frame


def write(df: DataFrame, uri: str, mode: str = "append", partition_by: Sequence[str] | str | None = None,
          replace_where: str | None = None, txn: tuple[str, int] | None = None, merge_schema: bool = False,
          *, storage_options: dict[str, str] | None = None, commit_metadata: dict[str, str] | None = None,
          engine: str | None = None) -> WriteResult:
    """Write ``df`` with the session's engine; parameters and result as :func:`lakeloop.delta.write.write`."""
    if engine_of(df.sparkSession, engine) == "bridge":
        return bridge_write.write(df, uri, mode, partition_by, replace_where, txn, merge_schema,
                                  storage_options=storage_options, commit_metadata=commit_metadata)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if replace_where is not None and mode != "overwrite":
        raise ValueError("replace_where needs mode='overwrite'")
    path = locate(uri, storage_options).spark
    writer = df.write.format("delta").mode(mode)
    columns = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    if columns:
        writer = writer.partitionBy(*columns)
    # the write id finds this write's own commit afterwards: other writers may commit before and after it
    write_id = staging_name()
    user_metadata = {"lakeloop.writeId": write_id, **(commit_metadata or {})}
    options = {"replaceWhere": replace_where, "mergeSchema": "true" if merge_schema else None,
               "userMetadata": json.dumps(user_metadata, sort_keys=True)}
    if txn is not None:
        options.update(txnAppId=str(txn[0]), txnVersion=str(int(txn[1])))
    for key, value in options.items():
        if value is not None:
            writer = writer.option(key, value)
    before = _latest(df.sparkSession, path)
    _mapped(lambda: writer.save(path), uri)
    start = None if before is None else before["version"]
    own, latest = _own_commit(df.sparkSession, path, start, write_id)
    if own is None:
        if txn is not None:  # delta-spark skipped the write: the table recorded this txn version already
            return WriteResult(latest, 0, 0, skipped=True)
        raise DeltaError(f"{uri}: delta-spark reported the write done, but no commit after version {start} "
                         f"carries its write id {write_id} (lost to a concurrent writer?)")
    metrics = own.get("operationMetrics") or {}
    return WriteResult(own["version"], int(metrics.get("numFiles", 0)), int(metrics.get("numOutputRows", 0)))


def _timestamp(value: dt.datetime | str) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _latest(spark: SparkSession, path: str) -> dict[str, Any] | None:
    """The last commit of the table at ``path`` (version, operationMetrics) as delta-spark reports it."""
    rows = _history(spark, path, 1)
    return rows[0] if rows else None


def _history(spark: SparkSession, path: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` commits of the table at ``path``, newest first; empty when there is no table."""
    from pyspark.errors import AnalysisException

    try:
        rows = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT {int(limit)}").collect()
    except AnalysisException:
        return []
    return [r.asDict() for r in rows]


def _write_id(commit: dict[str, Any]) -> str | None:
    try:
        return json.loads(commit.get("userMetadata") or "{}").get("lakeloop.writeId")
    except (ValueError, AttributeError):  # userMetadata another writer set, not lakeloop's JSON
        return None


def _own_commit(spark: SparkSession, path: str, start: int | None,
                write_id: str) -> tuple[dict[str, Any] | None, int | None]:
    """``(commit, latest version)``: the commit after version ``start`` that carries ``write_id``.

    Found by its id, not as the latest commit: another writer may commit between this write's commit and
    the history read.  The history window grows until it reaches back to ``start`` (commits keep landing).
    """
    first = -1 if start is None else start
    limit = 8
    while True:
        rows = _history(spark, path, limit)
        latest = rows[0]["version"] if rows else None
        for row in rows:
            if row["version"] > first and _write_id(row) == write_id:
                return row, latest
        if not rows or rows[-1]["version"] <= first + 1 or len(rows) < limit:
            return None, latest
        limit *= 4


def _mapped(action: Any, uri: str) -> Any:
    """Run ``action``; a delta-spark error becomes the lakeloop error of the same meaning (the cause kept)."""
    try:
        return action()
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        for error, markers in _ERRORS:
            if any(marker in text for marker in markers):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise error(f"{uri}: delta-spark: {first}") from exc
        raise
