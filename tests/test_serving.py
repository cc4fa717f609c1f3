"""Serving stores against a real redis-server on loopback and a real SQLite file.

Every behavioural test runs on both stores through the same ``ServingStore`` interface.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from lakeloop.conf import ConfError
from lakeloop.serving import LoadRefused, ServingError, ServingStore, StoreSettings, open_store, store_from_config
from lakeloop.serving.redis import RedisStore
from lakeloop.serving.sqlite import SQLiteStore

from tests.redis_server import MISSING, REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parents[1]
STORES = ["sqlite", "redis"]


@pytest.fixture(params=STORES)
def kind(request) -> str:
    return request.param


def values(version: str, n: int, start: int = 0) -> list[tuple[str, dict]]:
    return [(f"k{i}", {"version": version, "i": i}) for i in range(start, start + n)]


def load(store: ServingStore, version: str, n: int, batch: int = 100) -> None:
    store.begin_load(version)
    for start in range(0, n, batch):
        store.write_batch(version, values(version, min(batch, n - start), start))
    store.commit_load(version, n)


def raw_key_count(store: ServingStore, version: str) -> int:
    """Keys of ``version`` physically left in the backend, counted without the store's own bookkeeping."""
    if isinstance(store, RedisStore):
        o = store.settings.options
        import redis

        client = redis.Redis(host=o["host"], port=o["port"])
        return sum(1 for _ in client.scan_iter(match=f"{store.namespace}:{version}:*", count=1000))
    with sqlite3.connect(store.settings.options["path"]) as db:
        return db.execute("SELECT count(*) FROM serving_entries WHERE namespace = ? AND version = ?",
                          (store.namespace, version)).fetchone()[0]


# -- round trip -------------------------------------------------------------------------------------------
def test_round_trip(make_store, kind):
    store = make_store(kind)
    assert store.current_version() is None and store.versions() == [] and store.get("a") is None
    store.begin_load("2026-11-22")
    rows = [("a", {"score": 0.5, "items": [3, 1, 2]}), (7, [["i1", 0.9], ["i2", 0.8]]), ("ünï", "text"),
            ("n", 12)]
    assert store.write_batch("2026-11-22", rows[:2]) == 2
    assert store.write_batch("2026-11-22", iter(rows[2:])) == 2
    assert store.get("a") is None, "a load is invisible before its commit"
    assert store.commit_load("2026-11-22", 4) is None
    assert store.current_version() == "2026-11-22"
    assert store.versions() == ["2026-11-22"]
    assert store.get("a") == {"score": 0.5, "items": [3, 1, 2]}
    assert store.get(7) == store.get("7") == [["i1", 0.9], ["i2", 0.8]]
    assert store.get_many(["ünï", "missing", "n"]) == ["text", None, 12]
    assert store.get_many([]) == []
    info = store.load_info("2026-11-22")
    assert (info.state, info.count) == ("committed", 4)


def test_large_reads_and_writes_span_several_commands(make_store, kind):
    store = make_store(kind, batch_size=3000)
    load(store, "v1", 2500, batch=2500)  # more keys than one script slice / SQL IN list
    keys = [f"k{i}" for i in reversed(range(2600))] + ["k5"]
    got = store.get_many(keys)
    assert got[:100] == [None] * 100
    assert got[100:-1] == [{"version": "v1", "i": i} for i in reversed(range(2500))]
    assert got[-1] == {"version": "v1", "i": 5}


def test_encoded_values_are_stored_verbatim(make_store, kind):
    store = make_store(kind)
    store.begin_load("v1")
    store.write_batch("v1", [("a", '{"x":[1,2]}'), ("b", b"[3]")], encoded=True)
    store.commit_load("v1", 2)
    assert store.get_many(["a", "b"]) == [{"x": [1, 2]}, [3]]


