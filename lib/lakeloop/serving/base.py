"""The serving store interface: a versioned keyspace with an atomic switch.

A bulk load writes a complete new version next to the one being served and then
switches ``{namespace}:current`` to it in one atomic step::

    store.begin_load("2026-11-22")
    store.write_batch("2026-11-22", items)        # many calls, in Spark executors
    store.commit_load("2026-11-22", expected_count=n)

Readers always resolve ``current`` and the value in one consistent step, so they see
either the complete old version or the complete new one.  A load that fails, is
killed or writes the wrong number of keys never becomes visible.

Store objects are small: they hold a :class:`StoreSettings` and open their connection
lazily in the process that uses them, so they can be pickled into Spark tasks.
"""

from __future__ import annotations

import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from lakeloop.errors import LakeloopError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ServingStore", "StoreSettings", "ServingError", "LoadRefused", "LoadInfo",
           "encode_value", "decode_value", "decode_values", "LOADING", "COMMITTED", "KeyTemplate"]

LOADING = "loading"
COMMITTED = "committed"
# the state of a version being removed; writes to it are refused
DELETING = "deleting"

# ':' separates the parts of a key and glob characters would break SCAN patterns
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_RESERVED_VERSIONS = frozenset({"current", "rt"})
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

#: a key of :meth:`ServingStore.read_ahead`: its parts, each text or ``(read index, field)``
KeyTemplate = Sequence["str | tuple[int, str]"]


class ServingError(LakeloopError):
    """A serving store operation cannot be carried out; the store is unchanged."""


class LoadRefused(ServingError):
    """``commit_load`` refused to switch: the load is incomplete, unknown or already switched."""


def encode_value(value: Any) -> bytes:
    """Compact JSON of a prediction or top-N list (numpy scalars and arrays allowed)."""
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS)
    except TypeError as exc:
        raise ServingError(f"value {value!r:.80} cannot be stored as JSON: {exc}") from None


def decode_value(raw: bytes | str | None) -> Any:
    """The value stored by :func:`encode_value`; ``None`` stays ``None``."""
    return None if raw is None else orjson.loads(raw)


def decode_values(raws: Sequence[bytes | str | None]) -> list[Any]:
    """:func:`decode_value` of each of ``raws``, the stored bytes parsed as one JSON array (one parser call,
    not one per value); a value that is not JSON fails as :func:`decode_value` fails on it."""
    if len(raws) > 1 and all(type(r) is bytes for r in raws if r is not None):
        try:
            values = orjson.loads(b"[" + b",".join([b"null" if r is None else r for r in raws]) + b"]")
        except orjson.JSONDecodeError:
            values = None
        if values is not None and len(values) == len(raws):  # not so for a stored text like b'1,2'
            return values
    return [decode_value(r) for r in raws]


