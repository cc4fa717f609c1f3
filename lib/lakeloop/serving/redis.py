"""Redis serving store (redis-py).

Keyspace of namespace ``ns``::

    ns:current             the version being served (string)
    ns:{version}:{key}     a loaded value (compact JSON)
    ns:rt:{key}            a real-time value (not versioned)
    ns:_load:{version}     hash: state (loading | committed | deleting), count, started_at, committed_at
    ns:_versions           sorted set of committed versions, scored by commit time

Loads, the switch and reads are Lua scripts, so every check-and-act is atomic on the
server: a batch is written only while its version is ``loading`` and counts the keys that
are new (Spark task retries rewrite keys without inflating the count); the commit checks
state and count and sets ``current`` in the same step; a read resolves ``current`` and
all the values it asks for in one step.  The scripts build key names from arguments, which
a single Redis server (or a replica set) allows and Redis Cluster does not.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis as redis_py
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from lakeloop.conf import ConfError
from lakeloop.serving.base import COMMITTED, DELETING, LOADING, LoadInfo, LoadRefused, ServingError, ServingStore

__all__ = ["RedisStore"]

_REFUSED = "LAKELOOP_REFUSED"
_NOT_LOADING = "LAKELOOP_NOT_LOADING"
# Lua's unpack() is limited to ~8000 values; MSET/EXISTS/MGET are issued in slices below that
_SLICE = 1000

_WRITE = f"""
local meta, ttl = KEYS[1], tonumber(ARGV[1])
if redis.call('HGET', meta, 'state') ~= '{LOADING}' then
  return redis.error_reply('{_NOT_LOADING} version ' .. string.match(meta, '[^:]+$') .. ' is not loading')