def test_arrow_columns_load_like_write_batch(make_store, kind):
    import pyarrow as pa

    store = make_store(kind, batch_size=7, ttl_seconds=3600)
    store.begin_load("v1")
    ints = pa.array(range(30), pa.int64())
    texts = pa.array([f'{{"i":{i},"s":"\u00e9\\n{i}"}}' for i in range(30)])
    assert store.write_arrow("v1", ints, texts) == 30
    assert store.write_arrow("v1", ints.slice(0, 10), texts.slice(0, 10)) == 10  # a retried task
    # repeated keys in one batch: counted once, the last value wins, as in write_batch
    assert store.write_arrow("v1", pa.array(["a", "b", "a"]), pa.array(['"first"', "[1]", '"last"'])) == 3
    assert store.write_arrow("v1", pa.array([7, 8]), pa.array([1.5, None]), encoded=False) == 2
    assert store.load_info("v1").count == 32
    store.commit_load("v1", 32)
    assert store.get_many([0, 29, "a", "b", 8]) == [{"i": 0, "s": "\u00e9\n0"}, {"i": 29, "s": "\u00e9\n29"},
                                                     "last", [1], None]
    assert store.get(7) == 1.5


def test_arrow_columns_with_nulls_are_clear_errors(make_store, kind):
    import pyarrow as pa

    store = make_store(kind)
    store.begin_load("v1")
    with pytest.raises(ServingError, match="key None"):
        store.write_arrow("v1", pa.array(["a", None]), pa.array(["1", "2"]))
    with pytest.raises(ServingError, match="encoded value None"):
        store.write_arrow("v1", pa.array(["a", "b"]), pa.array(["1", None]))
    with pytest.raises(ServingError, match="v9.*not loading"):
        store.write_arrow("v9", pa.array(["a"]), pa.array(["1"]))


def test_bad_names_and_values_are_clear_errors(make_store, kind):
    store = make_store(kind)
    for version in ("a:b", "", "current", "x*"):
        with pytest.raises(ServingError, match="version"):
            store.begin_load(version)
    store.begin_load("v1")
    with pytest.raises(ServingError, match="key None"):
        store.write_batch("v1", [(None, 1)])
    with pytest.raises(ServingError, match="cannot be stored as JSON"):
        store.write_batch("v1", [("k", object())])
    with pytest.raises(ServingError, match="v9.*not loading"):
        store.write_batch("v9", [("k", 1)])


# -- the switch ---------------------------------------------------------------------------------------------
def test_commit_with_wrong_count_refuses_to_switch(make_store, kind):
    store = make_store(kind)
    load(store, "v1", 50)
    store.begin_load("v2")
    store.write_batch("v2", values("v2", 40))
    with pytest.raises(LoadRefused, match="40 keys, expected 50"):
        store.commit_load("v2", 50)
    assert store.current_version() == "v1"
    assert store.get("k3") == {"version": "v1", "i": 3}
    assert store.versions() == ["v1"]
    store.write_batch("v2", values("v2", 10, start=40))
    store.commit_load("v2", 50)
    assert store.current_version() == "v2" and store.get("k45") == {"version": "v2", "i": 45}
    with pytest.raises(LoadRefused, match="committed, not loading"):
        store.commit_load("v2", 50)
    with pytest.raises(LoadRefused, match="unknown, not loading"):
        store.commit_load("never", 0)
    with pytest.raises(ServingError, match="not loading"):
        store.write_batch("v2", [("k45", "straggler"), ("new", 1)])  # a task that outlived its load
    assert store.get_many(["k45", "new"]) == [{"version": "v2", "i": 45}, None]
    assert store.load_info("v2").count == 50


