"""The lookup service (FastAPI on uvicorn) against a real server on a free port, over both serving stores
(real SQLite file, real redis-server): merged real-time view, 404, 400, 422, healthz/readyz, version
switches, batch lookups, metrics, OpenAPI, request limits and connection timeouts.

The process-level behaviour (worker processes, SIGTERM drain, client disconnects) is in
tests/test_serve_process.py."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid

import orjson
import pytest
from lakeloop.serving import StoreSettings, store_from_config
from lakeloop_apps.recommender.serving import RecommenderClient as LookupClient
from lakeloop_apps.recommender.serving import ServeSettings, serve_in_thread


@pytest.fixture(params=["sqlite", "redis"])
def store(request, make_store):
    return make_store(request.param, namespace="api" + uuid.uuid4().hex[:8])


@pytest.fixture
def server(store):
    running = serve_in_thread(store)
    yield running
    running.stop()


@pytest.fixture
def api(server):
    client = LookupClient(server.host, server.port)
    yield client
    client.close()


def load(store, version, items):
    store.begin_load(version)
    store.write_batch(version, items)
    store.commit_load(version, len(items))


def post(server, path: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    result = response.status, json.loads(response.read())
    conn.close()
    return result


def raw_exchange(host: str, port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(metric name, label set): value}."""
    import re

    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, rest = head.partition("{")
        samples[name, frozenset(re.findall(r'(\w+)="([^"]*)"', rest))] = float(value)
    return samples


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
    store.rollback()
    assert api.health() == (200, {"status": "ok", "version": "2026-11-22-v1-a"})
    assert api.recommendations(42) == (200, {"user_id": 42, "items": TOP_42})


def test_raw_http_headers_and_other_methods(store, api):
    load(store, "v1", [(42, TOP_42)])
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", "/v1/recommendations/42")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "application/json"
    response.read()
    # POST is a method the service implements (batch lookups), just not on this route: 405, not 501
    conn.request("POST", "/v1/recommendations/42", body=b"{}")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET"
    assert json.loads(response.read())["error"]
    conn.close()


def test_batch_lookups_read_one_version(store, server):
    load(store, "v1", [(42, TOP_42), (43, TOP_42[:1]), ("a.b", {"score": 0.2})])
    store.put_realtime([(43, {"clicks_1h": 2})])
    status, body = post(server, "/v1/recommendations", {"user_ids": [42, 41, 43]})
    assert status == 200
    assert body == {"version": "v1", "results": [{"user_id": 42, "items": TOP_42}, None,
                                                 {"user_id": 43, "items": TOP_42[:1], "realtime": {"clicks_1h": 2}}]}
    assert post(server, "/v1/predictions", {"keys": ["a.b", "zz"]}) == \
        (200, {"version": "v1", "results": [{"key": "a.b", "score": 0.2}, None]})


def test_batch_answers_splice_stored_json_exactly_as_decoding_would(store):
    from lakeloop.serving.routes import RouteSpec, predictions_json

    values = [(1, TOP_42), (2, 0.25), (3, {"score": 0.5, "value": 9}), (4, None), (5, "text \u00e9"),
              (6, {}), (7, [])]
    load(store, "v1", values)
    store.put_realtime([(2, {"views": 1}), (8, {"views": 2})])
    keys = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    route = RouteSpec("recommendations", "user_id", "int", "items", "user_ids")
    version, found = store.lookup_many(keys)
    results = [None if f is None else route.body(k, f) for k, f in zip(keys, found, strict=True)]
    want = {"version": version, "results": results}
    answer = route.batch_json(store, keys)
    assert json.loads(answer) == want
    assert answer == orjson.dumps(want)  # the same bytes as decoding and encoding again
    texts = [str(k) for k in keys]
    _, found = store.lookup_many(texts)
    results = [None if f is None else {"key": k, **f} for k, f in zip(texts, found, strict=True)]
    want = {"version": version, "results": results}
    assert predictions_json(store, texts) == orjson.dumps(want)


