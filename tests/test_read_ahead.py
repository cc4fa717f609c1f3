"""Reading a join keyed by a column an earlier join adds in the same round trip (``ServingStore.read_ahead``),
over real stores: Redis builds the keys on the server from the values it reads, SQLite reads them itself; online
features come out the same either way."""

from __future__ import annotations

import pytest
from lakeloop.online import ABSENT_KEY, OnlineJoin, OnlineModel, OnlineSpec


def _load(store, version: str, values: dict) -> None:
    store.begin_load(version)
    store.write_batch(version, list(values.items()))
    store.commit_load(version, len(values))


def _sent(store, fn) -> list[str]:
    """The commands clients sent to ``store``'s server while ``fn`` ran (``MONITOR``), without those scripts ran,
    the health checks and the setup of a new connection (``PING``, ``HELLO``, ``CLIENT``)."""
    client = store._client
    with client.monitor() as monitor:
        fn()
        client.echo("end of the commands watched")
        sent = []
        for command in monitor.listen():
            if command["command"] == "ECHO end of the commands watched":
                return sent
            name = command["command"].split(" ", 1)[0]
            if command["client_type"] != "lua" and name not in ("PING", "HELLO", "CLIENT"):
                sent.append(name)
    raise AssertionError("unreachable")


ITEMS = {"1": {"cat": "shoes", "price": 9.5}, "2": {"cat": "hats"}, "3": {"cat": 7}, "4": {"cat": 2.5},
         "5": {"cat": None}, ABSENT_KEY: {"cat": "unknown"}}


def test_redis_builds_the_keys_on_the_server_from_the_values_it_reads(make_store):
    items, affinity = make_store("redis"), make_store("redis")
    _load(items, "v1", ITEMS)
    _load(affinity, "v1", {"42|shoes": {"a": 1}, "42|unknown": {"a": 0}, "42|7": {"a": 7}})
    keys = ["1", "9", "3", ABSENT_KEY]  # item 9 has no row: its absent row gives the category
    templates = [["42", "|", (0, "cat")] for _ in keys[:-1]] + [[ABSENT_KEY]]
    first, (then,) = items.read_ahead([(items, keys)], [(affinity, templates)])
    assert first == [("v1", [ITEMS["1"], None, ITEMS["3"], ITEMS[ABSENT_KEY]])]
    assert then == ("v1", ["42|shoes", "42|unknown", "42|7", ABSENT_KEY], [{"a": 1}, {"a": 0}, {"a": 7}, None])


@pytest.mark.parametrize("item", ["4", "5"])
def test_a_field_that_is_no_key_leaves_the_read_to_the_caller(make_store, item):
    items, affinity = make_store("redis"), make_store("redis")
    _load(items, "v1", ITEMS)
    _load(affinity, "v1", {"42|shoes": {"a": 1}})
    first, then = items.read_ahead([(items, [item, ABSENT_KEY])], [(affinity, [["42|", (0, "cat")], [ABSENT_KEY]])])
    assert first == [("v1", [ITEMS[item], ITEMS[ABSENT_KEY]])] and then == [None]


def test_a_namespace_without_a_version_is_read_by_the_caller(make_store):
    items, affinity = make_store("redis"), make_store("redis")
    _load(items, "v1", ITEMS)
    first, then = items.read_ahead([(items, ["1"]), (affinity, ["x"])], [(affinity, [["42|", (0, "cat")]])])
    assert first == [("v1", [ITEMS["1"]]), (None, [None])] and then == [None]


def test_sqlite_does_not_read_ahead(make_store):
    items = make_store("sqlite")
    _load(items, "v1", ITEMS)
    assert items.read_ahead([(items, ["1"])], [(items, [["42|", (0, "cat")]])]) == ([("v1", [ITEMS["1"]])], [None])


def _model(stores: dict) -> OnlineModel:
    """A model joining ``item`` (it adds ``category``), ``user`` and ``affinity`` keyed by user and category."""
    item, user, affinity = stores["item"].namespace, stores["user"].namespace, stores["affinity"].namespace
    joins = (OnlineJoin(set="item", namespace=item, entity=("item_id",), columns=(("category", "cat"),
                                                                                   ("price", "price"))),
             OnlineJoin(set="user", namespace=user, entity=("user_id",), columns=(("events", "n"),)),
             OnlineJoin(set="affinity", namespace=affinity, entity=("user_id", "category"),
                        columns=(("affinity", "a"),)))
    spec = OnlineSpec(model="m", mlflow_name="m", tracking_uri="", registry_uri="", task="binary", joins=joins,
                      fill={"affinity": 0.0})
    return OnlineModel(spec, {s.namespace: s for s in stores.values()})