def test_a_version_started_from_a_base_holds_its_keys_and_counts_them(make_store, kind):
    store = make_store(kind, batch_size=700)
    load(store, "v1", 2500)
    with pytest.raises(ServingError, match="base version 'never' .* unknown, not committed"):
        store.begin_load("v2", base="never")
    assert store.begin_load("v2", base="v1") == 2500
    assert store.get("k3") == {"version": "v1", "i": 3}, "the copy is invisible before its commit"
    store.write_batch("v2", [("k3", "changed"), ("new", 1)])
    assert store.get_version_many("v2", ["k3", "k4", "new", "absent"]) == [
        b'"changed"', b'{"version":"v1","i":4}', b"1", None]
    with pytest.raises(LoadRefused, match="2501 keys, expected 2500"):
        store.commit_load("v2", 2500)
    store.commit_load("v2", 2501)
    assert store.get_many(["k3", "k2499", "new"]) == ["changed", {"version": "v1", "i": 2499}, 1]
    assert store.get_version_many("v1", ["k3", "new"]) == [b'{"version":"v1","i":3}', None], "the base is untouched"
    assert raw_key_count(store, "v2") == 2501 and raw_key_count(store, "v1") == 2500


def test_reads_of_several_namespaces_at_once_equal_each_ones_reads(make_store, kind):
    a, b, empty = (make_store(kind, namespace=f"many-{n}") for n in ("a", "b", "c"))
    load(a, "v1", 30)
    load(b, "v7", 5)
    reads = [(a, ["k1", "zz", "k29"]), (b, ["k3"]), (a, []), (empty, ["k1"]), (b, ["k1", "k1"])]
    assert a.get_many_each(reads) == [s.get_many(keys) for s, keys in reads] == [
        [{"version": "v1", "i": 1}, None, {"version": "v1", "i": 29}], [{"version": "v7", "i": 3}], [], [None],
        [{"version": "v7", "i": 1}] * 2]


def test_rewritten_keys_count_once(make_store, kind):
    store = make_store(kind, batch_size=7)
    store.begin_load("v1")
    store.write_batch("v1", values("v1", 30))
    store.write_batch("v1", values("v1", 30))  # a retried Spark task writes its partition again
    store.write_batch("v1", [("k1", "dup"), ("k1", "last")])
    assert store.load_info("v1").count == 30
    with pytest.raises(LoadRefused, match="30 keys, expected 32"):
        store.commit_load("v1", 32)  # rows counted upstream, with a duplicate key among them
    store.commit_load("v1", 30)
    assert store.get("k1") == "last"


def test_abort_removes_a_failed_load(make_store, kind):
    store = make_store(kind)
    load(store, "v1", 20)
    store.begin_load("v2")
    store.write_batch("v2", values("v2", 15))
    assert store.abort_load("v2") == 15
    assert store.load_info("v2") is None and raw_key_count(store, "v2") == 0
    with pytest.raises(ServingError, match="not loading"):
        store.write_batch("v2", values("v2", 1))  # a straggling writer cannot resurrect it
    assert raw_key_count(store, "v2") == 0
    with pytest.raises(ServingError, match="being served"):
        store.abort_load("v1")
    with pytest.raises(ServingError, match="being served"):
        store.begin_load("v1")
    assert store.abort_load("never-loaded") == 0
    assert store.current_version() == "v1" and store.get("k0") == {"version": "v1", "i": 0}


def test_begin_load_replaces_leftovers_of_the_same_version(make_store, kind):
    store = make_store(kind)
    store.begin_load("v1")
    store.write_batch("v1", values("old", 25))
    store.begin_load("v1")  # the run is repeated for the same date
    assert store.load_info("v1").count == 0 and raw_key_count(store, "v1") == 0
    store.write_batch("v1", values("v1", 10))
    store.commit_load("v1", 10)
    assert store.get("k9") == {"version": "v1", "i": 9} and store.get("k10") is None


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_gc_keeps_exactly_keep_versions(make_store, kind, keep):
    store = make_store(kind, keep_versions=keep)
    names = [f"v{i}" for i in range(1, 6)]
    for name in names:
        load(store, name, 30)
    kept = names[-keep:]
    assert store.versions() == kept
    assert store.current_version() == "v5"
    for name in names:
        assert raw_key_count(store, name) == (30 if name in kept else 0), name
        assert (store.load_info(name) is not None) == (name in kept)


