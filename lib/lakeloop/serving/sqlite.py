"""Embedded serving store: one SQLite file in WAL mode, no server (``serving.store: sqlite``).

The versioned keyspace ``{namespace}:{version}:{key}`` is the primary key
``(namespace, version, key)`` of ``serving_entries``; ``serving_current`` holds one row
per namespace naming the version being served.  The switch is one transaction that
checks the load's state and key count and updates that row.  Readers run each lookup in
one read transaction, so WAL's snapshot isolation gives them the old or the new version,
never a mix, and deleting an old version does not disturb a reader that started on it.

Writers from several processes (Spark's Python workers) take turns on the file's write
lock, which they wait for up to ``busy_timeout`` seconds.  The file must be on a local
disk of the machine running the writers (WAL needs shared memory): use the Redis store
when executors run on other hosts.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lakeloop.serving.base import (
    COMMITTED,
    DELETING,
    LOADING,
    LoadInfo,
    LoadRefused,
    ServingError,
    ServingStore,
    chunked,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS serving_loads (
    namespace TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL,
    started_at REAL, committed_at REAL,
    PRIMARY KEY (namespace, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS serving_current (
    namespace TEXT NOT NULL PRIMARY KEY, version TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS serving_entries (
    namespace TEXT NOT NULL, version TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (namespace, version, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS serving_realtime (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (namespace, key)) WITHOUT ROWID;
"""

