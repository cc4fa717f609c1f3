"""The per-worker feature cache of online scoring, over real stores: values as the store reads them, one
version per read, a version switch seen by the next read, bounded, never used for rows that expire."""

from __future__ import annotations

import pytest
from lakeloop.online import FeatureCache, OnlineJoin, OnlineModel, OnlineSpec


@pytest.fixture(params=["redis", "sqlite"])
def kind(request):
    return request.param


def _load(store, version: str, values: dict) -> None:
    store.begin_load(version)
    store.write_batch(version, list(values.items()))
    store.commit_load(version, len(values))


def test_reads_are_the_stores_values_then_hits(make_store, kind):
    a, b = make_store(kind), make_store(kind)
    _load(a, "v1", {"k1": {"x": 1}, "k2": {"x": 2}})
    _load(b, "v1", {"u": {"y": 5}})
    cache, seen = FeatureCache(100), {}
    assert cache.read([a, b], [["k1", "k2", "nope"], ["u"]], seen) == [[{"x": 1}, {"x": 2}, None], [{"y": 5}]]
    assert seen == {a.namespace: "v1", b.namespace: "v1"} and (cache.hits, cache.misses) == (0, 4)
    assert cache.read([a, b], [["k2", "nope", "k1"], ["u"]], {}) == [[{"x": 2}, None, {"x": 1}], [{"y": 5}]]
    assert (cache.hits, cache.misses) == (4, 4) and len(cache) == 4


def test_a_version_switch_is_seen_by_the_next_read(make_store, kind):
    store = make_store(kind, keep_versions=3)
    _load(store, "v1", {"k1": {"x": 1}, "k2": {"x": 2}})
    cache = FeatureCache(100)
    assert cache.read([store], [["k1", "k2"]], {}) == [[{"x": 1}, {"x": 2}]]
    _load(store, "v2", {"k1": {"x": 10}, "k3": {"x": 30}})
    # k1 is cached under v1, k3 is not: the read names v2, so k1 is read again, from v2
    assert cache.read([store], [["k1", "k3"]], {}) == [[{"x": 10}, {"x": 30}]]
    assert cache.read([store], [["k1", "k2"]], {}) == [[{"x": 10}, None]]
    store.rollback()  # back to v1: its rows cached before are right again
    seen: dict = {}
    assert cache.read([store], [["k1", "k2"]], seen) == [[{"x": 1}, {"x": 2}]] and seen == {store.namespace: "v1"}


def test_a_later_stage_uses_the_version_read_with_the_first(make_store, kind):
    a, b = make_store(kind, keep_versions=3), make_store(kind, keep_versions=3)
    _load(a, "v1", {"k": {"x": 1}})
    _load(b, "v1", {"c": {"z": 1}})
    cache = FeatureCache(100)
    cache.read([a], [["k"]], {}, also=[b])
    cache.read([b], [["c"]], {})
    seen: dict = {}
    cache.read([a], [["k"]], seen, also=[b])
    assert seen == {a.namespace: "v1", b.namespace: "v1"}
    hits = cache.hits
    assert cache.read([b], [["c"]], seen) == [[{"z": 1}]] and cache.hits == hits + 1  # no read of b
    _load(b, "v2", {"c": {"z": 2}})
    seen = {}
    cache.read([a], [["k"]], seen, also=[b])
    assert seen[b.namespace] == "v2" and cache.read([b], [["c"]], seen) == [[{"z": 2}]]


def test_the_cache_is_bounded_and_unmaterialized_sets_read_as_missing(make_store, kind):
    store = make_store(kind)
    cache = FeatureCache(3)
    assert cache.read([store], [["k1"]], {}) == [[None]] and len(cache) == 0  # no version yet: nothing cached
    _load(store, "v1", {f"k{i}": {"x": i} for i in range(10)})
    for i in range(10):
        assert cache.read([store], [[f"k{i}"]], {}) == [[{"x": i}]]
    assert len(cache) == 3
    assert cache.read([store], [["k9", "k0"]], {}) == [[{"x": 9}, {"x": 0}]]


def test_rows_that_expire_are_not_cached(make_store):
    spec = OnlineSpec(model="m", mlflow_name="m", tracking_uri="", registry_uri="", task="binary",
                      joins=(OnlineJoin(set="s", namespace="n", entity=("k",), columns=(("x", "x"),)),))
    assert OnlineModel(spec, {"n": make_store("redis")}, cache_entries=10).cache is not None
    assert OnlineModel(spec, {"n": make_store("redis", ttl_seconds=60)}, cache_entries=10).cache is None
    assert OnlineModel(spec, {"n": make_store("redis")}, cache_entries=0).cache is None