def test_gc_never_deletes_a_load_in_progress(make_store, kind):
    store = make_store(kind, keep_versions=1)
    load(store, "v1", 10)
    store.begin_load("slow")
    store.write_batch("slow", values("slow", 5))
    load(store, "v2", 10)
    assert store.load_info("slow").count == 5 and store.versions() == ["v2"]


# -- TTL, real-time view ---------------------------------------------------------------------------------
def test_ttl_is_set_on_version_keys_when_configured(make_store, kind):
    store = make_store(kind, ttl_seconds=300)
    before = time.time()
    load(store, "v1", 5)
    if isinstance(store, RedisStore):
        ttl = store._client.ttl(f"{store.namespace}:v1:k0")
        assert 290 <= ttl <= 300
        assert store._client.ttl(f"{store.namespace}:current") == -1  # the pointer itself never expires
    else:
        with sqlite3.connect(store.settings.options["path"]) as db:
            (expires,) = db.execute("SELECT DISTINCT expires_at FROM serving_entries WHERE namespace = ?",
                                    (store.namespace,)).fetchone()
        assert before + 300 <= expires <= time.time() + 300
    untimed = make_store(kind)
    load(untimed, "v1", 5)
    if isinstance(untimed, RedisStore):
        assert untimed._client.ttl(f"{untimed.namespace}:v1:k0") == -1


def test_expired_values_are_not_served(make_store, kind):
    store = make_store(kind, ttl_seconds=1)
    load(store, "v1", 3)
    store.put_realtime([("k0", {"clicks": 1})], ttl=1)
    assert store.get("k0") is not None and store.get_realtime("k0") is not None
    time.sleep(2.1)
    assert store.get_many(["k0", "k1"]) == [None, None]
    assert store.get_realtime("k0") is None and store.lookup("k0") is None


def test_realtime_view_and_lookup(make_store, kind):
    store = make_store(kind)
    assert store.put_realtime([("k1", {"clicks": 4}), ("only-rt", 2)], ttl=60) == 2
    assert store.lookup("k1") == {"realtime": {"clicks": 4}}
    load(store, "v1", 3)
    store.begin_load("v2")
    store.write_batch("v2", [("k2", [["i9", 0.1]])])
    store.commit_load("v2", 1)
    assert store.get_realtime("k1") == {"clicks": 4}
    assert store.lookup("k2") == {"value": [["i9", 0.1]]}
    store.begin_load("v3")
    store.write_batch("v3", values("v3", 3))
    store.commit_load("v3", 3)
    assert store.lookup("k1") == {"version": "v3", "i": 1, "realtime": {"clicks": 4}}
    assert store.lookup("k0") == {"version": "v3", "i": 0}
    assert store.lookup("only-rt") == {"realtime": 2}
    assert store.lookup("nothing") is None
    store.put_realtime([("k1", {"clicks": 5})])
    assert store.lookup("k1")["realtime"] == {"clicks": 5}
    assert store.get("k1") == {"version": "v3", "i": 1}, "the real-time view never changes batch values"
    if isinstance(store, RedisStore):
        assert store._client.ttl(f"{store.namespace}:rt:only-rt") > 0
        assert store._client.ttl(f"{store.namespace}:rt:k1") == -1


# -- processes and pickling -------------------------------------------------------------------------------
def test_store_survives_pickling(make_store, kind):
    store = make_store(kind)
    load(store, "v1", 4)  # connected before pickling: the connection must not travel
    payload = pickle.dumps(store)
    assert len(payload) < 1024
    clone = pickle.loads(payload)
    assert type(clone) is type(store) and clone.config() == store.config()
    assert clone.get("k2") == {"version": "v1", "i": 2}
    assert store_from_config(json.loads(json.dumps(store.config()))).get("k3") == {"version": "v1", "i": 3}