def _stores(make_store, kind: str) -> dict:
    stores = {name: make_store(kind) for name in ("item", "user", "affinity")}
    _load(stores["item"], "v1", {k: v for k, v in ITEMS.items() if k in ("1", "2", ABSENT_KEY)})
    _load(stores["user"], "v1", {"42": {"n": 3}, "43": {"n": 1}, ABSENT_KEY: {"n": 0}})
    _load(stores["affinity"], "v1", {"42|shoes": {"a": 0.5}, "43|hats": {"a": 0.25}, "42|unknown": {"a": 0.1},
                                     "42|bags": {"a": 0.9}, ABSENT_KEY: {"a": None}})
    return stores


ROWS = [{"user_id": 42, "item_id": 1}, {"user_id": 43, "item_id": 2}, {"user_id": 42, "item_id": 99},
        {"user_id": 43, "item_id": 1}, {"user_id": 42, "item_id": 2, "category": "bags"}]


def test_online_features_read_ahead_on_redis_equal_the_two_reads_on_sqlite(make_store):
    redis_stores = _stores(make_store, "redis")
    redis_model, sqlite_model = _model(redis_stores), _model(_stores(make_store, "sqlite"))
    online = redis_model.features(ROWS)
    assert online == sqlite_model.features(ROWS)
    assert [r["affinity"] for r in online] == [0.5, 0.25, 0.1, 0.0, 0.9]  # 43|shoes: absent, filled
    # the two first joins and the affinity join in one round trip: one run of the read-ahead script
    assert _sent(redis_stores["item"], lambda: redis_model.features(ROWS[::-1])) == ["EVALSHA"]


def test_a_read_ahead_reads_the_version_current_at_the_read(make_store):
    stores = _stores(make_store, "redis")
    model = _model(stores)
    first = model.features(ROWS[:1])
    _load(stores["affinity"], "v2", {"42|shoes": {"a": 0.75}, ABSENT_KEY: {"a": None}})
    assert first[0]["affinity"] == 0.5 and model.features(ROWS[:1])[0]["affinity"] == 0.75


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_category_that_is_no_key_is_a_bad_row_on_either_store(make_store, kind):
    from lakeloop.online import OnlineError

    stores = _stores(make_store, kind)
    _load(stores["item"], "v2", {"1": {"cat": 2.5}, ABSENT_KEY: {"cat": "unknown"}})
    with pytest.raises(OnlineError, match=r"rows\[0\]") as err:
        _model(stores).features(ROWS[:1])
    assert err.value.status == 422


@pytest.mark.parametrize("limit", [0, len(ROWS) - 1])
def test_above_read_ahead_rows_each_stage_is_a_round_trip_of_its_own(make_store, limit):
    stores = _stores(make_store, "redis")
    model = _model(stores)
    model.read_ahead_rows = limit
    assert model.features(ROWS) == _model(stores).features(ROWS)
    # both versions known: the first joins' MGETs sent together, then the affinity join's
    assert _sent(stores["item"], lambda: model.features(ROWS)) == ["MGET", "MGET", "MGET"]
    assert _sent(stores["item"], lambda: model.features(ROWS[:limit or 1])) == (["EVALSHA"] if limit else ["MGET"] * 3)


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_request_values_explicit_nulls_and_extra_columns_are_kept_row_by_row(make_store, kind):
    """A value a request row carries is used as it is (a null too, then filled); a column only some rows carry is
    kept in those rows; a column no join adds stays as given."""
    rows = [{"user_id": 42, "item_id": 1, "price": 1.25}, {"user_id": 43, "item_id": 2, "affinity": None},
            {"user_id": 42, "item_id": 99, "extra": "x"}]
    assert _model(_stores(make_store, kind)).features(rows) == [
        {"user_id": 42, "item_id": 1, "price": 1.25, "category": "shoes", "events": 3, "affinity": 0.5},
        {"user_id": 43, "item_id": 2, "affinity": 0.0, "category": "hats", "price": None, "events": 1},
        {"user_id": 42, "item_id": 99, "extra": "x", "category": "unknown", "price": None, "events": 3,
         "affinity": 0.1}]


def test_the_feature_matrix_is_float32_with_missing_values_as_nan_and_names_a_bad_value():
    import numpy as np
    from lakeloop.online import _NONE, OnlineError, _matrix

    matrix = _matrix({"a": [1, None, True], "b": [_NONE, 2.5, "3"]}, ["a", "b", "c"], 3)
    expected = np.array([[1, np.nan, np.nan], [np.nan, 2.5, np.nan], [1, 3, np.nan]], dtype=np.float32)
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
    assert np.array_equal(matrix, expected, equal_nan=True)
    for bad in ("x", [1, 2], {"v": 1}, 10 ** 400):
        with pytest.raises(OnlineError, match=r"rows\[1\]\.b: .* is not a number") as err:
            _matrix({"a": [1, 2], "b": [0.5, bad]}, ["a", "b"], 2)
        assert err.value.status == 422