_TABLES = ("serving_loads", "serving_current", "serving_entries", "serving_realtime")
_UPSERT_ENTRY = ("INSERT INTO serving_entries VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                 "SET value = excluded.value, expires_at = excluded.expires_at")
_UPSERT_REALTIME = ("INSERT INTO serving_realtime VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE "
                    "SET value = excluded.value, expires_at = excluded.expires_at")
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
# SQLite allows 32766 bound parameters per statement
_IN_CHUNK = 900


class SQLiteStore(ServingStore):
    """Serving store in a SQLite file (settings option ``path``, absolute)."""

    kind = "sqlite"
    #: seconds a writer waits for the file's write lock
    busy_timeout = 120.0
    #: rows per transaction when a version is deleted, so loads in flight are not starved
    delete_batch = 50_000

    def _describe(self) -> str:
        return f"path={self._path()!s}"

    def _path(self) -> Path:
        path = self.settings.options.get("path")
        if not path:
            raise ServingError("serving.sqlite.path: no SQLite file configured")
        return Path(path)

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=self.busy_timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # readers must not queue for the write lock behind a load just to learn the tables exist
        tables = conn.execute(f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                              f"({','.join('?' * len(_TABLES))})", _TABLES).fetchone()[0]
        if tables < len(_TABLES):
            with _transaction(conn):
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
        return conn

    def _disconnect(self, conn: sqlite3.Connection) -> None:
        conn.close()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._connection()

    def _state(self, version: str) -> str | None:
        row = self._db.execute("SELECT state FROM serving_loads WHERE namespace = ? AND version = ?",
                               (self.namespace, version)).fetchone()
        return row[0] if row else None

    # -- load ------------------------------------------------------------------------------------
    def _begin(self, version: str) -> None:
        with _transaction(self._db):
            if self._state(version) is not None:
                raise LoadRefused(f"version {version!r} has a record; remove it first")
            self._db.execute("INSERT INTO serving_loads VALUES (?, ?, ?, ?, NULL)",
                             (self.namespace, version, LOADING, time.time()))

    def _write(self, version: str, pairs: dict[str, bytes]) -> None:
        ttl = self.settings.ttl_seconds
        expires = time.time() + ttl if ttl else None
        ns = self.namespace
        rows = [(ns, version, key, value.decode(), expires) for key, value in pairs.items()]
        with _transaction(self._db):
            if self._state(version) != LOADING:
                raise ServingError(f"version {version!r} is not loading")
            self._db.executemany(_UPSERT_ENTRY, rows)

    def _commit(self, version: str, expected_count: int) -> str | None:
        db = self._db
        with _transaction(db):
            state = self._state(version)
            if state != LOADING:
                raise LoadRefused(f"version {version} is {state or 'unknown'}, not loading")
            count = self._count(version)
            if count != expected_count:
                raise LoadRefused(f"version {version} has {count} keys, expected {expected_count}")
            db.execute("UPDATE serving_loads SET state = ?, committed_at = ? WHERE namespace = ? AND version = ?",
                       (COMMITTED, time.time(), self.namespace, version))
            previous = self.current_version()
            db.execute("INSERT INTO serving_current VALUES (?, ?) ON CONFLICT DO UPDATE SET version = excluded.version",
                       (self.namespace, version))
        return previous

    def _copy_version(self, base: str, version: str) -> int:
        with _transaction(self._db):
            if self._state(version) != LOADING:
                raise ServingError(f"version {version!r} is not loading")
            return self._db.execute("INSERT OR IGNORE INTO serving_entries SELECT namespace, ?, key, value, expires_at "
                                    "FROM serving_entries WHERE namespace = ? AND version = ?",
                                    (version, self.namespace, base)).rowcount

    def _read_version(self, version: str, keys: list[str]) -> list[bytes | None]:
        found: dict[str, str] = {}
        for chunk in chunked(dict.fromkeys(keys), _IN_CHUNK):
            found.update(self._db.execute(
                f"SELECT key, value FROM serving_entries WHERE namespace = ? AND version = ? "
                f"AND key IN ({','.join('?' * len(chunk))})", (self.namespace, version, *chunk)).fetchall())
        return [found[k].encode() if k in found else None for k in keys]

    def _count(self, version: str) -> int:
        return self._db.execute("SELECT count(*) FROM serving_entries WHERE namespace = ? AND version = ?",
                                (self.namespace, version)).fetchone()[0]

    def _remove_version(self, version: str) -> int:
        db, ns = self._db, self.namespace
        with _transaction(db):
            if self.current_version() == version:
                raise LoadRefused(f"version {version} is being served")
            db.execute("UPDATE serving_loads SET state = ? WHERE namespace = ? AND version = ?",
                       (DELETING, ns, version))
        deleted = 0
        while True:
            with _transaction(db):
                n = db.execute(
                    "DELETE FROM serving_entries WHERE namespace = ? AND version = ? AND key IN "
                    "(SELECT key FROM serving_entries WHERE namespace = ? AND version = ? LIMIT ?)",
                    (ns, version, ns, version, self.delete_batch)).rowcount
            deleted += n
            if n < self.delete_batch:
                break
        with _transaction(db):
            db.execute("DELETE FROM serving_loads WHERE namespace = ? AND version = ?", (ns, version))
        return deleted

    def _unfinished_removals(self) -> list[str]:
        rows = self._db.execute("SELECT version FROM serving_loads WHERE namespace = ? AND state = ? ORDER BY version",
                                (self.namespace, DELETING)).fetchall()
        return [r[0] for r in rows]

    def _switch(self, version: str, expected_current: str) -> None:
        db = self._db
        with _transaction(db):
            state = self._state(version)
            if state != COMMITTED:
                raise LoadRefused(f"version {version} is {state or 'unknown'}, not committed")
            current = self.current_version()
            if current != expected_current:
                raise LoadRefused(f"current version is {current}, no longer {expected_current}")
            db.execute("UPDATE serving_current SET version = ? WHERE namespace = ?", (version, self.namespace))

    def _records(self) -> list[LoadInfo]:
        db, ns = self._db, self.namespace
        with _transaction(db, immediate=False):
            counts = dict(db.execute("SELECT version, count(*) FROM serving_entries WHERE namespace = ? "
                                     "GROUP BY version", (ns,)))
            rows = db.execute("SELECT version, state, started_at, committed_at FROM serving_loads "
                              "WHERE namespace = ?", (ns,)).fetchall()
        return [LoadInfo(v, state, counts.get(v, 0), started, committed) for v, state, started, committed in rows]

    def collect_garbage(self) -> list[str]:
        """Delete old versions, and expired real-time values and entries."""
        doomed = super().collect_garbage()
        now = time.time()
        with _transaction(self._db):
            self._db.execute("DELETE FROM serving_realtime WHERE namespace = ? AND expires_at <= ?",
                             (self.namespace, now))
            if self.settings.ttl_seconds:
                self._db.execute("DELETE FROM serving_entries WHERE namespace = ? AND expires_at <= ?",
                                 (self.namespace, now))
        return doomed

    # -- reads -----------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        row = self._db.execute("SELECT version FROM serving_current WHERE namespace = ?",
                               (self.namespace,)).fetchone()
        return row[0] if row else None

    def versions(self) -> list[str]:
        rows = self._db.execute("SELECT version FROM serving_loads WHERE namespace = ? AND state = ? "
                                "ORDER BY committed_at, version", (self.namespace, COMMITTED)).fetchall()
        return [r[0] for r in rows]

    def load_info(self, version: str) -> LoadInfo | None:
        with _transaction(self._db, immediate=False):
            row = self._db.execute("SELECT state, started_at, committed_at FROM serving_loads "
                                   "WHERE namespace = ? AND version = ?", (self.namespace, version)).fetchone()
            if row is None:
                return None
            return LoadInfo(version, row[0], self._count(version), row[1], row[2])

    def _read_current(self, keys: list[str]) -> tuple[str | None, list[bytes | None]]:
        db, now = self._db, time.time()
        with _transaction(db, immediate=False):
            version = self.current_version()
            if version is None:
                return None, [None] * len(keys)
            found: dict[str, str] = {}
            for chunk in chunked(dict.fromkeys(keys), _IN_CHUNK):
                found.update(db.execute(
                    f"SELECT key, value FROM serving_entries WHERE namespace = ? AND version = ? AND {_LIVE} "
                    f"AND key IN ({','.join('?' * len(chunk))})", (self.namespace, version, now, *chunk)))
        return version, [found.get(k) for k in keys]

    def _read_both(self, key: str) -> tuple[bytes | None, bytes | None]:
        with _transaction(self._db, immediate=False):
            _, (batch,) = self._read_current([key])
            return batch, self._read_realtime(key)

    def _read_both_many(self, keys: list[str]) -> tuple[str | None, list[bytes | None], list[bytes | None]]:
        db = self._db
        with _transaction(db, immediate=False):
            version, batches = self._read_current(keys)
            found: dict[str, str] = {}
            for chunk in chunked(dict.fromkeys(keys), _IN_CHUNK):
                found.update(db.execute(
                    f"SELECT key, value FROM serving_realtime WHERE namespace = ? AND {_LIVE} "
                    f"AND key IN ({','.join('?' * len(chunk))})", (self.namespace, time.time(), *chunk)))
        return version, batches, [found.get(k) for k in keys]

    # -- real-time view --------------------------------------------------------------------------
    def _write_realtime(self, pairs: list[tuple[str, bytes]], ttl: int | None) -> None:
        expires = time.time() + ttl if ttl else None
        with _transaction(self._db):
            self._db.executemany(_UPSERT_REALTIME, [(self.namespace, k, v.decode(), expires) for k, v in pairs])

    def _read_realtime(self, key: str) -> bytes | None:
        row = self._db.execute(f"SELECT value FROM serving_realtime WHERE namespace = ? AND key = ? AND {_LIVE}",
                               (self.namespace, key, time.time())).fetchone()
        return row[0] if row else None


@contextmanager
def _transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[None]:
    """A transaction (nested use joins the outer one); ``immediate`` takes the write lock up front."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