def test_readers_only_see_complete_versions_during_loads(make_store, kind):
    n = 400
    store = make_store(kind, keep_versions=1, batch_size=50)
    load(store, "v0", n)
    keys = [f"k{i}" for i in range(0, n, 7)]
    stop = threading.Event()
    seen: list[str] = []
    errors: list[str] = []

    def read(reader: ServingStore) -> None:
        try:
            while not stop.is_set():
                got = reader.get_many(keys)
                versions = {g["version"] if g else None for g in got}
                if len(versions) != 1 or None in versions:
                    errors.append(f"mixed or missing: {sorted(map(str, versions))}")
                elif [g["i"] for g in got] != [int(k[1:]) for k in keys]:
                    errors.append("values out of order")
                else:
                    seen.append(versions.pop())
                single = reader.get("k0")
                if single is None:
                    errors.append("k0 missing")
        finally:
            reader.close()

    readers = [threading.Thread(target=read, args=(pickle.loads(pickle.dumps(store)),)) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for v in range(1, 6):
            load(store, f"v{v}", n, batch=50)  # keep_versions=1: each switch deletes the version just served
            time.sleep(0.05)
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert not errors, errors[:5]
    assert len(set(seen)) >= 2, f"readers did not overlap the switches: {set(seen)}"
    assert set(seen) <= {f"v{v}" for v in range(6)}
    assert store.get_many(keys)[0]["version"] == "v5"


def _child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]))


_WRITER = r"""
import itertools, json, sys
from lakeloop.serving import store_from_config
store = store_from_config(json.loads(sys.argv[1]))
version = sys.argv[2]
for n in itertools.count():
    store.write_batch(version, ((f"k{i}", {"version": version, "i": i}) for i in range(n * 1000, n * 1000 + 1000)))
    print(n, flush=True)
"""


def test_load_killed_midway_leaves_the_served_version_intact(make_store, kind):
    store = make_store(kind, batch_size=100)
    load(store, "v1", 2000)
    store.begin_load("v2")
    child = subprocess.Popen([sys.executable, "-c", _WRITER, json.dumps(store.config()), "v2"],
                             stdout=subprocess.PIPE, env=_child_env(), text=True)
    try:
        for line in child.stdout:
            if int(line) >= 2:
                break
        time.sleep(0.01)  # land inside a write_batch call
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    written = store.load_info("v2").count
    assert written >= 3000
    assert store.current_version() == "v1" and store.versions() == ["v1"]
    got = store.get_many([f"k{i}" for i in range(2000)])
    assert got == [{"version": "v1", "i": i} for i in range(2000)]
    with pytest.raises(LoadRefused):
        store.commit_load("v2", 2000)
    assert store.current_version() == "v1"
    load(store, "v3", 2500)  # a later load works and cleans nothing it should not
    assert store.current_version() == "v3" and store.get("k2499") == {"version": "v3", "i": 2499}
    assert store.abort_load("v2") == written
    assert store.versions() == ["v1", "v3"] and store.get("k0") == {"version": "v3", "i": 0}


_REMOVER = r"""
import json, sys
from lakeloop.serving import store_from_config
store = store_from_config(json.loads(sys.argv[1]))
store.delete_batch = 10  # many small steps, so the removal is still running when it is killed
store.abort_load(sys.argv[2])
"""