def test_batch_bodies_the_fast_path_leaves_get_fastapis_validation(store, server):
    load(store, "v1", [(42, TOP_42)])
    want = (200, {"version": "v1", "results": [{"user_id": 42, "items": TOP_42}]})
    assert post(server, "/v1/recommendations", {"user_ids": ["42"]}) == want  # lax: a numeric string
    assert post(server, "/v1/recommendations", {"user_ids": [42], "extra": 1}) == want  # other fields ignored
    status, body = post(server, "/v1/recommendations", b'{"user_ids": [42]}', {"Content-Type": "text/plain"})
    assert status == 422, body


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v1/recommendations", {"user_ids": "x"}, 422, "user_ids"),
    ("/v1/recommendations", {"user_ids": []}, 422, "user_ids"),
    ("/v1/recommendations", {"user_ids": [1.5]}, 422, "user_ids"),
    ("/v1/recommendations", {"user_ids": [2 ** 63]}, 422, "64-bit"),
    ("/v1/recommendations", {"user_ids": list(range(1001))}, 422, "serve.max_batch_keys"),
    ("/v1/recommendations", b"{not json", 422, "JSON"),
    ("/v1/predictions", {"keys": ["ok", "a:b"]}, 400, "a:b"),
    ("/v1/predictions", {"nokeys": 1}, 422, "keys"),
])
def test_bad_batch_bodies(store, server, path, body, status, message):
    load(store, "v1", [(42, TOP_42)])
    got, answer = post(server, path, body)
    assert got == status, answer
    assert message in json.dumps(answer), answer


def test_unreachable_store_is_503(tmp_path):
    from tests.server_process import free_port

    dead = store_from_config(StoreSettings("redis", "dead", options={"host": "127.0.0.1", "port": free_port()}))
    running = serve_in_thread(dead)
    with LookupClient(running.host, running.port) as client:
        assert client.health()[0] == 503
        status, body = client.recommendations(1)
        assert status == 503 and "lookup failed" in body["error"]
        status, body = client.get("/readyz")
        assert status == 503 and body["checks"]["store"].startswith("unavailable")
        assert client.get("/healthz")[0] == 503  # and the service is still up
    assert post(running, "/v1/recommendations", {"user_ids": [1]})[0] == 503
    running.stop()


def test_readyz_runs_the_configured_checks(store):
    model = {"loaded": False}
    settings = ServeSettings(port=0, readiness={"model": lambda: None if model["loaded"] else "not loaded yet"})
    running = serve_in_thread(store, settings)
    try:
        with LookupClient(running.host, running.port) as client:
            status, body = client.get("/readyz")
            assert status == 503 and body["checks"] == {"store": "ok", "model": "not loaded yet"}
            model["loaded"] = True
            assert client.get("/readyz") == (200, {"status": "ready", "version": None,
                                                   "checks": {"store": "ok", "model": "ok"}})
    finally:
        running.stop()


def test_metrics_count_requests_latency_errors_and_the_version(store, api):
    load(store, "v7", [(42, TOP_42)])
    for _ in range(3):
        api.recommendations(42)
    api.recommendations(41)
    api.get("/nope")
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain")
    text = response.read().decode()
    conn.close()
    samples = parse_metrics(text)
    route = {"route": "/v1/recommendations/{user_id}"}
    assert samples["lakeloop_serve_requests_total", labels(**route, method="GET", status="200")] == 3
    assert samples["lakeloop_serve_requests_total", labels(**route, method="GET", status="404")] == 1
    assert samples["lakeloop_serve_requests_total", labels(route="other", method="GET", status="404")] == 1
    assert samples["lakeloop_serve_request_seconds_count", labels(**route)] == 4
    assert samples["lakeloop_serve_request_seconds_bucket", labels(**route, le="+Inf")] == 4
    assert samples["lakeloop_serving_version_info", labels(version="v7")] == 1
    assert samples["lakeloop_serving_store_up", labels()] == 1


