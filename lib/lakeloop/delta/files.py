"""Files a Spark write left in a staging folder: partition values from paths, stats from footers."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from lakeloop.delta.log import TableLocation

__all__ = ["HIVE_NULL", "StagedFile", "staging_name", "list_staged", "staged_file", "parse_partition_dir", "file_stats",
           "delete_staging", "publish"]

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# delta-spark truncates string statistics; a longer max is not a safe upper bound once truncated
_MAX_STRING_STAT = 32


@dataclass(frozen=True)
class StagedFile:
    """A parquet file written by Spark, ready to become an add action."""

    path: str  # relative to the table root, not encoded
    size: int
    modification_time: int  # ms since the epoch
    partition_values: dict[str, str | None]
    num_records: int
    stats: str  # Delta stats JSON


def staging_name() -> str:
    """A unique folder name under the table root; never starts with ``_``/``.`` (vacuum must see it)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"w-{stamp}-{uuid.uuid4().hex[:12]}"


def parse_partition_dir(relative_dir: str, partition_columns: Sequence[str]) -> dict[str, str | None]:
    """Partition values from the ``k=v`` segments Spark wrote (values unescaped, Hive null -> None)."""
    found: dict[str, str | None] = {}
    for segment in relative_dir.split("/"):
        key, sep, value = segment.partition("=")
        if sep and key in partition_columns:
            raw = unquote(value)
            found[key] = None if raw == HIVE_NULL else raw
    missing = [c for c in partition_columns if c not in found]
    if missing:
        raise ValueError(f"{relative_dir}: no partition directory for {missing}")
    return found


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def list_staged(loc: TableLocation, staging: str, partition_columns: Sequence[str]) -> list[StagedFile]:
    """Every committed parquet file under ``staging`` with its partition values and footer stats."""
    from pyarrow import fs as pafs

    filesystem = loc.fs
    base = loc.fs_join(staging)
    infos = [i for i in filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
    rel_to_root = len(loc.fs_path) + 1
    infos = [i for i in infos if not _is_hidden(i.path[len(base) + 1:])]

    def build(info: Any) -> StagedFile:
        relative = info.path[rel_to_root:]
        directory = relative.rsplit("/", 1)[0]
        return staged_file(loc, info, parse_partition_dir(directory, partition_columns), filesystem)

    if len(infos) <= 2:
        return [build(i) for i in infos]
    with ThreadPoolExecutor(max_workers=min(16, len(infos))) as pool:
        return list(pool.map(build, infos))


def staged_file(loc: TableLocation, info: Any, partition_values: dict[str, str | None],
                filesystem: Any = None) -> StagedFile:
    """The add action's facts of one written file (``info``: its pyarrow ``FileInfo`` under ``loc``, in
    ``filesystem``, default ``loc.fs``): size, modification time, and row count and statistics from its footer."""
    num_records, stats = file_stats(filesystem or loc.fs, info.path)
    mtime = info.mtime_ns // 1_000_000 if info.mtime_ns else int(time.time() * 1000)
    return StagedFile(info.path[len(loc.fs_path) + 1:], info.size, mtime, partition_values, num_records, stats)


def publish(loc: TableLocation, staging: str, files: list[StagedFile]) -> list[StagedFile]:
    """Move partitioned files from ``staging/k=v/...`` to ``k=v/...`` under the table root.

    Spark's partition discovery needs every file's ``k=v`` folders to hang off one base path.
    A file moved but never committed is an orphan: no snapshot lists it and vacuum removes it.
    """
    filesystem = loc.fs
    prefix = staging + "/"
    moved = []
    made: set[str] = set()
    for f in files:
        target = f.path[len(prefix):] if f.path.startswith(prefix) else f.path
        if target == f.path or "/" not in target:
            moved.append(f)
            continue
        parent = target.rsplit("/", 1)[0]
        if parent not in made:
            filesystem.create_dir(loc.fs_join(parent), recursive=True)
            made.add(parent)
        filesystem.move(loc.fs_join(f.path), loc.fs_join(target))
        moved.append(StagedFile(target, f.size, f.modification_time, f.partition_values, f.num_records, f.stats))
    return moved


def delete_staging(loc: TableLocation, staging: str) -> None:
    """Remove a staging folder (best effort: vacuum removes what is left)."""
    try:
        loc.fs.delete_dir(loc.fs_join(staging))
    except (FileNotFoundError, OSError):
        pass


def _stat_value(value: Any, ceil: bool) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        ms = value.microsecond // 1000
        if ceil and value.microsecond % 1000:
            value = value.replace(microsecond=0) + dt.timedelta(milliseconds=ms + 1)
        else:
            value = value.replace(microsecond=ms * 1000)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, decimal.Decimal):
        # JSON numbers through float: exact only up to 15 significant digits
        return float(value) if len(value.as_tuple().digits) <= 15 else None
    if isinstance(value, (bytes, bool)):
        return None  # Delta keeps no min/max for these
    if isinstance(value, str) and len(value) > _MAX_STRING_STAT:
        return value[:_MAX_STRING_STAT] if not ceil else None
    return value


def _widen(st: Any, lo: Any, hi: Any) -> tuple[bool, Any, Any]:
    """``(usable, lo, hi)`` widened by one row group's min/max; not usable when a string bound is not
    valid UTF-8 (the writer kept the bytes as they were): the column then gets no min/max at all."""
    try:
        low, high = st.min, st.max
    except UnicodeDecodeError:
        return False, None, None
    return True, low if lo is None or low < lo else lo, high if hi is None or high > hi else hi


def file_stats(filesystem: Any, path: str) -> tuple[int, str]:
    """``(numRecords, stats JSON)`` from one parquet footer: min/max/nullCount of top-level leaf columns.

    A string column whose min or max is not valid UTF-8 keeps its null count only (no min/max:
    Delta's stats are optional, a wrong bound would skip files)."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path, filesystem=filesystem)
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for col in range(meta.num_columns):
        name = meta.schema.column(col).path
        if "." in name:  # nested leaf: stats of structs/arrays/maps are optional, skip them
            continue
        lo = hi = None
        count = 0
        complete = bounded = True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(col).statistics
            if st is None or not st.has_null_count:
                complete = False
                break
            count += st.null_count
            if st.has_min_max and bounded:
                bounded, lo, hi = _widen(st, lo, hi)
        if not complete:
            continue
        nulls[name] = count
        lo, hi = (_stat_value(lo, False), _stat_value(hi, True)) if bounded else (None, None)
        if lo is not None:
            mins[name] = lo
        if hi is not None:
            maxs[name] = hi
    stats = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return meta.num_rows, json.dumps(stats)