def test_removal_killed_midway_is_finished_by_the_next_commit(make_store, kind):
    store = make_store(kind, batch_size=1000)
    load(store, "v1", 10)
    store.begin_load("v2")
    store.write_batch("v2", values("v2", 20_000))
    child = subprocess.Popen([sys.executable, "-c", _REMOVER, json.dumps(store.config()), "v2"], env=_child_env())
    try:
        deadline = time.monotonic() + 60
        while (info := store.load_info("v2")) is not None and info.state != "deleting":
            assert time.monotonic() < deadline and child.poll() is None, "the removal did not start"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert store.load_info("v2").state == "deleting"
    assert raw_key_count(store, "v2") > 0  # keys left behind by the interrupted removal
    with pytest.raises(ServingError, match="not loading"):
        store.write_batch("v2", values("v2", 1))
    load(store, "v3", 10)
    assert store.load_info("v2") is None and raw_key_count(store, "v2") == 0
    assert store.versions() == ["v1", "v3"] and store.get("k1") == {"version": "v3", "i": 1}


# -- configuration ----------------------------------------------------------------------------------------
def test_open_store_from_conf(conf, request):
    server = request.getfixturevalue("redis_server")
    store = open_store(conf)
    assert isinstance(store, SQLiteStore)
    assert store.settings.options["path"] == str(Path(conf["warehouse"]).resolve() / "_serving" / "serving.sqlite")
    load(store, "v1", 3)
    assert Path(store.settings.options["path"]).is_file()
    with sqlite3.connect(store.settings.options["path"]) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    redis_conf = conf.with_overrides({"serving.store": "redis", "serving.redis.port": server.port,
                                      "serving.namespace": "conf-" + uuid.uuid4().hex[:8], "serving.ttl_seconds": 60,
                                      "serving.keep_versions": 3, "serving.batch_size": 10})
    rstore = open_store(redis_conf)
    assert isinstance(rstore, RedisStore)
    assert (rstore.settings.keep_versions, rstore.settings.ttl_seconds, rstore.settings.batch_size) == (3, 60, 10)
    load(rstore, "v1", 25)
    assert rstore.get("k24") == {"version": "v1", "i": 24}
    with pytest.raises(ConfError, match="serving.keep_versions"):
        open_store(conf.with_overrides({"serving.keep_versions": 0}))
    with pytest.raises(ConfError, match="serving.store"):
        conf.with_overrides({"serving.store": "memcached"})


def test_redis_password_comes_from_the_named_environment_variable(conf, tmp_path, monkeypatch):
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    secret = "s3cr3t-" + uuid.uuid4().hex
    with RedisServer(tmp_path / "auth", password=secret) as server:
        store = open_store(conf.with_overrides({"serving.store": "redis", "serving.redis.port": server.port,
                                                "serving.redis.password_env": "LAKELOOP_TEST_REDIS_PASSWORD"}))
        monkeypatch.delenv("LAKELOOP_TEST_REDIS_PASSWORD", raising=False)
        with pytest.raises(ConfError, match="LAKELOOP_TEST_REDIS_PASSWORD is not set"):
            store.current_version()
        monkeypatch.setenv("LAKELOOP_TEST_REDIS_PASSWORD", "wrong")
        with pytest.raises(ServingError, match="authentication failed"):
            store.current_version()
        monkeypatch.setenv("LAKELOOP_TEST_REDIS_PASSWORD", secret)
        load(store, "v1", 3)
        assert store.get("k1") == {"version": "v1", "i": 1}
        for text in (repr(store), json.dumps(store.config()), pickle.dumps(store).decode("latin-1")):
            assert secret not in text
        clone = pickle.loads(pickle.dumps(store))  # reads the variable again where it connects
        assert clone.get("k2") == {"version": "v1", "i": 2}
        unauthenticated = RedisStore(StoreSettings("redis", "auth", options={"port": server.port}))
        with pytest.raises(ServingError, match="authentication|NOAUTH"):
            unauthenticated.current_version()
        store.close()


