"""Table locations, storage options, snapshots and the checks every operation shares."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lakeloop.errors import LakeloopError

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from pyarrow import fs as pafs
    from pyspark.sql.types import StructType

__all__ = ["DeltaError", "SchemaMismatchError", "ReplaceWhereViolation", "ConcurrentWriteError",
           "UnsupportedFeatureError", "TableLocation", "locate", "open_table",
           "load_table", "check_readable", "spark_schema", "delta_schema_json", "commit_actions",
           "FileEntry", "snapshot_files"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# reader features whose data Spark's parquet reader returns correctly without extra handling
_READABLE_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "typeWidening-preview",
                      "checkpointProtection"}


class DeltaError(LakeloopError):
    """A Delta table operation failed; the message names the table and the cause."""


class SchemaMismatchError(DeltaError):
    """Data does not match the table schema (column name and both types in the message)."""


class ReplaceWhereViolation(DeltaError):
    """A row written with ``replace_where`` lies outside the predicate."""


class ConcurrentWriteError(DeltaError):
    """Another writer committed a change that conflicts with this one; nothing was committed."""


class UnsupportedFeatureError(DeltaError):
    """The table uses a Delta feature this bridge cannot read or write (named in the message)."""


@dataclass(frozen=True)
class TableLocation:
    """One table root seen by the three engines that touch it.

    ``delta`` is what delta-rs opens, ``spark`` the Hadoop URI Spark reads and writes (``s3://``
    becomes ``s3a://``, local paths become ``file:`` URIs), ``fs_path`` the path inside ``fs``
    (a pyarrow filesystem used for listing and footers).
    """

    delta: str
    spark: str
    fs_path: str
    storage_options: dict[str, str]

    @property
    def fs(self) -> pafs.FileSystem:
        from pyarrow import fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem()
        return pafs.FileSystem.from_uri(self.delta)[0]

    @property
    def is_local(self) -> bool:
        return self.delta.startswith("/")

    def spark_path(self, relative: str) -> str:
        return f"{self.spark}/{relative}"

    def fs_join(self, relative: str) -> str:
        return f"{self.fs_path}/{relative}"


def locate(uri: str | os.PathLike[str], storage_options: Mapping[str, str] | None = None) -> TableLocation:
    """Normalise a local path, ``file://`` URI or object-store URI."""
    text = os.fspath(uri).rstrip("/")
    options = dict(storage_options or {})
    m = _SCHEME.match(text)
    if m is None or m.group(1) == "file":
        path = unquote(text[len("file://"):]) if m else text
        path = os.path.abspath(os.path.expanduser(path))
        return TableLocation(path, "file://" + path, path, options)
    scheme = m.group(1).lower()
    spark = "s3a://" + text[m.end():] if scheme in ("s3", "s3a") else text
    fs_path = text[m.end():]
    return TableLocation(text, spark, fs_path, options)


def load_table(loc: TableLocation, version: int | None = None,
               timestamp: dt.datetime | str | None = None) -> DeltaTable | None:
    """The table at ``version`` / ``timestamp`` (latest when both are None); None if there is no table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    if version is not None and timestamp is not None:
        raise ValueError("pass version or timestamp, not both")
    try:
        table = DeltaTable(loc.delta, version=version, storage_options=loc.storage_options or None)
    except TableNotFoundError:
        return None
    except Exception as exc:  # delta-rs raises a generic error for a version that does not exist
        if version is not None and DeltaTable.is_deltatable(loc.delta, loc.storage_options or None):
            raise DeltaError(f"{loc.delta}: cannot load version {version}: {exc}") from exc
        raise
    if timestamp is not None:
        if isinstance(timestamp, dt.datetime) and timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")
        try:
            table.load_as_version(timestamp)
        except Exception as exc:
            raise DeltaError(f"{loc.delta}: no version at or before {timestamp}: {exc}") from exc
    return table


def open_table(loc: TableLocation, version: int | None = None,
               timestamp: dt.datetime | str | None = None) -> DeltaTable:
    """Like :func:`load_table` but a missing table is an error."""
    table = load_table(loc, version, timestamp)
    if table is None:
        raise DeltaError(f"{loc.delta}: not a Delta table (no _delta_log)")
    return table


def check_readable(table: DeltaTable, loc: TableLocation) -> None:
    """Refuse tables whose data needs features the bridge does not implement."""
    proto = table.protocol()
    features = set(proto.reader_features or ())
    mode = (table.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mode not in (None, "none") or "columnMapping" in features or proto.min_reader_version == 2:
        raise UnsupportedFeatureError(f"{loc.delta}: Delta feature 'columnMapping' (mode {mode}) is not supported")
    if "deletionVectors" in features:
        raise UnsupportedFeatureError(f"{loc.delta}: Delta feature 'deletionVectors' is not supported")
    unknown = features - _READABLE_FEATURES
    if unknown or proto.min_reader_version > 3:
        names = ", ".join(sorted(unknown)) or f"reader version {proto.min_reader_version}"
        raise UnsupportedFeatureError(f"{loc.delta}: Delta reader feature(s) {names} not supported")


def spark_schema(table: DeltaTable) -> StructType:
    from pyspark.sql.types import StructType

    return StructType.fromJson(json.loads(table.schema().to_json()))


def _all_nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _all_nullable(v) for k, v in node.items()}
        if "nullable" in out:
            out["nullable"] = True
        if "containsNull" in out:
            out["containsNull"] = True
        if "valueContainsNull" in out:
            out["valueContainsNull"] = True
        return out
    if isinstance(node, list):
        return [_all_nullable(v) for v in node]
    return node


def delta_schema_json(schema: StructType) -> str:
    """Delta schema JSON for a Spark schema, every field nullable (as delta-spark does)."""
    return json.dumps(_all_nullable(schema.jsonValue()))


def _read_text(loc: TableLocation, relative: str) -> str | None:
    from pyarrow import fs as pafs

    filesystem = loc.fs
    path = loc.fs_join(relative)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as fh:
        return fh.read().decode("utf-8")


def commit_actions(loc: TableLocation, version: int) -> Iterator[dict[str, Any]]:
    """The actions of commit ``version`` as parsed JSON objects (``{"add": {...}}``, ...)."""
    text = _read_text(loc, f"_delta_log/{version:020d}.json")
    if text is None:
        raise DeltaError(f"{loc.delta}: commit {version} is missing from _delta_log (log cleaned up?)")
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


@dataclass(frozen=True)
class FileEntry:
    """One data file of a snapshot: path relative to the table root (decoded), typed partition values."""

    path: str
    partition_values: tuple[tuple[str, str | None], ...]
    size: int
    num_records: int | None

    def absolute(self, loc: TableLocation) -> str:
        return self.path if _SCHEME.match(self.path) else loc.spark_path(self.path)


def snapshot_files(table: DeltaTable, partition_columns: list[str],
                   pruning_predicate: str | list | None = None) -> list[FileEntry]:
    """The snapshot's data files, optionally pruned by delta-rs (partition values and file stats)."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    cols = actions.to_pydict()
    n = actions.num_rows
    records = cols.get("num_records", [None] * n)
    entries = [
        FileEntry(unquote(cols["path"][i]),
                  tuple((c, cols[f"partition.{c}"][i]) for c in partition_columns),
                  int(cols["size_bytes"][i]), records[i])
        for i in range(n)
    ]
    if pruning_predicate is None:
        return entries
    root = table.table_uri.rstrip("/")
    if root.startswith("file://"):
        root = unquote(root[len("file://"):])
    keep = set(table.file_uris(file_pruning_predicate=pruning_predicate))
    return [e for e in entries if (e.path if _SCHEME.match(e.path) else f"{root}/{e.path}") in keep]