end
local new = 0
for s = 2, #ARGV, {2 * _SLICE} do
  local e = math.min(s + {2 * _SLICE - 1}, #ARGV)
  local keys = {{}}
  for i = s, e, 2 do keys[#keys + 1] = ARGV[i] end
  new = new + #keys - redis.call('EXISTS', unpack(keys))
  if ttl > 0 then
    for i = s, e, 2 do redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ttl) end
  else
    redis.call('MSET', unpack(ARGV, s, e))
  end
end
return redis.call('HINCRBY', meta, 'count', new)
"""

_COMMIT = f"""
local meta, current, versions = KEYS[1], KEYS[2], KEYS[3]
local version, expected, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local state = redis.call('HGET', meta, 'state')
if state ~= '{LOADING}' then
  return redis.error_reply('{_REFUSED} version ' .. version .. ' is ' .. (state or 'unknown') .. ', not loading')
end
local count = tonumber(redis.call('HGET', meta, 'count') or '0')
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

_LOOKUP = """
local version = redis.call('GET', KEYS[1])
local batch = false
if version then batch = redis.call('GET', ARGV[1] .. ':' .. version .. ':' .. ARGV[2]) end
return {batch, redis.call('GET', KEYS[2])}
"""

_BEGIN = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('{_REFUSED} version has a record; remove it first')
end
redis.call('HSET', KEYS[1], 'state', '{LOADING}', 'count', 0, 'started_at', ARGV[1])
return 1
"""

_SCRIPTS = {"write": _WRITE, "commit": _COMMIT, "read": _READ, "lookup": _LOOKUP, "begin": _BEGIN}


# a key (prefix + key) and its value as two bulk strings of the Redis protocol (RESP2)
_RESP_PAIR = b"$%d\r\n%b%b\r\n$%d\r\n%b\r\n"


def _resp_arg(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def _refusal(exc: redis_py.ResponseError) -> ServingError | None:
    text = str(exc)
    for marker, cls in ((_REFUSED, LoadRefused), (_NOT_LOADING, ServingError)):
        if marker in text:
            return cls(text.split(marker, 1)[1].split(" script:", 1)[0].strip())
    return None


class _Connection:
    """A redis-py client plus the script hashes, opened in the process that uses it."""

    def __init__(self, client: redis_py.Redis) -> None:
        self.client = client
        self.scripts = {name: client.register_script(body) for name, body in _SCRIPTS.items()}
        # bulk writes are pipelined on a dedicated connection: replies still to read
        self.writer: Any = None
        self.pending = 0


class RedisStore(ServingStore):
    """Serving store on a Redis server (``serving.store: redis``).

    Settings options: ``host``, ``port``, ``db`` and ``password_env``, the name of the
    environment variable holding the password; the variable is read where the connection is
    opened (driver and executors alike), so the password never travels in conf or tasks.
    """

    kind = "redis"
    #: bulk-write commands sent before waiting for their replies
    pipeline_depth = 8
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

    # -- load ------------------------------------------------------------------------------------
    def _begin(self, version: str) -> None:
        self._run("begin", [self._meta(version)], [repr(time.time())])

    def _write(self, version: str, pairs: dict[str, bytes]) -> None:
        # redis-py packs every argument separately in Python, which dominates a bulk load;
        # formatting the protocol here takes one operation per key
        conn = self._connection()
        prefix = self._key(version, "").encode()
        head = [b"EVALSHA", conn.scripts["write"].sha.encode(), b"1", self._meta(version).encode(),
                str(self.settings.ttl_seconds or 0).encode()]
        plen = len(prefix)
        body = [_RESP_PAIR % (plen + len(kb := k.encode()), prefix, kb, len(v), v) for k, v in pairs.items()]
        message = b"*%d\r\n" % (len(head) + 2 * len(pairs)) + b"".join(_resp_arg(a) for a in head) + b"".join(body)
        if conn.writer is None:
            conn.client.script_load(_WRITE)
            conn.writer = conn.client.connection_pool.get_connection()
        try:
            conn.writer.send_packed_command([message], check_health=False)
        except BaseException:
            _drop_writer(conn)
            raise
        conn.pending += 1
        if conn.pending >= self.pipeline_depth:
            self._flush(version)

    def _flush(self, version: str) -> None:
        conn = self._connection()
        errors = []
        try:
            while conn.pending:
                try:
                    conn.writer.read_response()
                except redis_py.ResponseError as exc:
                    errors.append(exc)
                conn.pending -= 1
        except BaseException:
            # a broken or interrupted connection may hold unread replies: never reuse it
            _drop_writer(conn)
            raise
        if errors:
            raise _refusal(errors[0]) or errors[0]

    def _commit(self, version: str, expected_count: int) -> str | None:
        previous = self._run("commit", [self._meta(version), self._key("current"), self._key("_versions")],
                             [version, expected_count, repr(time.time())])
        return previous.decode() if previous is not None else None

    def _remove_version(self, version: str) -> int:
        client, meta = self._client, self._meta(version)
        # first stop writers (the write script checks the state), then forget the version
        client.hset(meta, "state", DELETING)
        client.zrem(self._key("_versions"), version)
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=self._key(version, "*"), count=self.delete_batch):
            batch.append(key)
            if len(batch) >= self.delete_batch:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
        client.delete(meta)
        return deleted

    # -- reads -----------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        value = self._client.get(self._key("current"))
        return value.decode() if value is not None else None

    def versions(self) -> list[str]:
        return [v.decode() for v in self._client.zrange(self._key("_versions"), 0, -1)]

    def load_info(self, version: str) -> LoadInfo | None:
        fields = {k.decode(): v.decode() for k, v in self._client.hgetall(self._meta(version)).items()}
        if not fields:
            return None
        return LoadInfo(version=version, state=fields.get("state", "unknown"), count=int(fields.get("count", 0)),
                        started_at=_float(fields.get("started_at")),
                        committed_at=_float(fields.get("committed_at")))

    def _read_current(self, keys: list[str]) -> tuple[str | None, list[bytes | None]]:
        out = self._run("read", [self._key("current")], [self.namespace, *keys])
        if not out:
            return None, [None] * len(keys)
        return out[0].decode(), out[1:]

    def _read_both(self, key: str) -> tuple[bytes | None, bytes | None]:
        batch, realtime = self._run("lookup", [self._key("current"), self._key("rt", key)], [self.namespace, key])
        return batch, realtime

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


def _drop_writer(conn: _Connection) -> None:
    conn.writer.disconnect()
    conn.client.connection_pool.release(conn.writer)
    conn.writer, conn.pending = None, 0


def _float(value: str | None) -> float | None:
    return float(value) if value else None