# -- versions: rollback, stale loads, gc ----------------------------------------------------------------------
def test_rollback_switches_to_the_previous_complete_version(make_store, kind):
    store = make_store(kind, keep_versions=3)
    with pytest.raises(ServingError, match="nothing is being served"):
        store.rollback()
    load(store, "v1", 10)
    with pytest.raises(ServingError, match="no complete version older"):
        store.rollback()
    load(store, "v2", 10)
    load(store, "v3", 10)
    store.begin_load("v4")  # a load in progress is never a rollback target
    store.write_batch("v4", values("v4", 5))
    assert store.rollback() == ("v3", "v2")
    assert store.current_version() == "v2" and store.get("k1") == {"version": "v2", "i": 1}
    assert store.rollback() == ("v2", "v1")
    with pytest.raises(ServingError, match="no complete version older than 'v1'"):
        store.rollback()
    assert store.rollback(to="v3") == ("v1", "v3")  # forward again, by name
    with pytest.raises(LoadRefused, match="v4 is loading, not committed"):
        store.rollback(to="v4")
    with pytest.raises(LoadRefused, match="unknown"):
        store.rollback(to="v9")
    with pytest.raises(ServingError, match="already being served"):
        store.rollback(to="v3")
    assert store.versions() == ["v1", "v2", "v3"] and store.current_version() == "v3"
    assert [(r.version, r.state, r.count) for r in store.records()] == \
        [("v1", "committed", 10), ("v2", "committed", 10), ("v3", "committed", 10), ("v4", "loading", 5)]


def test_the_served_version_is_never_removed(make_store, kind):
    store = make_store(kind, keep_versions=2)
    load(store, "v1", 10)
    load(store, "v2", 10)
    store.rollback()
    load(store, "v3", 10)  # keep 2: v3 and the newest other committed one (v2); v1 goes
    assert store.versions() == ["v2", "v3"] and raw_key_count(store, "v1") == 0
    with pytest.raises(LoadRefused, match="being served"):
        store._remove_version("v3")  # the check is part of the removal's first atomic step
    assert store.get("k3") == {"version": "v3", "i": 3}


def test_gc_removes_loads_left_loading_after_the_grace_period(make_store, kind):
    store = make_store(kind, loading_grace_seconds=3600)
    load(store, "v1", 10)
    store.begin_load("killed")
    store.write_batch("killed", values("killed", 50))
    assert store.stale_loads() == []
    assert store.collect_garbage() == [] and store.load_info("killed").state == "loading"
    later = time.time() + 3601
    assert store.stale_loads(now=later) == ["killed"] and store.stale_loads(grace_seconds=0) == ["killed"]
    short = store_from_config(StoreSettings(**{**store.config(), "loading_grace_seconds": 0}))
    assert short.collect_garbage() == ["killed"]
    assert store.load_info("killed") is None and raw_key_count(store, "killed") == 0
    assert store.current_version() == "v1" and store.get("k9") == {"version": "v1", "i": 9}
    short.close()


def test_lookup_many_reads_one_version_and_the_realtime_view(make_store, kind):
    store = make_store(kind)
    assert store.lookup_many(["a"]) == (None, [None])
    load(store, "v1", 3)
    store.put_realtime([("k1", {"rt": 1}), ("only-rt", 5)])
    assert store.lookup_many(["k0", "k1", "only-rt", "none"]) == ("v1", [
        {"version": "v1", "i": 0}, {"version": "v1", "i": 1, "realtime": {"rt": 1}}, {"realtime": 5}, None])
    assert store.lookup_many([]) == ("v1", [])


def test_a_reader_follows_every_switch_and_rollback(make_store, kind):
    """A reader that read one version (Redis: it then reads that version with a plain MGET) answers from the
    new current version after each switch, rollback and removal of the version it read last."""
    store = make_store(kind, keep_versions=2)
    reader = pickle.loads(pickle.dumps(store))
    for version, switch in [("v1", lambda: load(store, "v1", 3)), ("v2", lambda: load(store, "v2", 3)),
                            ("v1", lambda: store.rollback()), ("v3", lambda: load(store, "v3", 3))]:
        switch()
        assert reader.lookup_many(["k1", "k2"]) == (version, [{"version": version, "i": 1},
                                                              {"version": version, "i": 2}])
        assert reader.lookup("k0") == {"version": version, "i": 0}
        assert reader.get_many(["k1"]) == [{"version": version, "i": 1}]
    assert store.versions() == ["v2", "v3"]  # v1, the version the reader read last before v3, was removed
    reader.close()


