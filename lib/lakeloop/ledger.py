"""The ingest file ledger: which landing file went to bronze, claimed so that no file is ingested twice.

Two Delta tables shared by batch ingest and the streaming bronze writer, with the same columns
``source, path, size, mtime_ms, rows, batch_id, ingested_at, dt, status, detail``:

* the ledger (``ingest.ledger_table``): one row per file a run finished, ``status`` ``ingested``
  (``rows``: its records in bronze; null in ledgers written before statuses existed) or ``rejected``
  (the file is broken, ``detail`` says why; ``rows`` of its records were readable and are in bronze);
* the claims (``<ledger>_claims``): ``status`` ``claimed``, one row per file a run is about to read
  (``detail``: the owner ``host:pid:token``; ``rows``: the file's records in bronze already).

A run claims its files before it reads them: it reads the claims table at version ``v`` (and the
ledger), and commits its claim rows as version ``v + 1`` exactly (delta-rs with no commit retries).
When another run committed in between, the commit fails, the run reads both again and claims what
is still free, so of two runs that want one file only one gets it, on every storage delta-rs commits
to atomically.  A claim whose owner is gone (same host, pid not running) is taken over the same way.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyspark.sql import types as T

from lakeloop.delta.log import load_table, locate
from lakeloop.lake import Lake
from lakeloop.runlock import pid_alive

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf

__all__ = ["LEDGER_SCHEMA", "CLAIMED", "INGESTED", "REJECTED", "RELEASED", "ledger_uri", "claims_uri", "owner",
           "active", "owner_gone", "entries", "effective", "read_ledger", "ledger_frame", "claim", "append",
           "ClaimConflict"]

CLAIMED, INGESTED, REJECTED = "claimed", "ingested", "rejected"
_ACTIVE: set[str] = set()  # tokens of the runs of this process that hold claims
RELEASED = "released"  # owner of a claim given up after a failure
_RETRIES = 50

LEDGER_SCHEMA = T.StructType([
    T.StructField("source", T.StringType()),
    T.StructField("path", T.StringType()),
    T.StructField("size", T.LongType()),
    T.StructField("mtime_ms", T.LongType()),
    T.StructField("rows", T.LongType()),
    T.StructField("batch_id", T.StringType()),
    T.StructField("ingested_at", T.TimestampType()),
    T.StructField("dt", T.StringType()),
    T.StructField("status", T.StringType()),
    T.StructField("detail", T.StringType()),
])


class ClaimConflict(RuntimeError):
    """The ledger kept moving: no claim could be committed in :data:`_RETRIES` attempts."""


def ledger_uri(conf: Conf) -> str:
    """URI of the file ledger shared by batch ingest and the streaming bronze writer."""
    return Lake.from_conf(conf).uri(conf["ingest.ledger_table"])


def _options(conf: Conf) -> dict[str, str]:
    return Lake.from_conf(conf).storage_options


def claims_uri(conf: Conf) -> str:
    """URI of the claims table beside the ledger."""
    return ledger_uri(conf) + "_claims"


def owner(token: str) -> str:
    """``host:pid:token`` of one run of this process, recorded in its claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


@contextmanager
def active(token: str) -> Iterator[str]:
    """Mark the run ``token`` of this process as running; yields its :func:`owner` string."""
    _ACTIVE.add(token)
    try:
        yield owner(token)
    finally:
        _ACTIVE.discard(token)


def owner_gone(detail: str | None) -> bool:
    """Whether a claim's owner gave it up, or ran on this host and is over: its process no longer
    exists, or it is this process and the run is no longer :func:`active`."""
    if detail == RELEASED:
        return True
    host, _, rest = (detail or "").partition(":")
    pid, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return token not in _ACTIVE
    return not pid_alive(int(pid))


def _dates(date: str | Sequence[str]) -> list[str]:
    return [date] if isinstance(date, str) else list(date)


def entries(snapshot: Any, source: str, date: str | Sequence[str]) -> list[dict[str, Any]]:
    """Ledger rows of ``source`` and ``date`` (one date or several) in a delta-rs snapshot (read without Spark)."""
    import pyarrow.dataset as ds

    if snapshot is None:
        return []
    data = snapshot.to_pyarrow_dataset()
    rows = data.to_table(filter=ds.field("dt").isin(_dates(date)) & (ds.field("source") == source)).to_pylist()
    for row in rows:
        row.setdefault("status", None)
        row.setdefault("detail", None)
    return rows


