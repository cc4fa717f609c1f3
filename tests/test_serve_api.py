"""The HTTP lookup API against a real server on a free port, over both serving stores
(real SQLite file, real redis-server): merged real-time view, 404, 400, healthz, version switches."""

from __future__ import annotations

import http.client
import uuid

import pytest
from lakeloop.serve_api import serve_in_thread
from lakeloop.serving import StoreSettings, store_from_config
from lakeloop.serving.client import LookupClient


@pytest.fixture(params=["sqlite", "redis"])
def store(request, make_store):
    return make_store(request.param, namespace="api" + uuid.uuid4().hex[:8])


@pytest.fixture
def api(store):
    server, thread = serve_in_thread(store)
    client = LookupClient(*server.server_address[:2])
    yield client
    client.close()
    server.shutdown()
    server.server_close()
    thread.join(10)


def load(store, version, items):
    store.begin_load(version)
    store.write_batch(version, items)
    store.commit_load(version, len(items))


TOP_42 = [{"item_id": 7, "score": 0.93}, {"item_id": 3, "score": 0.5}]


def test_recommendations_merge_the_realtime_view(store, api):
    load(store, "2026-11-22-v1-a", [(42, TOP_42), (43, [{"item_id": 1, "score": 0.1}])])
    store.put_realtime([(42, {"clicks_1h": 3})])

    assert api.recommendations(42) == (200, {"user_id": 42, "items": TOP_42, "realtime": {"clicks_1h": 3}})
    assert api.recommendations(43) == (200, {"user_id": 43, "items": [{"item_id": 1, "score": 0.1}]})
    store.put_realtime([(99, {"clicks_1h": 1})])  # only in the real-time view
    assert api.recommendations(99) == (200, {"user_id": 99, "items": [], "realtime": {"clicks_1h": 1}})


def test_predictions_return_mapping_fields_and_scalars(store, api):
    load(store, "v1", [("u42.i7", {"score": 0.93, "model_version": "3"}), ("plain", 0.5)])
    store.put_realtime([("plain", {"seen": True})])
    assert api.prediction("u42.i7") == (200, {"key": "u42.i7", "score": 0.93, "model_version": "3"})
    assert api.prediction("plain") == (200, {"key": "plain", "value": 0.5, "realtime": {"seen": True}})


def test_unknown_keys_are_404(store, api):
    load(store, "v1", [(42, TOP_42)])
    status, body = api.recommendations(41)
    assert status == 404 and "user 41" in body["error"]
    status, body = api.prediction("nope")
    assert status == 404 and "nope" in body["error"]
    status, body = api.get("/v2/other")
    assert status == 404 and "no route" in body["error"]


@pytest.mark.parametrize("path", ["/v1/recommendations/abc", "/v1/recommendations/4.2", "/v1/recommendations/",
                                  "/v1/recommendations/1/2", "/v1/recommendations/99999999999999999999",
                                  "/v1/predictions/a%3Ab", "/v1/predictions/"])
def test_bad_input_is_400(store, api, path):
    load(store, "v1", [(42, TOP_42)])
    status, body = api.get(path)
    assert status == 400, body
    assert body["error"]


def test_healthz_names_the_current_version_and_follows_switches(store, api):
    assert api.health() == (200, {"status": "ok", "version": None})
    load(store, "2026-11-22-v1-a", [(42, TOP_42)])
    assert api.health() == (200, {"status": "ok", "version": "2026-11-22-v1-a"})
    load(store, "2026-11-23-v2-b", [(42, TOP_42[:1])])
    assert api.health() == (200, {"status": "ok", "version": "2026-11-23-v2-b"})
    assert api.recommendations(42) == (200, {"user_id": 42, "items": TOP_42[:1]})


def test_raw_http_headers_and_other_methods(store, api):
    load(store, "v1", [(42, TOP_42)])
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", "/v1/recommendations/42")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "application/json"
    response.read()
    conn.request("POST", "/v1/recommendations/42", body=b"{}")
    assert conn.getresponse().status == 501  # GET only
    conn.close()


def test_unreachable_store_is_503(tmp_path):
    from tests.redis_server import free_port

    dead = store_from_config(StoreSettings("redis", "dead", options={"host": "127.0.0.1", "port": free_port()}))
    server, thread = serve_in_thread(dead)
    with LookupClient(*server.server_address[:2]) as client:
        assert client.health()[0] == 503
        status, body = client.recommendations(1)
        assert status == 503 and "lookup failed" in body["error"]
    server.shutdown()
    server.server_close()