def test_openapi_documents_the_routes(api):
    status, schema = api.get("/openapi.json")
    assert status == 200
    assert {"/v1/recommendations/{user_id}", "/v1/predictions/{key}", "/v1/recommendations", "/v1/predictions",
            "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", "/docs")
    response = conn.getresponse()
    assert response.status == 200 and b"swagger" in response.read().lower()
    conn.close()


# -- limits and timeouts ---------------------------------------------------------------------------------------
@pytest.fixture
def strict(make_store):
    store = make_store("sqlite")
    load(store, "v1", [(42, TOP_42)])
    running = serve_in_thread(store, ServeSettings(port=0, max_body_bytes=1000, max_url_bytes=200,
                                                   max_header_bytes=2000, keepalive_timeout_s=0.5,
                                                   request_timeout_s=0.8))
    yield running
    running.stop()


def test_oversize_requests_are_413_414_431_with_json(strict):
    big = json.dumps({"user_ids": list(range(400))}).encode()
    status, body = post(strict, "/v1/recommendations", big)
    assert status == 413 and "serve.max_body_bytes" in body["error"]
    chunked = (b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%b\r\n" % (len(big[i:i + 300]), big[i:i + 300])
                                                               for i in range(0, len(big), 300)) + b"0\r\n\r\n")
    status, body = status_and_body(raw_exchange(strict.host, strict.port, chunked))
    assert status == 413 and "serve.max_body_bytes" in body["error"]
    status, body = status_and_body(raw_exchange(strict.host, strict.port,
                                                b"GET /v1/predictions/" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 414 and "serve.max_url_bytes" in body["error"]
    status, body = status_and_body(raw_exchange(strict.host, strict.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                                + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 100) for i in range(30))
                                                + b"\r\n"))
    assert status == 431 and "serve.max_header_bytes" in body["error"]
    status, body = status_and_body(raw_exchange(strict.host, strict.port, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and body["error"]
    with LookupClient(strict.host, strict.port) as client:  # the server is unharmed
        assert client.recommendations(42) == (200, {"user_id": 42, "items": TOP_42})


def test_idle_and_slow_connections_are_closed(strict):
    started = time.monotonic()
    with socket.create_connection((strict.host, strict.port), timeout=10) as s:  # never sends a request
        assert s.recv(100) == b""
    assert 0.3 < time.monotonic() - started < 5
    with socket.create_connection((strict.host, strict.port), timeout=10) as s:  # idle after one request
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert s.recv(100) == b""
        assert 0.3 < time.monotonic() - started < 5
    with socket.create_connection((strict.host, strict.port), timeout=10) as s:  # a request that never ends
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.4)
        s.sendall(b"X-Slow: 1\r\n")  # still sending: the limit is on the whole request, not between bytes
        reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408") and b"serve.request_timeout_s" in reply, reply
        assert 0.7 < time.monotonic() - started < 3


def test_a_hundred_clients_connect_at_once_without_waiting(store):
    load(store, "v1", [(i, TOP_42) for i in range(100)])
    running = serve_in_thread(store)
    barrier = threading.Barrier(100)
    results: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        barrier.wait()
        started = time.monotonic()
        with socket.create_connection((running.host, running.port), timeout=30) as s:
            connected = time.monotonic() - started
            s.sendall(b"GET /v1/recommendations/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        with lock:
            results.append((connected, int(reply.split(b" ", 2)[1])))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        running.stop()
    assert len(results) == 100 and {status for _, status in results} == {200}
    assert max(connected for connected, _ in results) < 0.5, sorted(results)[-5:]


# -- the routes are the app's conf -------------------------------------------------------------------------------
PRICES = {"prices": {"key": "sku", "key_type": "str", "value_field": "price", "batch_field": "skus"}}


def test_a_route_declared_in_conf_answers_with_its_own_fields(make_store):
    from lakeloop.serving.server import ServeSettings as EngineSettings

    store = make_store("sqlite")
    load(store, "v1", [("sku-1", 4.5), ("sku-2", 7.0)])
    store.put_realtime([("sku-2", {"views": 3})])
    running = serve_in_thread(store, EngineSettings(port=0, routes=PRICES))
    try:
        with LookupClient(running.host, running.port) as client:
            assert client.lookup("prices", "sku-1") == (200, {"sku": "sku-1", "price": 4.5})
            assert client.lookup("prices", "sku-2") == (200, {"sku": "sku-2", "price": 7.0, "realtime": {"views": 3}})
            assert client.lookup("prices", "nope") == (404, {"error": "sku nope: no prices"})
            status, body = client.lookup("prices", "a:b")
            assert status == 400 and "sku 'a:b'" in body["error"]
            assert client.prediction("sku-1") == (200, {"key": "sku-1", "value": 4.5})  # the engine's route stays
            status, body = client.recommendations(1)  # not declared by this app
            assert status == 404 and "routes: /v1/prices/<sku>, /v1/predictions/<key>" in body["error"]
            status, schema = client.get("/openapi.json")
        assert {"/v1/prices/{sku}", "/v1/prices"} <= set(schema["paths"])
        assert not any("recommendations" in p for p in schema["paths"])
        assert set(schema["components"]["schemas"]["SkusRequest"]["properties"]) == {"skus"}
        assert post(running, "/v1/prices", {"skus": ["sku-2", "zz"]}) == \
            (200, {"version": "v1", "results": [{"sku": "sku-2", "price": 7.0, "realtime": {"views": 3}}, None]})
        assert post(running, "/v1/prices", {"skus": ["ok", "a:b"]})[0] == 400
        # a value of declared fields (a mapping) is answered whole under the route's value field
        load(store, "v2", [("sku-3", {"price": 2.5, "currency": "EUR"})])
        with LookupClient(running.host, running.port) as client:
            want = {"sku": "sku-3", "price": {"price": 2.5, "currency": "EUR"}}
            assert client.lookup("prices", "sku-3") == (200, want)
    finally:
        running.stop()


@pytest.mark.parametrize(("route", "message"), [
    ({"predictions": PRICES["prices"]}, r"serve.routes.predictions: 'predictions' is the engine's own route"),
    ({"prices": {**PRICES["prices"], "key_type": "float"}}, r"serve.routes.prices.key_type: expected one of int"),
    ({"prices": {"key": "sku"}}, r"serve.routes.prices.value_field: required"),
    ({"prices": {**PRICES["prices"], "batch": "x"}}, r"serve.routes.prices.batch: unknown key"),
    ({"prices": {**PRICES["prices"], "value_field": "sku"}}, r"serve.routes.prices: key, value_field and batch"),
    ({"prices": {**PRICES["prices"], "key": "a b"}}, r"serve.routes.prices.key: expected a field name"),
    ({"Bad/Name": PRICES["prices"]}, r"serve.routes.Bad/Name: expected a route name"),
])
def test_a_bad_route_conf_names_its_key(route, message):
    from lakeloop.conf import ConfError
    from lakeloop.serving.server import ServeSettings as EngineSettings

    with pytest.raises(ConfError, match=message):
        EngineSettings(routes=route)


def test_the_serve_job_stops_on_a_bad_route_conf_naming_key_and_origin(conf, tmp_path):
    from pathlib import Path

    from lakeloop import cli
    from lakeloop.conf import ConfError
    from lakeloop.serving.server import ServeSettings as EngineSettings

    bad = "serve.routes.recommendations.key_type"
    with pytest.raises(ConfError, match=rf"^override: {bad}: expected one of int, str, got 'float'"):
        EngineSettings.from_conf(conf.with_overrides({bad: "float"}))
    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    outcome = cli.execute("serve", ["--conf-dir", str(conf_dir), "--set", f"warehouse={tmp_path}",
                                    "--set", f"{bad}=float", "--port", "0"])
    assert outcome.exit_code == 2