def effective(rows: Sequence[dict[str, Any]], key: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """The row that decides each file's state, by ``key(path)``: the latest by ``ingested_at``, a final
    row (ingested, rejected) before a claim of the same time."""
    def order(row: dict[str, Any]) -> tuple:
        at = row["ingested_at"]
        stamp = at.timestamp() if isinstance(at, dt.datetime) else 0.0
        return stamp, row.get("status") != CLAIMED

    out: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=order):
        out[key(row["path"])] = row
    return out


def read_ledger(conf: Conf, source: str, date: str | Sequence[str],
                key: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """The deciding row (ledger or claim) of every file of ``source`` and ``date`` (one or several; see
    :func:`effective`)."""
    rows = entries(load_table(locate(claims_uri(conf), _options(conf))), source, date)
    return effective(rows + entries(load_table(locate(ledger_uri(conf), _options(conf))), source, date), key)


def ledger_frame(spark: SparkSession, rows: Sequence[tuple]) -> DataFrame:
    """A Spark frame of ledger rows (tuples in :data:`LEDGER_SCHEMA` order)."""
    return spark.createDataFrame(list(rows), LEDGER_SCHEMA)


def _arrow(rows: Sequence[tuple]) -> Any:
    import pyarrow as pa

    schema = pa.schema([
        ("source", pa.string()), ("path", pa.string()), ("size", pa.int64()), ("mtime_ms", pa.int64()),
        ("rows", pa.int64()), ("batch_id", pa.string()), ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("dt", pa.string()), ("status", pa.string()), ("detail", pa.string())])
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema=schema)


def _create(uri: str, storage_options: dict[str, str]) -> None:
    """An empty claims table (two runs creating it at once: the second finds it made)."""
    from deltalake import write_deltalake

    loc = locate(uri, storage_options)
    try:
        write_deltalake(loc.delta, _arrow([]), mode="append", storage_options=loc.storage_options or None)
    except Exception:  # noqa: BLE001 - another writer created it first; anything else shows below
        if load_table(loc) is None:
            raise


def append(uri: str, rows: Sequence[tuple], storage_options: dict[str, str] | None = None) -> None:
    """Append ledger rows (tuples in :data:`LEDGER_SCHEMA` order) to the table at ``uri``."""
    from deltalake import write_deltalake

    loc = locate(uri, storage_options)
    write_deltalake(loc.delta, _arrow(rows), mode="append", schema_mode="merge",
                    storage_options=loc.storage_options or None)


def claim(conf: Conf, source: str, date: str | Sequence[str],
          plan: Callable[[dict[str, dict[str, Any]]], list[tuple]], key: Callable[[str], str]) -> int:
    """Commit the claim rows ``plan`` returns for the files' state now, conditionally on no other
    claim committing in between; retried on a conflict.  Returns the claims version committed (-1:
    ``plan`` returned nothing).

    ``plan`` gets the deciding row of every file of ``date`` (one date or the dates of a range: one commit
    claims them all; :func:`effective`) and may raise to stop.
    """
    uri = claims_uri(conf)
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import CommitProperties

    loc = locate(uri, _options(conf))
    for attempt in range(_RETRIES):
        snapshot = load_table(loc)
        if snapshot is None:
            _create(uri, loc.storage_options)
            continue
        # read after the claims snapshot
        done = entries(load_table(locate(ledger_uri(conf), loc.storage_options)), source, date)
        rows = plan(effective(entries(snapshot, source, date) + done, key))
        if not rows:
            return -1
        try:
            write_deltalake(snapshot, _arrow(rows), mode="append", schema_mode="merge",
                            commit_properties=CommitProperties(max_commit_retries=0,
                                                               custom_metadata={"lakeloop.claim": source}))
            return snapshot.version() + 1
        except CommitFailedError:
            time.sleep(random.uniform(0.02, 0.1 * (attempt + 1)))  # noqa: S311 - jitter, not security
    days = _dates(date)
    label = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    raise ClaimConflict(f"{uri}: could not commit a claim for {source} {label} in {_RETRIES} attempts")
