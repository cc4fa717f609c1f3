"""Redis serving store (redis-py).

Keyspace of namespace ``ns``::

    ns:current             the version being served (string)
    ns:{version}:{key}     a loaded value (compact JSON)
    ns:rt:{key}            a real-time value (not versioned)
    ns:_load:{version}     hash: state (loading | committed | deleting), started_at, committed_at
    ns:_count:{version}    distinct keys written so far
    ns:_versions           sorted set of committed versions, scored by commit time
    ns:_removing           versions whose keys are being deleted

Every check-and-act is atomic on the server.  A write command is ``WATCH`` of the load's
record, a check that it is ``loading``, then ``MULTI``, a Lua script counting the keys that
do not exist yet, ``MSET`` (and a script setting the TTL when one is configured), ``EXEC``:
the count and the write happen together, and not at all when the load was committed or
aborted meanwhile (the record changed, so ``EXEC`` discards the transaction).  Task retries
rewrite keys without inflating the count.  Values do not pass through Lua, which would
double the server's cost per key.  The commit
script checks state and count and sets ``current`` in the same step; a read script resolves
``current`` and all the values it asks for in one step.  The scripts build key names from
arguments, which a single Redis server (or a replica set) allows and Redis Cluster does not.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import redis as redis_py
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from lakeloop.conf import ConfError
from lakeloop.serving import resp
from lakeloop.serving.base import (
    COMMITTED,
    DELETING,
    LOADING,
    KeyTemplate,
    LoadInfo,
    LoadRefused,
    ServingError,
    ServingStore,
    decode_value,
    decode_values,
    key_text,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

__all__ = ["RedisStore"]

_REFUSED = "LAKELOOP_REFUSED"
# Lua's unpack() is limited to ~8000 values; EXISTS and MGET are issued in slices below that
_SLICE = 1000

_COUNT_NEW = f"""
local new = #ARGV
for s = 1, #ARGV, {_SLICE} do
  new = new - redis.call('EXISTS', unpack(ARGV, s, math.min(s + {_SLICE - 1}, #ARGV)))
end
return redis.call('INCRBY', KEYS[1], new)
"""

_EXPIRE = """
for i = 2, #ARGV do redis.call('EXPIRE', ARGV[i], ARGV[1]) end
return #ARGV - 1
"""

_COMMIT = f"""
local meta, current, versions, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local version, expected, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local state = redis.call('HGET', meta, 'state')
if state ~= '{LOADING}' then
  return redis.error_reply('{_REFUSED} version ' .. version .. ' is ' .. (state or 'unknown') .. ', not loading')
end
local count = tonumber(redis.call('GET', counter) or '0')
if count ~= expected then
  return redis.error_reply('{_REFUSED} version ' .. version .. ' has ' .. count .. ' keys, expected ' .. expected)
end
redis.call('HSET', meta, 'state', '{COMMITTED}', 'committed_at', now)
local previous = redis.call('GET', current)
redis.call('SET', current, version)
redis.call('ZADD', versions, now, version)
return previous
"""

_READ = f"""
local version = redis.call('GET', KEYS[1])
if not version then return {{}} end
local prefix = ARGV[1] .. ':' .. version .. ':'
local out = {{version}}
for s = 2, #ARGV, {_SLICE} do
  local keys = {{}}
  for i = s, math.min(s + {_SLICE - 1}, #ARGV) do keys[#keys + 1] = prefix .. ARGV[i] end
  local values = redis.call('MGET', unpack(keys))
  for i = 1, #keys do out[#out + 1] = values[i] end
end
return out
"""

_BEGIN = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('{_REFUSED} version has a record; remove it first')
end
redis.call('HSET', KEYS[1], 'state', '{LOADING}', 'started_at', ARGV[1])
redis.call('SET', KEYS[2], 0)
return 1
"""

# one SCAN step over the base version's keys, each COPYed under the new version's prefix and counted (a key
# written meanwhile is not copied over: COPY without REPLACE); only while the new version is loading
_COPY = f"""
if redis.call('HGET', KEYS[1], 'state') ~= '{LOADING}' then
  return redis.error_reply('{_REFUSED} version is not loading')
end
local src, dst = ARGV[1], ARGV[2]
local reply = redis.call('SCAN', ARGV[3], 'MATCH', src .. '*', 'COUNT', ARGV[4])
local copied = 0
for _, key in ipairs(reply[2]) do
  copied = copied + redis.call('COPY', key, dst .. string.sub(key, #src + 1))
end
redis.call('INCRBY', KEYS[2], copied)
return {{reply[1], copied}}
"""

_LOOKUP_MANY = f"""
local version = redis.call('GET', KEYS[1])
local n = (#ARGV - 1) / 2
local out = {{version or false}}
for s = 2, n + 1, {_SLICE} do
  local e = math.min(s + {_SLICE - 1}, n + 1)
  local batch, rt = {{}}, {{}}
  for i = s, e do
    batch[#batch + 1] = ARGV[1] .. ':' .. (version or '') .. ':' .. ARGV[i]
    rt[#rt + 1] = ARGV[i + n]
  end
  local values = {{}}
  if version then values = redis.call('MGET', unpack(batch)) end
  local realtime = redis.call('MGET', unpack(rt))
  for i = 1, #rt do
    out[#out + 1] = values[i] or false
    out[#out + 1] = realtime[i]
  end
end
return out
"""

# point current at a committed version, if current is still what the caller saw (rollback)
_SWITCH = f"""
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= '{COMMITTED}' then
  return redis.error_reply('{_REFUSED} version ' .. ARGV[1] .. ' is ' .. (state or 'unknown') .. ', not committed')
end
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[2] then
  return redis.error_reply('{_REFUSED} current version is ' .. current .. ', no longer ' .. ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[1])
return current
"""

# first step of a removal: refuse the version being served, else stop its writers
_MARK_REMOVING = f"""
if redis.call('GET', KEYS[2]) == ARGV[1] then
  return redis.error_reply('{_REFUSED} version ' .. ARGV[1] .. ' is being served')
end
redis.call('HSET', KEYS[1], 'state', '{DELETING}')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
"""

# read_ahead: ARGV = n, per read (namespace, count, keys...), m, per ahead read (namespace, count, per key:
# parts, per part (source, text)); source 0: the text itself, i > 0: field `text` of read i's value at the key's
# position (its last key's value where missing). Answer: per read {version or false, values...}; per ahead read
# {version, keys..., values...}, or false where a field is not text or an integer (the caller reads it itself)
_AHEAD = f"""
local pos = 1
local function take() pos = pos + 1; return ARGV[pos - 1] end
local function mget(prefix, keys)
  local out = {{}}
  for s = 1, #keys, {_SLICE} do
    local names = {{}}
    for i = s, math.min(s + {_SLICE - 1}, #keys) do names[#names + 1] = prefix .. keys[i] end
    local values = redis.call('MGET', unpack(names))
    for i = 1, #names do out[#out + 1] = values[i] end
  end
  return out
end
local out, found = {{}}, {{}}
local n = tonumber(take())
for r = 1, n do
  local ns, count = take(), tonumber(take())
  local keys = {{}}
  for i = 1, count do keys[i] = take() end
  local version = redis.call('GET', ns .. ':current')
  local values = {{}}
  if version and count > 0 then values = mget(ns .. ':' .. version .. ':', keys) end
  found[r] = values
  local answer = {{version or false}}
  for i = 1, count do answer[i + 1] = values[i] or false end
  out[r] = answer
end
local function field(r, i, name)
  local values = found[r]
  if values == nil then return nil end
  local raw = values[i] or values[#values]
  if not raw then return nil end
  local quoted = '"' .. name .. '":'
  local s, e = string.find(raw, quoted, 1, true)
  while s ~= nil and string.byte(raw, s - 1) ~= 123 and string.byte(raw, s - 1) ~= 44 do
    s, e = string.find(raw, quoted, e + 1, true)
  end
  if s == nil then return nil end
  if string.byte(raw, e + 1) == 34 then
    local close = string.find(raw, '"', e + 2, true)
    local t = close and string.sub(raw, e + 2, close - 1)
    if t == nil or string.find(t, '\\\\', 1, true) then return nil end
    return t
  end
  local t = string.match(raw, '^-?%d+', e + 1)
  if t == nil or string.find(string.sub(raw, e + 1 + #t, e + 1 + #t), '[.eE]') then return nil end
  return t
end
local m = tonumber(take())
for a = 1, m do
  local ns, count = take(), tonumber(take())
  local keys, ok = {{}}, true
  for j = 1, count do
    local parts = {{}}
    for q = 1, tonumber(take()) do
      local source, t = tonumber(take()), take()
      if source > 0 then t = field(source, j, t) end
      if t == nil then ok = false else parts[#parts + 1] = t end
    end
    keys[j] = table.concat(parts)
  end
  local answer = false
  local version = ok and redis.call('GET', ns .. ':current')
  if version then
    answer = {{version}}
    local values = mget(ns .. ':' .. version .. ':', keys)
    for j = 1, count do answer[j + 1] = keys[j] end
    for j = 1, count do answer[count + j + 1] = values[j] or false end
  end
  out[n + a] = answer
end
return out
"""

_SCRIPTS = {"count_new": _COUNT_NEW, "expire": _EXPIRE, "commit": _COMMIT, "read": _READ,
            "begin": _BEGIN, "lookup_many": _LOOKUP_MANY, "switch": _SWITCH, "mark_removing": _MARK_REMOVING,
            "copy": _COPY, "ahead": _AHEAD}


_resp = resp.command


def _args(*args: bytes) -> bytes:
    """Arguments in protocol form, without the command's header."""
    return b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


_MULTI, _EXEC, _UNWATCH = _resp(b"MULTI"), _resp(b"EXEC"), _resp(b"UNWATCH")


def _refusal(exc: redis_py.ResponseError) -> ServingError | None:
    text = str(exc)
    if _REFUSED not in text:
        return None
    return LoadRefused(text.split(_REFUSED, 1)[1].split(" script:", 1)[0].strip())


class _Connection:
    """A redis-py client plus the script hashes, opened in the process that uses it."""

    def __init__(self, client: redis_py.Redis) -> None:
        self.client = client
        self.scripts = {name: client.register_script(body) for name, body in _SCRIPTS.items()}
        # bulk writes use a dedicated connection (WATCH is per connection); replies of the last
        # transaction are read while the next command is being prepared
        self.writer: Any = None
        self.pending = 0
        # lookups use another one, spoken to directly (see RedisStore._read_script)
        self.reader: Any = None
        #: namespace -> the current version the last read of it saw, with its key names (redis._known)
        self.current: dict[str, tuple[str, bytes, bytes, bytes, bytes]] = {}


class RedisStore(ServingStore):
    """Serving store on a Redis server (``serving.store: redis``).

    Settings options: ``host``, ``port``, ``db`` and ``password_env``, the name of the
    environment variable holding the password; the variable is read where the connection is
    opened (driver and executors alike), so the password never travels in conf or tasks.
    """

    kind = "redis"
    #: keys per SCAN / UNLINK round trip when a version is deleted
    delete_batch = 5000

    def _describe(self) -> str:
        o = self.settings.options
        return f"redis://{o.get('host', '127.0.0.1')}:{o.get('port', 6379)}/{o.get('db', 0)}"

    # -- keys ------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def _meta(self, version: str) -> str:
        return self._key("_load", version)

    def _counter(self, version: str) -> str:
        return self._key("_count", version)

    # -- connection ------------------------------------------------------------------------------
    def _password(self) -> str | None:
        name = self.settings.options.get("password_env")
        if not name:
            return None
        if name not in os.environ:
            raise ConfError(f"serving.redis.password_env: environment variable {name} is not set "
                            "in this process (executors need it too, e.g. spark.executorEnv.<NAME>)")
        return os.environ[name]

    def _connect(self) -> _Connection:
        o = self.settings.options
        # no retries for the first PING: redis-py retries authentication failures (a
        # ConnectionError) with backoff, which turns a wrong password into a long hang
        client = redis_py.Redis(host=o.get("host", "127.0.0.1"), port=int(o.get("port", 6379)),
                                db=int(o.get("db", 0)), password=self._password(),
                                socket_timeout=o.get("socket_timeout", 60),
                                socket_connect_timeout=o.get("connect_timeout", 10),
                                health_check_interval=30, retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
            client.set_retry(Retry(ExponentialBackoff(cap=2.0, base=0.05), 3))
        except redis_py.AuthenticationError as exc:
            raise ServingError(f"{self._describe()}: authentication failed ({exc}); "
                               "check serving.redis.password_env") from None
        except redis_py.ConnectionError as exc:
            raise ServingError(f"{self._describe()}: cannot connect: {exc}") from None
        return _Connection(client)

    def _disconnect(self, conn: _Connection) -> None:
        if conn.writer is not None:
            _drop_writer(conn)
        _drop_reader(conn)
        conn.client.close()

    @property
    def _client(self) -> redis_py.Redis:
        return self._connection().client

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._connection().scripts[script](keys=keys, args=args)
        except redis_py.ResponseError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from None

    def _read_script(self, script: str, keys: list[str], args: list[str]) -> Any:
        """Run a read script on a connection of its own, formatted here in the Redis protocol.

        The lookup service's hot path: redis-py's per-command machinery (argument packing, retry and
        observability hooks) costs more client CPU than the read itself.  A broken connection is
        replaced once; a script the server lost (restart, ``SCRIPT FLUSH``) is loaded again.
        """
        return self._read_scripts([(script, keys, args)])[0]

    def _read_scripts(self, calls: list[tuple[str, list[str], list[str]]]) -> list[Any]:
        """:meth:`_read_script` of several calls, sent together and answered in order (one round trip)."""
        conn = self._connection()
        packed = [_resp(b"EVALSHA", conn.scripts[script].sha.encode(), b"%d" % len(keys),
                        *(k.encode() for k in keys), *(a.encode() for a in args)) for script, keys, args in calls]
        return self._exchange(conn, packed, {c[0] for c in calls})

    def _exchange(self, conn: _Connection, packed: list[bytes], scripts: set[str] = frozenset()) -> list[Any]:
        """Send the read commands ``packed`` on the reader connection, their answers in order; the
        ``scripts`` they run are loaded again when the server lost them."""
        for attempt in range(3):
            if conn.reader is None:
                conn.reader = conn.client.connection_pool.get_connection()
            try:
                # one write: redis-py sends a list of commands with one sendall each
                conn.reader.send_packed_command([b"".join(packed)], check_health=False)
                out, missing = [], None
                for _ in packed:  # read every answer, so that the connection stays in step
                    try:
                        out.append(conn.reader.read_response())
                    except redis_py.exceptions.NoScriptError as exc:
                        missing = exc
                if missing is None:
                    return out
                for script in scripts:
                    conn.client.script_load(_SCRIPTS[script])
            except (redis_py.ConnectionError, redis_py.TimeoutError, OSError):
                _drop_reader(conn)
                if attempt:
                    raise
        raise ServingError(f"{self._describe()}: a read script is missing on the server")

    def read_each(self, reads: Sequence[tuple[ServingStore, Sequence[Any]]]) -> list[tuple[str | None, list[Any]]]:
        if not self._same_server(reads):
            return super().read_each(reads)
        found = self._read_many([(store.namespace, [k if type(k) is str else key_text(k) for k in keys], False)
                                 for store, keys in reads])
        return [(version, decode_values(raw)) for version, raw, _ in found]

    def read_ahead(self, reads: Sequence[tuple[ServingStore, Sequence[Any]]],
                   ahead: Sequence[tuple[ServingStore, Sequence[KeyTemplate]]]
                   ) -> tuple[list[tuple[str | None, list[Any]]], list[tuple[str, list[str], list[Any]] | None]]:
        """The base class's :meth:`~ServingStore.read_ahead` in one script run, when every store is on this
        server: the fields are read from the JSON values on the server (``cjson``)."""
        if not ahead or not self._same_server(reads) or not self._same_server(ahead):
            return super().read_ahead(reads, ahead)
        args = [str(len(reads))]
        for store, keys in reads:
            args += [store.namespace, str(len(keys)), *(k if type(k) is str else key_text(k) for k in keys)]
        args.append(str(len(ahead)))
        for store, templates in ahead:
            args += [store.namespace, str(len(templates))]
            for parts in templates:
                args.append(str(len(parts)))
                for part in parts:
                    args += ("0", part) if type(part) is str else (str(part[0] + 1), part[1])
        answer = self._read_scripts([("ahead", [], args)])[0]
        first = [(got[0].decode() if got[0] else None, decode_values(got[1:]))
                 for got in answer[:len(reads)]]
        then: list[tuple[str, list[str], list[Any]] | None] = []
        for (_, templates), got in zip(ahead, answer[len(reads):], strict=True):
            n = len(templates)
            then.append((got[0].decode(), [k.decode() for k in got[1:n + 1]], [decode_value(r) for r in got[n + 1:]])
                        if got else None)
        return first, then

    def _same_server(self, reads: Sequence[tuple[ServingStore, Any]]) -> bool:
        return all(isinstance(store, RedisStore) and store.settings.options == self.settings.options
                   for store, _ in reads)

    # -- load ------------------------------------------------------------------------------------
    def _begin(self, version: str) -> None:
        self._run("begin", [self._meta(version), self._counter(version)], [repr(time.time())])

    def _write(self, version: str, pairs: dict[str, bytes]) -> None:
        # redis-py packs every argument separately in Python, which dominates a bulk load;
        # the protocol is formatted here with one operation per key instead
        prefix = self._key(version, "").encode()
        keys = [b"$%d\r\n%b\r\n" % (len(k), k) for k in (prefix + k.encode() for k in pairs)]
        kv = [b"%b$%d\r\n%b\r\n" % (k, len(v), v) for k, v in zip(keys, pairs.values(), strict=True)]
        self._send_write(version, len(keys), b"".join(keys), b"".join(kv))

    def _write_columns(self, version: str, keys: pa.Array, values: pa.Array) -> None:
        key_text = resp.key_text_array(keys)
        prefix = self._key(version, "")
        key_args = resp.bulk_strings(key_text, prefix=prefix)
        pairs = resp.bulk_pairs(key_text, values, prefix=prefix)
        self._send_write(version, len(keys), resp.concatenated(key_args), resp.concatenated(pairs))

    def _send_write(self, version: str, n: int, key_args: bytes | memoryview, pair_args: bytes | memoryview) -> None:
        """One transaction: count the new keys, ``MSET`` the pairs (then TTLs), if still loading.

        ``key_args`` holds the ``n`` prefixed keys and ``pair_args`` the ``n`` key/value pairs,
        both as consecutive protocol bulk strings.
        """
        conn = self._connection()
        meta = self._meta(version).encode()
        count = b"*%d\r\n" % (n + 4) + _args(b"EVALSHA", conn.scripts["count_new"].sha.encode(), b"1",
                                              self._counter(version).encode())
        transaction = [_MULTI, count, key_args, b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * n), pair_args]
        queued = 2
        if self.settings.ttl_seconds:
            expire = b"*%d\r\n" % (n + 4) + _args(b"EVALSHA", conn.scripts["expire"].sha.encode(), b"0",
                                                   str(self.settings.ttl_seconds).encode())
            transaction += [expire, key_args]
            queued += 1
        transaction.append(_EXEC)
        if conn.writer is None:
            for name in ("count_new", "expire"):
                conn.client.script_load(_SCRIPTS[name])
            conn.writer = conn.client.connection_pool.get_connection()
        try:
            conn.writer.send_packed_command([_resp(b"WATCH", meta), _resp(b"HGET", meta, b"state")],
                                            check_health=False)
            self._flush(version)  # the previous transaction ran while this one was prepared
            conn.writer.read_response()  # OK
            state = conn.writer.read_response()
            if state == LOADING.encode():
                conn.writer.send_packed_command(transaction, check_health=False)
                conn.pending = 1 + queued  # replies: OK for MULTI, QUEUED per command, then EXEC's
            else:
                conn.writer.send_packed_command([_UNWATCH], check_health=False)
                conn.writer.read_response()
        except BaseException:
            # replies may be left unread on the connection: never reuse it
            _drop_writer(conn)
            raise
        if state != LOADING.encode():
            raise ServingError(f"version {version} is {state.decode() if state else 'unknown'}, not loading")

    def _flush(self, version: str) -> None:
        conn = self._connection()
        if not conn.pending:
            return
        try:
            for _ in range(conn.pending):
                conn.writer.read_response()
            results = conn.writer.read_response()
            conn.pending = 0
        except BaseException:
            # a broken or interrupted connection may hold unread replies: never reuse it
            _drop_writer(conn)
            raise
        if results is None:
            raise ServingError(f"version {version} was committed or removed during a write; nothing was written")
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed

    def _commit(self, version: str, expected_count: int) -> str | None:
        previous = self._run("commit", [self._meta(version), self._key("current"), self._key("_versions"),
                                        self._counter(version)], [version, expected_count, repr(time.time())])
        return previous.decode() if previous is not None else None

    def _remove_version(self, version: str) -> int:
        client, meta = self._client, self._meta(version)
        # first stop writers (changing the record they WATCH discards their queued transactions)
        self._run("mark_removing", [meta, self._key("current"), self._key("_versions"), self._key("_removing")],
                  [version])
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=self._key(version, "*"), count=self.delete_batch):
            batch.append(key)
            if len(batch) >= self.delete_batch:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
        pipe = client.pipeline(transaction=True)
        pipe.delete(meta, self._counter(version)).srem(self._key("_removing"), version).execute()
        return deleted

    def _copy_version(self, base: str, version: str) -> int:
        cursor, copied = b"0", 0
        while True:
            cursor, n = self._run("copy", [self._meta(version), self._counter(version)],
                                  [self._key(base, ""), self._key(version, ""), cursor, self.delete_batch])
            copied += int(n)
            if cursor in (b"0", "0"):
                return copied

    def _read_version(self, version: str, keys: list[str]) -> list[bytes | None]:
        prefix, out = self._key(version, ""), []
        for start in range(0, len(keys), _SLICE):
            out += self._client.mget([prefix + k for k in keys[start:start + _SLICE]])
        return out

    def _unfinished_removals(self) -> list[str]:
        return sorted(v.decode() for v in self._client.smembers(self._key("_removing")))

    def _switch(self, version: str, expected_current: str) -> None:
        self._run("switch", [self._meta(version), self._key("current")], [version, expected_current])

    def _records(self) -> list[LoadInfo]:
        prefix = self._key("_load", "")
        versions = [k.decode()[len(prefix):] for k in self._client.scan_iter(match=prefix + "*", count=1000)]
        return [info for v in versions if (info := self.load_info(v)) is not None]

    # -- reads -----------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        value = self._client.get(self._key("current"))
        return value.decode() if value is not None else None

    def versions(self) -> list[str]:
        return [v.decode() for v in self._client.zrange(self._key("_versions"), 0, -1)]

    def load_info(self, version: str) -> LoadInfo | None:
        pipe = self._client.pipeline(transaction=True)
        raw, count = pipe.hgetall(self._meta(version)).get(self._counter(version)).execute()
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if not fields:
            return None
        return LoadInfo(version=version, state=fields.get("state", "unknown"), count=int(count or 0),
                        started_at=_float(fields.get("started_at")),
                        committed_at=_float(fields.get("committed_at")))

    def _read_current(self, keys: list[str]) -> tuple[str | None, list[bytes | None]]:
        version, values, _ = self._read_many([(self.namespace, keys, False)])[0]
        return version, values

    def _read_both(self, key: str) -> tuple[bytes | None, bytes | None]:
        _, batches, realtimes = self._read_both_many([key])
        return batches[0], realtimes[0]

    def _read_both_many(self, keys: list[str]) -> tuple[str | None, list[bytes | None], list[bytes | None]]:
        return self._read_many([(self.namespace, keys, True)])[0]

    def _read_many(self, reads: list[tuple[str, list[str], bool]]) -> list[tuple[str | None, list, list]]:
        """For each ``(namespace, keys, realtime)``: the current version of that namespace, the stored values of
        ``keys`` in it and, with ``realtime``, their real-time values (else ``[]``), each read consistent.

        A namespace whose current version this connection saw last is read with one plain ``MGET`` of its
        ``current`` key and the value keys under that version (atomic; half the server CPU of the script that
        finds the version itself); where ``current`` has moved since, or is not known yet, the script reads it
        in a second round trip.  All reads of a round trip are sent together."""
        conn = self._connection()
        out: list[Any] = [None] * len(reads)
        hinted = [i for i, (namespace, _, _) in enumerate(reads) if namespace in conn.current]
        if hinted:
            answers = self._exchange(conn, [_resp(b"MGET", *_hinted_names(reads[i], conn.current[reads[i][0]]))
                                            for i in hinted])
            for i, answer in zip(hinted, answers, strict=True):
                out[i] = _hinted_answer(reads[i], conn.current, answer)
        rest = [i for i, found in enumerate(out) if found is None]
        if rest:
            calls = [_script_call(*reads[i]) for i in rest]
            for i, answer in zip(rest, self._read_scripts(calls), strict=True):
                out[i] = _script_answer(reads[i], answer)
                if out[i][0] is not None:
                    conn.current[reads[i][0]] = _known(reads[i][0], out[i][0])
        return out

    # -- real-time view --------------------------------------------------------------------------
    def _write_realtime(self, pairs: list[tuple[str, bytes]], ttl: int | None) -> None:
        pipe = self._client.pipeline(transaction=False)
        if ttl is None:
            pipe.mset({self._key("rt", k): v for k, v in pairs})
        else:
            for key, value in pairs:
                pipe.set(self._key("rt", key), value, ex=ttl)
        pipe.execute()

    def _read_realtime(self, key: str) -> bytes | None:
        return self._client.get(self._key("rt", key))


def _known(namespace: str, version: str) -> tuple[str, bytes, bytes, bytes, bytes]:
    """What a read of ``namespace`` at ``version`` needs: the version, as text and as stored, and the names of
    the ``current`` key and of the value and real-time key prefixes."""
    return (version, version.encode(), f"{namespace}:current".encode(), f"{namespace}:{version}:".encode(),
            f"{namespace}:rt:".encode())


def _hinted_names(read: tuple[str, list[str], bool], known: tuple[str, bytes, bytes, bytes, bytes]) -> list[bytes]:
    """The ``MGET`` keys of a read at the ``known`` version: ``current``, the values, the real-time values."""
    _, keys, realtime = read
    names = [k.encode() for k in keys]
    prefix = known[3]
    out = [known[2], *(prefix + k for k in names)]
    if realtime:
        rt = known[4]
        out += [rt + k for k in names]
    return out


def _hinted_answer(read: tuple[str, list[str], bool], current: dict[str, tuple], answer: list) -> tuple | None:
    """The read's ``(version, values, real-time values)`` from its ``MGET``, or ``None`` (and the version
    forgotten) when ``current`` is no longer the version read."""
    namespace, keys, realtime = read
    known = current[namespace]
    if answer[0] != known[1]:
        del current[namespace]
        return None
    n = len(keys) + 1
    return known[0], [b or None for b in answer[1:n]], answer[n:] if realtime else []


def _script_call(namespace: str, keys: list[str], realtime: bool) -> tuple[str, list[str], list[str]]:
    current = f"{namespace}:current"
    if realtime:
        return "lookup_many", [current], [namespace, *keys, *(f"{namespace}:rt:{k}" for k in keys)]
    return "read", [current], [namespace, *keys]


def _script_answer(read: tuple[str, list[str], bool], answer: list) -> tuple[str | None, list, list]:
    _, keys, realtime = read
    if realtime:  # [version or false, batch 1, realtime 1, batch 2, ...]
        return (answer[0].decode() if answer[0] else None), [b or None for b in answer[1::2]], list(answer[2::2])
    if not answer:  # no version yet
        return None, [None] * len(keys), []
    return answer[0].decode(), answer[1:], []


def _drop_writer(conn: _Connection) -> None:
    if conn.writer is not None:
        conn.writer.disconnect()
        conn.client.connection_pool.release(conn.writer)
    conn.writer, conn.pending = None, 0


def _drop_reader(conn: _Connection) -> None:
    if conn.reader is not None:
        conn.reader.disconnect()
        conn.client.connection_pool.release(conn.reader)
    conn.reader = None


def _float(value: str | None) -> float | None:
    return float(value) if value else None