def test_readers_only_see_complete_versions_during_rollback_and_gc(make_store, kind):
    """Readers hammer the store while versions are loaded, rolled back and forth, and stale loads collected."""
    n = 300
    store = make_store(kind, keep_versions=3, batch_size=50, loading_grace_seconds=0)
    keys = [f"k{i}" for i in range(0, n, 7)]
    stop = threading.Event()
    seen: list[str] = []
    errors: list[str] = []
    load(store, "v0", n)

    def read(reader: ServingStore) -> None:
        try:
            while not stop.is_set():
                version, got = reader.lookup_many(keys)
                versions = {g["version"] if g else None for g in got}
                if versions != {version}:
                    errors.append(f"mixed or missing: {sorted(map(str, versions))} (read from {version})")
                elif [g["i"] for g in got] != [int(k[1:]) for k in keys]:
                    errors.append("values out of order")
                else:
                    seen.append(version)
                if reader.get("k0") is None:
                    errors.append("k0 missing")
        finally:
            reader.close()

    readers = [threading.Thread(target=read, args=(pickle.loads(pickle.dumps(store)),)) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for v in range(1, 5):
            store.begin_load(f"dead{v}")  # a killed load: stale at once (grace 0), collected by the next gc
            store.write_batch(f"dead{v}", values(f"dead{v}", 100))
            load(store, f"v{v}", n, batch=50)
            time.sleep(0.02)
            store.rollback()
            time.sleep(0.02)
            store.rollback(to=f"v{v}")
            store.collect_garbage()
            time.sleep(0.02)
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert not errors, errors[:5]
    assert len(set(seen)) >= 3, f"readers did not overlap the switches: {set(seen)}"
    assert set(seen) <= {f"v{v}" for v in range(5)}, set(seen)
    assert [r.version for r in store.records()] == ["v2", "v3", "v4"]
    assert all(raw_key_count(store, f"dead{v}") == 0 for v in range(1, 5))


def test_serving_job_status_rollback_gc(conf, capsys):
    from lakeloop import cli

    store = open_store(conf)
    load(store, "2026-11-01.r1", 5)
    load(store, "2026-11-02.r1", 6)
    store.begin_load("2026-11-03.r1")  # killed infer
    root = ["--set", f"warehouse={conf['warehouse']}", "--set", f"landing={conf['landing']}"]

    outcome = cli.execute("serving", ["status", *root])
    assert outcome.exit_code == 0 and outcome.summary["current"] == "2026-11-02.r1"
    out = capsys.readouterr().out
    assert "2026-11-02.r1 *" in out and "loading" in out
    outcome = cli.execute("serving", ["rollback", "--json", *root])
    assert outcome.exit_code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["from"], result["to"], result["current"]) == ("2026-11-02.r1", "2026-11-01.r1", "2026-11-01.r1")
    assert store.get("k4") == {"version": "2026-11-01.r1", "i": 4}
    outcome = cli.execute("serving", ["gc", *root])  # within the grace period: the loading version stays
    assert outcome.exit_code == 0 and outcome.summary["removed"] == []
    outcome = cli.execute("serving", ["gc", "--grace-seconds", "0", "--json", *root])
    assert outcome.exit_code == 0 and outcome.summary["removed"] == ["2026-11-03.r1"]
    assert [v["version"] for v in json.loads(capsys.readouterr().out.splitlines()[-1])["versions"]] == \
        ["2026-11-01.r1", "2026-11-02.r1"]
    assert cli.execute("serving", ["rollback", *root]).exit_code == 1  # nothing older to roll back to
    assert store.current_version() == "2026-11-01.r1"
    store.close()