def check_name(what: str, name: str) -> str:
    """Validate a namespace or version name (letters, digits, ``_ . -``; no ``:``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ServingError(f"{what} {name!r}: expected letters, digits, '_', '.' or '-' "
                           "(at most 128, starting with a letter or digit)")
    if what == "version" and name in _RESERVED_VERSIONS:
        raise ServingError(f"version {name!r} is reserved")
    return name


def key_text(key: Any) -> str:
    """A serving key as text: strings as they are, integers in decimal."""
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    if hasattr(key, "item") and isinstance(key.item(), int):  # numpy integer
        return str(key.item())
    raise ServingError(f"key {key!r}: expected a string or an integer")


@dataclass(frozen=True)
class StoreSettings:
    """Everything a store needs to reconnect in another process; never a secret.

    ``options`` holds the backend's own settings (Redis host/port/db/password_env,
    SQLite path).
    """

    store: str
    namespace: str = "lakeloop"
    keep_versions: int = 2
    ttl_seconds: int | None = None
    batch_size: int = 2000
    options: Mapping[str, Any] = field(default_factory=dict)
    #: seconds after which a version still ``loading`` counts as left by a killed load and is removed
    loading_grace_seconds: int = 21600

    def __post_init__(self) -> None:
        check_name("namespace", self.namespace)
        for name, low in (("keep_versions", 1), ("batch_size", 1), ("loading_grace_seconds", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ServingError(f"serving.{name}: expected an integer >= {low}, got {getattr(self, name)!r}")
        if self.ttl_seconds is not None and (not isinstance(self.ttl_seconds, int) or self.ttl_seconds < 1):
            raise ServingError(f"serving.ttl_seconds: expected null or an integer >= 1, got {self.ttl_seconds!r}")
        object.__setattr__(self, "options", dict(self.options))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-safe) that :meth:`from_dict` turns back into these settings."""
        return asdict(self) | {"options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreSettings:
        return cls(**data)


@dataclass(frozen=True)
class LoadInfo:
    """What the store knows about one version: its state and the distinct keys written."""

    version: str
    state: str
    count: int
    started_at: float | None = None
    committed_at: float | None = None


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def merge_views(batch: Any, realtime: Any) -> dict[str, Any] | None:
    """The ``lookup`` result: the batch value (a mapping, or ``{"value": v}``) plus ``realtime``."""
    if batch is None and realtime is None:
        return None
    merged = dict(batch) if isinstance(batch, Mapping) else ({} if batch is None else {"value": batch})
    if realtime is not None:
        merged["realtime"] = realtime
    return merged


class ServingStore(ABC):
    """A versioned key-value serving store with an atomic switch between versions.

    Keys are strings (integers are written in decimal); values are anything JSON can
    hold and are stored as compact JSON.  Version names use letters, digits, ``_``,
    ``.`` and ``-``.

    Subclasses implement the storage primitives; connections are opened lazily, one per
    process and thread, and are never pickled.
    """

    #: the ``serving.store`` value this class implements
    kind: ClassVar[str]

    def __init__(self, settings: StoreSettings) -> None:
        if settings.store != self.kind:
            raise ServingError(f"{type(self).__name__} cannot use settings for store {settings.store!r}")
        self.settings = settings
        self._local = threading.local()

    # -- pickling: only the settings travel ---------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.settings,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r}, {self._describe()})"

    def config(self) -> dict[str, Any]:
        """A small JSON-safe dict from which :func:`lakeloop.serving.store_from_config` rebuilds this store."""
        return self.settings.to_dict()

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def _connection(self) -> Any:
        """This process's (and thread's) connection, opened on first use."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn, local.pid = self._connect(), os.getpid()
        return local.conn

    def close(self) -> None:
        """Close this thread's connection; the store reconnects on next use."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            self._disconnect(local.conn)
        local.pid = local.conn = None

    def __enter__(self) -> ServingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bulk load -------------------------------------------------------------------------------
    def begin_load(self, version: str, base: str | None = None) -> int:
        """Start loading ``version``; returns the keys it starts with.

        Leftovers of an earlier load of the same version (a failed run being repeated)
        are removed first.  Loading the version that is being served is refused.  With ``base``
        (a committed version) the new version starts as a copy of it, made inside the store (no
        value leaves it): an incremental load then writes only the keys whose values changed, and
        :meth:`commit_load`'s count check covers the copied keys too.
        """
        check_name("version", version)
        if base is not None:
            check_name("version", base)
            info = self.load_info(base)
            if info is None or info.state != COMMITTED:
                raise ServingError(f"base version {base!r} of {self.namespace} is "
                                   f"{info.state if info else 'unknown'}, not committed")
        if self.current_version() == version:
            raise ServingError(f"version {version!r} is being served; load under a new version name")
        if self.load_info(version) is not None:
            self._remove_version(version)
        self._begin(version)
        if base is None:
            return 0
        try:
            return self._copy_version(base, version)
        except BaseException:
            self._remove_version(version)
            raise

    def write_batch(self, version: str, items: Iterable[tuple[Any, Any]], *, encoded: bool = False) -> int:
        """Write ``(key, value)`` pairs into a version being loaded; returns the pairs written.

        Runs in Spark executors, once or many times per partition.  Values are encoded as
        JSON unless ``encoded`` is true, in which case they already are JSON text (e.g. from
        Spark's ``to_json``) and are stored as they are.  Writing to a version that is not
        loading (committed, aborted, never begun) raises :class:`ServingError`.  Writing a key
        twice keeps the last value and counts the key once.
        """
        check_name("version", version)
        written = 0
        # hot path: one dict per command (a duplicate key inside one command would be counted
        # twice by the stores' new-key count), type checks inlined for the common types
        for chunk in chunked(items, self.settings.batch_size):
            if encoded:
                pairs = {(k if type(k) is str else key_text(k)): (v if type(v) is bytes else _as_bytes(v))
                         for k, v in chunk}
            else:
                pairs = {(k if type(k) is str else key_text(k)): encode_value(v) for k, v in chunk}
            written += len(chunk)
            self._write(version, pairs)
        self._flush(version)
        return written

    def write_arrow(self, version: str, keys: pa.Array, values: pa.Array, *, encoded: bool = True) -> int:
        """Write Arrow columns of keys and values into a version being loaded; returns the pairs written.

        The columnar form of :meth:`write_batch`, for ``mapInArrow`` batches: ``keys`` are
        integers or strings, ``values`` JSON text when ``encoded`` (Spark's ``to_json``).  Batches
        of JSON text without nulls or repeated keys are encoded for the store column-wise
        (:mod:`lakeloop.serving.resp`); anything else takes the :meth:`write_batch` path, with
        the same errors and the same last-value-wins rule for repeated keys.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        check_name("version", version)
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
            values = values.cast(pa.string())
        columnar = (encoded and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type))
                    and (pa.types.is_integer(keys.type) or pa.types.is_string(keys.type))
                    and not keys.null_count and not values.null_count)
        if not columnar:
            return self.write_batch(version, zip(keys.to_pylist(), values.to_pylist(), strict=True), encoded=encoded)
        size = self.settings.batch_size
        for start in range(0, len(keys), size):
            chunk_keys, chunk_values = keys.slice(start, size), values.slice(start, size)
            if pc.count_distinct(chunk_keys).as_py() < len(chunk_keys):
                self.write_batch(version, zip(chunk_keys.to_pylist(), chunk_values.to_pylist(), strict=True),
                                 encoded=True)
            else:
                self._write_columns(version, chunk_keys, chunk_values)
        self._flush(version)
        return len(keys)

    def commit_load(self, version: str, expected_count: int) -> str | None:
        """Switch ``current`` to ``version`` if exactly ``expected_count`` distinct keys were written.

        The check and the switch are one atomic step; on refusal (:class:`LoadRefused`)
        nothing changes and the previous version keeps serving.  After the switch, versions
        beyond ``serving.keep_versions`` are deleted.  Returns the version served before.
        """
        check_name("version", version)
        previous = self._commit(version, int(expected_count))
        self.collect_garbage()
        return previous

    def abort_load(self, version: str) -> int:
        """Remove a version that is not being served (a failed load); returns the keys deleted."""
        check_name("version", version)
        if self.current_version() == version:
            raise ServingError(f"version {version!r} is being served and cannot be aborted")
        if self.load_info(version) is None:
            return 0
        return self._remove_version(version)

    def collect_garbage(self) -> list[str]:
        """Delete committed versions beyond ``keep_versions`` (never the current one); returns them.

        Removals that an earlier process started and did not finish (it was killed) are
        completed too, and so are loads still ``loading`` longer than
        ``loading_grace_seconds`` after they began (:meth:`stale_loads`).  A version that
        became current meanwhile (a rollback) is skipped: the removal and the switch are
        atomic against each other.
        """
        current = self.current_version()
        committed = [v for v in self.versions() if v != current]
        keep_others = self.settings.keep_versions - (1 if current else 0)
        doomed = committed[:max(len(committed) - keep_others, 0)]
        removed = []
        for version in [*doomed, *self.stale_loads()]:
            try:
                self._remove_version(version)
                removed.append(version)
            except LoadRefused:  # switched to since the list was made: it stays
                pass
        for version in self._unfinished_removals():
            self._remove_version(version)
        return removed

    def stale_loads(self, grace_seconds: float | None = None, now: float | None = None) -> list[str]:
        """Versions still ``loading`` more than ``grace_seconds`` (default: the settings') after they began."""
        grace = self.settings.loading_grace_seconds if grace_seconds is None else grace_seconds
        limit = (time.time() if now is None else now) - grace
        return [r.version for r in self.records()
                if r.state == LOADING and r.started_at is not None and r.started_at <= limit]

    def rollback(self, to: str | None = None) -> tuple[str, str]:
        """Serve the previous complete version again (or ``to``); returns ``(version served before, now)``.

        "Previous" is the newest committed version committed before the current one.  The
        check (the target is ``committed``, ``current`` is still what it was) and the switch
        are one atomic step, so readers see the old or the new version, never a mix, and a
        concurrent removal of the target either happens before (the rollback is refused) or
        is refused itself.  Nothing is deleted.
        """
        current = self.current_version()
        if current is None:
            raise ServingError("nothing is being served: there is no version to roll back from")
        if to is None:
            committed = self.versions()
            older = committed[:committed.index(current)] if current in committed else []
            if not older:
                raise ServingError(f"no complete version older than {current!r} is kept "
                                   f"(kept: {', '.join(committed) or 'none'})")
            to = older[-1]
        check_name("version", to)
        if to == current:
            raise ServingError(f"version {to!r} is already being served")
        self._switch(to, current)
        return current, to

    def records(self) -> list[LoadInfo]:
        """Every version the store has a record of, in any state, oldest start first."""
        return sorted(self._records(), key=lambda r: (r.started_at or 0.0, r.version))

    # -- reads -----------------------------------------------------------------------------------
    def get_version_many(self, version: str, keys: Sequence[Any]) -> list[bytes | None]:
        """The stored JSON of ``keys`` in ``version`` (any state), None where absent: what an incremental
        load compares its new values with."""
        check_name("version", version)
        return self._read_version(version, [key_text(k) for k in keys])

    def get(self, key: Any) -> Any:
        """The value of ``key`` in the current version, or ``None``."""
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[Any]) -> list[Any]:
        """Values of ``keys`` in the current version (``None`` where missing), read consistently."""
        texts = [key_text(k) for k in keys]
        if not texts:
            return []
        _, raw = self._read_current(texts)
        return decode_values(raw)

    def get_many_each(self, reads: Sequence[tuple[ServingStore, Sequence[Any]]]) -> list[list[Any]]:
        """:meth:`get_many` of each ``(store, keys)``; in one round trip where the backend can (Redis stores
        of this store's server), each read still consistent within its own namespace."""
        return [values for _, values in self.read_each(reads)]

    def read_each(self, reads: Sequence[tuple[ServingStore, Sequence[Any]]]) -> list[tuple[str | None, list[Any]]]:
        """:meth:`get_many_each` with the version each read saw: ``[(version, values)]``, ``version`` the one
        current in that store at its read (``None`` before the first commit: every value ``None``); ``keys``
        may be empty (the version alone)."""
        out = []
        for store, keys in reads:
            version, raw = store._read_current([key_text(k) for k in keys])
            out.append((version, decode_values(raw)))
        return out

    def read_ahead(self, reads: Sequence[tuple[ServingStore, Sequence[Any]]],
                   ahead: Sequence[tuple[ServingStore, Sequence[KeyTemplate]]]
                   ) -> tuple[list[tuple[str | None, list[Any]]], list[tuple[str, list[str], list[Any]] | None]]:
        """:meth:`read_each` of ``reads`` and, where the backend can in the same round trip, a read of keys
        built from the values just read: ``(read_each answers, [(version, keys, values) or None per ahead
        read])``, each ahead read consistent within its own namespace like the others.

        Each ``ahead`` entry is a store and one template per key: a key is the concatenation of its parts,
        a part either text or ``(i, field)``: the field ``field`` of the value ``reads[i]`` found for the key
        at the same position, or, where that key has no value, of the value of ``reads[i]``'s last key (the
        row that stands for a missing one).  A field that is neither text nor an integer, or no value at all,
        leaves that ahead read ``None``; so does a backend that cannot read ahead (this default).  The keys
        come back with the values so that the caller can check them against the keys it builds itself.
        """
        return self.read_each(reads), [None] * len(ahead)

    def lookup(self, key: Any) -> dict[str, Any] | None:
        """Batch value merged with the real-time view: the batch mapping plus a ``realtime`` field.

        A batch value that is not a mapping comes back as ``{"value": ...}``; ``None`` when
        the key is in neither view.
        """
        batch, realtime = self._read_both(key_text(key))
        return merge_views(decode_value(batch), decode_value(realtime))

    def lookup_many(self, keys: Sequence[Any]) -> tuple[str | None, list[dict[str, Any] | None]]:
        """:meth:`lookup` of several keys in one consistent read: ``(version, results)``.

        Every batch value comes from ``version`` (the one current at the read; ``None`` before the
        first commit); ``results`` has one entry per key, ``None`` where the key is in neither view.
        """
        version, batches, realtimes = self.lookup_many_raw(keys)
        return version, [merge_views(decode_value(b), decode_value(r))
                         for b, r in zip(batches, realtimes, strict=True)]

    def lookup_many_raw(self, keys: Sequence[Any]) -> tuple[str | None, list[Any], list[Any]]:
        """:meth:`lookup_many` before decoding: ``(version, batch JSON, real-time JSON)``, one stored JSON
        (``bytes`` or ``str``) or ``None`` per key and view; what a service splices into its answer as is."""
        texts = [key_text(k) for k in keys]
        if not texts:
            return self.current_version(), [], []
        return self._read_both_many(texts)

    def put_realtime(self, items: Iterable[tuple[Any, Any]], ttl: int | None = None) -> int:
        """Write real-time values (not versioned, ``{namespace}:rt:{key}``); ``ttl`` in seconds."""
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise ServingError(f"realtime ttl: expected None or an integer >= 1, got {ttl!r}")
        written = 0
        for chunk in chunked(items, self.settings.batch_size):
            pairs = {key_text(k): encode_value(v) for k, v in chunk}
            self._write_realtime(list(pairs.items()), ttl)
            written += len(chunk)
        return written

    def get_realtime(self, key: Any) -> Any:
        """The real-time value of ``key``, or ``None``."""
        return decode_value(self._read_realtime(key_text(key)))

    @abstractmethod
    def current_version(self) -> str | None:
        """The version being served, or ``None`` before the first commit."""

    @abstractmethod
    def versions(self) -> list[str]:
        """Committed versions still stored, oldest first (the current one is normally last)."""

    @abstractmethod
    def load_info(self, version: str) -> LoadInfo | None:
        """State and key count of ``version``, or ``None`` when the store has no trace of it."""

    # -- backend primitives ---------------------------------------------------------------------------
    @abstractmethod
    def _describe(self) -> str: ...

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _disconnect(self, conn: Any) -> None: ...

    @abstractmethod
    def _begin(self, version: str) -> None: ...

    @abstractmethod
    def _write(self, version: str, pairs: dict[str, bytes]) -> None:
        """Write ``key -> JSON`` if ``version`` is loading, counting the keys that are new."""

    def _write_columns(self, version: str, keys: pa.Array, values: pa.Array) -> None:
        """:meth:`_write` of distinct, non-null integer or string ``keys`` and JSON text ``values``."""
        from lakeloop.serving.resp import key_text_array

        texts = key_text_array(keys).to_pylist()
        self._write(version, dict(zip(texts, (v.encode() for v in values.to_pylist()), strict=True)))

    def _flush(self, version: str) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Wait for writes still in flight (stores that pipeline them)."""

    @abstractmethod
    def _commit(self, version: str, expected_count: int) -> str | None: ...

    @abstractmethod
    def _remove_version(self, version: str) -> int:
        """Stop writes to ``version``, then delete its keys and its record; returns keys deleted.

        Refused (:class:`LoadRefused`) when ``version`` is current, checked atomically with the
        step that stops writes."""

    @abstractmethod
    def _switch(self, version: str, expected_current: str) -> None:
        """Point ``current`` at committed ``version`` if ``current`` is still ``expected_current`` (atomic);
        :class:`LoadRefused` otherwise."""

    @abstractmethod
    def _copy_version(self, base: str, version: str) -> int:
        """Copy every key of ``base`` into ``version`` (loading), counted as written; returns the keys copied."""

    @abstractmethod
    def _read_version(self, version: str, keys: list[str]) -> list[bytes | None]: ...

    @abstractmethod
    def _records(self) -> list[LoadInfo]: ...

    @abstractmethod
    def _read_both_many(self, keys: list[str]) -> tuple[str | None, list[bytes | None], list[bytes | None]]: ...

    @abstractmethod
    def _unfinished_removals(self) -> list[str]:
        """Versions whose removal was started and not finished."""

    @abstractmethod
    def _read_current(self, keys: list[str]) -> tuple[str | None, list[bytes | None]]: ...

    @abstractmethod
    def _read_both(self, key: str) -> tuple[bytes | None, bytes | None]: ...

    @abstractmethod
    def _write_realtime(self, pairs: list[tuple[str, bytes]], ttl: int | None) -> None: ...

    @abstractmethod
    def _read_realtime(self, key: str) -> bytes | None: ...


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise ServingError(f"encoded value {value!r:.80}: expected JSON text (str or bytes)")
