"""Serving benchmark: the lookup service over HTTP, and the store's bulk-load throughput and read latency.

    .venv/bin/python bench/serving.py [--workers 2] [--duration 5] [--keys 1000000] [--lookups 20000]
    .venv/bin/python bench/serving.py --skip-load          # the HTTP part only
    .venv/bin/python bench/serving.py --in-process         # OnlineModel.score alone, CPU per request

HTTP part: the service (``jobs/serve.py``, ``--workers`` uvicorn processes, Redis store holding
``--users`` top-10 lists) answers 1 and 50 users per request (``GET /v1/recommendations/<id>``,
``POST /v1/recommendations``) to 4 and 100 concurrent keep-alive clients, in processes of their own (not
threads sharing a GIL with the server): 4 clients are 4 processes; 100 clients run once for each
``--conns-per-process`` value (1: 100 processes; 25: 4 processes of 25 connections each, multiplexed with
``selectors`` as wrk or hey do with threads); each scenario runs for
``--duration`` seconds after a warm-up, ``--rounds`` times (every other round in reverse order), and prints
the median of its rounds' p50/p99 latency and requests/s with their spread, errors and the slowest
connect, against the targets (100 clients: p99 <= 50 ms and no error; 1 key, 4 clients: >= 4,000 req/s).
Online scoring (unless ``--skip-online``): the recommender's lake is built in a temporary folder (two days of
``--online-events`` events through datagen .. features, a trained ``@champion``, ``materialize`` into Redis),
then the service answers ``POST /v1/score/ranker`` with 1 and 50 (user, item) rows per request to 4 and 100
clients (targets: 1 row, 4 clients: p99 <= 5 ms and >= 1,500 req/s; 100 clients: p99 <= 50 ms, no error), four
times over the same lake (:data:`ONLINE_VARIANTS`): xgboost's ``inplace_predict`` and every feature read from
Redis; the compiled trees (:mod:`lakeloop.trees`) with every read from Redis, the join keyed by the item's
category in a second round trip (``serve.online.read_ahead_rows=0``) and, up to 8 rows, in the first (the
default); and the compiled trees with the per-worker feature cache.  Every scenario also prints the cores used
during its measured seconds by the service (all its processes), the redis-server and the client processes, which
share the same CPUs.

Load part:
Loads ``--keys`` top-10 recommendation lists into each store through the public API
(``begin_load`` / ``write_arrow`` or ``write_batch`` / ``commit_load``): as Arrow batches of JSON
text (``write_arrow``, what Spark loads use; the target applies to it), as Python values already
JSON, and as Python objects encoded by the store.  A plain
redis-py pipeline of MSETs of the same bytes, with no versioning, no counting and no checks,
is measured in the same run as the reference.  Lookup latency is measured from a second
process (``get`` of one random key, and ``get_many`` of 100) against the loaded version.
A redis-server on a free loopback port is started for the run unless ``--redis-port`` is given.
All ratios compare figures measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]

from lakeloop.serving import ServingStore, StoreSettings, store_from_config  # noqa: E402
from lakeloop.serving.base import encode_value  # noqa: E402

TARGET_KEYS_PER_S = 300_000
TARGET_LOOKUPS_PER_S = 4_000
TARGET_P99_MS_100_CLIENTS = 50.0
TARGET_SCORE_P99_MS = 5.0
TARGET_SCORES_PER_S = 1_500
ONLINE_DAYS = ("2026-11-01", "2026-11-02")
POOL = 10_000  # distinct values, cycled, so the benchmark does not hold 1M Python objects
#: the online-score services measured, each over the same lake: (label, conf overrides)
ONLINE_VARIANTS = (("score xgboost", ["serve.online.compile=false", "serve.online.cache_entries=0"]),
                   ("score 2 reads", ["serve.online.cache_entries=0", "serve.online.read_ahead_rows=0"]),
                   ("score", ["serve.online.cache_entries=0"]),
                   ("score cached", ["serve.online.cache_entries=50000"]))


def _redis_server_class() -> type:
    """``tests/redis_server.py``'s RedisServer (:func:`checkout.tests_module`)."""
    from checkout import tests_module

    return tests_module("redis_server").RedisServer


def value_pool() -> list[list[list]]:
    rng = random.Random(7)
    return [[[f"item{rng.randrange(100_000)}", round(rng.random(), 4)] for _ in range(10)] for _ in range(POOL)]


class Meter:
    """Wall time, this process's CPU time and (for Redis) the server's CPU time of a block.

    On a shared machine wall-clock throughput depends on the other load; CPU seconds do not,
    so keys per CPU second (client + server) is reported next to keys per wall second.
    """

    def __init__(self, redis_port: int | None = None) -> None:
        self.redis_port = redis_port

    def _server_cpu(self) -> float:
        if self.redis_port is None:
            return 0.0
        import redis

        info = redis.Redis(port=self.redis_port).info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def __enter__(self) -> Meter:
        self._wall, self._cpu, self._server = time.perf_counter(), time.process_time(), self._server_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.client_cpu_s = time.process_time() - self._cpu
        self.server_cpu_s = self._server_cpu() - self._server

    def rates(self, n: int) -> dict[str, float]:
        return {"keys_per_s": n / self.wall_s, "keys_per_cpu_s": n / (self.client_cpu_s + self.server_cpu_s),
                "client_us_per_key": self.client_cpu_s / n * 1e6, "server_us_per_key": self.server_cpu_s / n * 1e6}


def timed_load(store: ServingStore, version: str, n: int, pool: list, encoded: bool,
               meter: Meter) -> dict[str, float]:
    store.begin_load(version)
    with meter:
        # one write_batch per simulated partition of 100k rows, as executors would call it
        for offset in range(0, n, 100_000):
            part = ((f"user{i}", pool[i % len(pool)]) for i in range(offset, min(offset + 100_000, n)))
            store.write_batch(version, part, encoded=encoded)
        start = time.perf_counter()
        store.commit_load(version, n)
        commit_s = time.perf_counter() - start
    return {"commit_s": commit_s, **meter.rates(n)}


def timed_arrow_load(store: ServingStore, version: str, n: int, encoded_pool: list[bytes], meter: Meter,
                     batch_rows: int = 10_000) -> dict[str, float]:
    """The executors' path (:func:`lakeloop.serving.load_dataframe`): one ``write_arrow`` per Arrow batch
    of integer keys and JSON text, as ``mapInArrow`` hands them over (built before the clock starts)."""
    import pyarrow as pa

    texts = [v.decode() for v in encoded_pool]
    batches = [(pa.array(range(o, min(o + batch_rows, n)), pa.int64()),
                pa.array([texts[i % len(texts)] for i in range(o, min(o + batch_rows, n))]))
               for o in range(0, n, batch_rows)]
    store.begin_load(version)
    with meter:
        for keys, values in batches:
            store.write_arrow(version, keys, values)
        start = time.perf_counter()
        store.commit_load(version, n)
        commit_s = time.perf_counter() - start
    return {"commit_s": commit_s, **meter.rates(n)}


def redis_baseline(port: int, n: int, encoded_pool: list[bytes], batch: int) -> dict[str, float]:
    """Plain redis-py: pipelined MSET, transaction=False, no versioning, counting or checks.  The key/value
    mappings are built before the clock starts, as the store's Arrow batches are."""
    import redis

    client = redis.Redis(port=port)
    meter = Meter(port)
    mappings = [{f"baseline:user{i}": encoded_pool[i % len(encoded_pool)]
                 for i in range(offset, min(offset + batch, n))} for offset in range(0, n, batch)]
    with meter:
        pipe = client.pipeline(transaction=False)
        for j, mapping in enumerate(mappings):
            pipe.mset(mapping)
            if j % 8 == 7:
                pipe.execute()
        pipe.execute()
    keys = list(client.scan_iter(match="baseline:*", count=10_000))
    for i in range(0, len(keys), 10_000):
        client.unlink(*keys[i:i + 10_000])
    return meter.rates(n)


def read_latency(config: dict, n_keys: int, lookups: int) -> dict[str, float]:
    """Run in a second process: p50/p99 of get() and get_many(100) on random keys, in microseconds."""
    store = store_from_config(config)
    rng = random.Random(11)
    store.get("user0")  # connect
    singles, manys = [], []
    for _ in range(lookups):
        key = f"user{rng.randrange(n_keys)}"
        t = time.perf_counter()
        value = store.get(key)
        singles.append(time.perf_counter() - t)
        assert value is not None, key
    for _ in range(max(lookups // 20, 1)):
        keys = [f"user{rng.randrange(n_keys)}" for _ in range(100)]
        t = time.perf_counter()
        got = store.get_many(keys)
        manys.append(time.perf_counter() - t)
        assert None not in got
    return {"get_p50_us": _pct(singles, 50), "get_p99_us": _pct(singles, 99),
            "get_many100_p50_us": _pct(manys, 50), "get_many100_p99_us": _pct(manys, 99)}


def _pct(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1e6 if p < 100 else max(samples) * 1e6


def latency_from_second_process(store: ServingStore, n_keys: int, lookups: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--reader", json.dumps(store.config()), str(n_keys),
                          str(lookups)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def bench_store(name: str, store: ServingStore, n: int, pool: list, encoded_pool: list, lookups: int,
                redis_port: int | None = None) -> dict[str, float]:
    print(f"{name}: loading {n:,} keys ...", file=sys.stderr)
    objects = timed_load(store, "bench-objects", n, pool, encoded=False, meter=Meter(redis_port))
    arrow = timed_arrow_load(store, "bench-arrow", n, encoded_pool, Meter(redis_port))
    # last, so lookups (of "user<i>" keys) read this version
    json_in = timed_load(store, "bench-json", n, encoded_pool, encoded=True, meter=Meter(redis_port))
    latency = latency_from_second_process(store, n, lookups)
    return {"objects_keys_per_s": objects["keys_per_s"], "objects_keys_per_cpu_s": objects["keys_per_cpu_s"],
            "arrow_keys_per_s": arrow["keys_per_s"], "arrow_keys_per_cpu_s": arrow["keys_per_cpu_s"],
            "arrow_client_us_per_key": arrow["client_us_per_key"],
            "arrow_server_us_per_key": arrow["server_us_per_key"],
            "json_keys_per_s": json_in["keys_per_s"], "json_keys_per_cpu_s": json_in["keys_per_cpu_s"],
            "client_us_per_key": json_in["client_us_per_key"], "server_us_per_key": json_in["server_us_per_key"],
            "commit_s": json_in["commit_s"], **latency}

# -- HTTP part: the lookup service under 4 and 100 keep-alive clients, each a process ------------------------
# one client process: stdlib only (starts fast, small), ``conns`` keep-alive connections, each a closed-loop
# client sending its requests back to back (one outstanding request per connection)
_CLIENT = r"""
import json, random, selectors, socket, sys, time
host, port, seed, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
with open(sys.argv[3]) as f:
    spec = json.load(f)
rng = random.Random(seed)
keys, users, items = spec["keys"], spec["users"], spec.get("items")

def connect():
    t = time.perf_counter()
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, time.perf_counter() - t

def post(path, payload):
    body = json.dumps(payload).encode()
    return (b"POST %b HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (path.encode(), len(body), body))

def request():
    if spec["kind"] == "score":
        return post(spec["path"], {"rows": [{"user_id": rng.choice(users), "item_id": rng.choice(items)}
                                            for _ in range(keys)]})
    if keys == 1:
        return b"GET /v1/recommendations/%d HTTP/1.1\r\nHost: b\r\n\r\n" % rng.choice(users)
    return post("/v1/recommendations", {"user_ids": [rng.choice(users) for _ in range(keys)]})

def status(buf):
    # the status of a whole response in buf, or None while it is incomplete
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return None
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return int(head[9:12]) if len(rest) >= length else None

class Conn:
    def __init__(self):
        self.sock, self.connect_s = connect()
        self.buf, self.t = b"", 0.0

    def send(self):
        data = request()
        self.buf, self.t = b"", time.perf_counter()
        self.sock.sendall(data)

clients = [Conn() for _ in range(conns)]
print("ready", flush=True)
start, end = map(float, sys.stdin.readline().split())
while time.time() < start:
    time.sleep(0.001)
lat, errors = [], 0
cpu = time.process_time()
sel = selectors.DefaultSelector()
for c in clients:
    sel.register(c.sock, selectors.EVENT_READ, c)
    c.send()
open_ = len(clients)
while open_:
    for key, _ in sel.select(timeout=1.0):
        c = key.data
        try:
            chunk = c.sock.recv(65536)
        except OSError:
            chunk = b""
        if chunk:
            c.buf += chunk
            code = status(c.buf)
            if code is None:
                continue
        else:  # the server closed the connection: an error, and a new connection
            code = None
            sel.unregister(c.sock)
            c.sock.close()
            c.sock, _ = connect()
            sel.register(c.sock, selectors.EVENT_READ, c)
        lat.append(time.perf_counter() - c.t)
        errors += code != 200
        if time.time() < end:
            c.send()
        else:
            sel.unregister(c.sock)
            open_ -= 1
print(json.dumps({"lat": lat, "errors": errors, "connect_s": max(c.connect_s for c in clients),
                  "cpu_s": time.process_time() - cpu}))
"""


def start_service(store: ServingStore, workers: int, settings: list[str]) -> tuple[subprocess.Popen, int]:
    """``jobs/serve.py`` over ``store`` in a process of its own (``workers`` uvicorn processes), on a free port;
    ``settings``: further conf overrides (``warehouse=...``)."""
    o = store.settings.options
    where = ([f"serving.redis.port={o['port']}"] if store.kind == "redis" else [f"serving.sqlite.path={o['path']}"])
    cmd = [sys.executable, str(ROOT / "jobs" / "serve.py"), "--port", "0", "--workers", str(workers)]
    for setting in (f"serving.store={store.kind}", *where, f"serving.namespace={store.namespace}", *settings):
        cmd += ["--set", setting]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), str(ROOT)]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the service did not start: {line!r}")
    port = int(line.rsplit(":", 1)[1])
    from lakeloop.serving.client import LookupClient

    deadline = time.monotonic() + 60
    while True:  # every worker has started once /readyz answers a few times in a row
        try:
            with LookupClient("127.0.0.1", port, timeout=5) as client:
                if all(client.get("/readyz")[0] == 200 for _ in range(20)):
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the service did not become ready")
        time.sleep(0.2)


def run_clients(port: int, clients: int, spec: dict, duration: float, warmup: float = 1.0,
                cpu: dict | None = None, per_process: int = 1) -> dict:
    """``clients`` keep-alive clients sending ``spec``'s requests (``_CLIENT``) for ``duration`` seconds after
    ``warmup``, ``per_process`` connections to each client process (1: every client a process of its own);
    ``cpu``: ``{name: function giving a process's CPU seconds so far}``, each reported as the cores it used
    during the measured seconds (``<name>_cores``), next to the clients' own (``client_cores``)."""
    keys = spec["keys"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-client-", delete=False) as f:
        json.dump(spec, f)
    counts = [min(per_process, clients - o) for o in range(0, clients, per_process)]
    procs = [subprocess.Popen([sys.executable, "-S", "-c", _CLIENT, "127.0.0.1", str(port), f.name, str(seed),
                               str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for seed, n in enumerate(counts)]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a client did not connect")
    start = time.time() + warmup
    load_before = os.getloadavg()[0]
    for proc in procs:
        proc.stdin.write(f"{start} {start + duration}\n")
        proc.stdin.flush()
    cpu = cpu or {}
    time.sleep(max(start - time.time(), 0))
    before = {name: read() for name, read in cpu.items()}
    time.sleep(max(start + duration - time.time(), 0))
    used = {f"{name}_cores": (read() - before[name]) / duration for name, read in cpu.items()}
    out = [json.loads(proc.communicate(timeout=duration + warmup + 120)[0]) for proc in procs]
    os.unlink(f.name)
    lat = [x for o in out for x in o["lat"]]
    return {"clients": clients, "procs": len(procs), "keys": keys, "requests": len(lat),
            "req_per_s": len(lat) / duration,
            "keys_per_s": len(lat) * keys / duration, "p50_ms": _pct(lat, 50) / 1e3, "p99_ms": _pct(lat, 99) / 1e3,
            "max_ms": max(lat) * 1e3, "errors": sum(o["errors"] for o in out),
            "max_connect_ms": max(o["connect_s"] for o in out) * 1e3,
            "client_cores": sum(o["cpu_s"] for o in out) / duration, **used,
            "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]}


def cpu_meters(service: subprocess.Popen, redis_port: int | None) -> dict:
    """CPU-seconds readers of the service (its process and every worker) and of the redis-server."""
    from memory import tree_cpu

    meters = {"service": lambda: tree_cpu(service.pid)}
    if redis_port is not None:
        meters["redis"] = Meter(redis_port)._server_cpu
    return meters


def http_bench(kind: str, users: int, workers: tuple[int, ...], duration: float, tmp: str,
               per_process: tuple[int, ...] = (1,), rounds: int = 1) -> list[dict]:
    """Load ``users`` top-10 lists into a fresh store (``kind``), start the service, run the four scenarios."""
    server = _redis_server_class()(Path(tmp) / "redis-http").start() if kind == "redis" else None
    try:
        options = {"port": server.port} if server else {"path": str(Path(tmp) / "http.sqlite")}
        store = store_from_config(StoreSettings(kind, "benchhttp", options=options))
        load_users(store, users)
        return measure_service(store, workers, [f"warehouse={tmp}", f"landing={tmp}"], f"lookup {kind}",
                               {"kind": "lookup", "users": list(range(users))}, duration,
                               server.port if server else None, per_process, rounds)
    finally:
        if server is not None:
            server.stop()


def measure_service(store: ServingStore, workers: tuple[int, ...], settings: list[str], label: str, spec: dict,
                    duration: float, redis_port: int | None, per_process: tuple[int, ...], rounds: int) -> list[dict]:
    """For each number of ``workers``: the service started over ``store`` with ``settings``, :func:`scenarios`
    run against it, each result tagged with its ``workers``."""
    results = []
    for n in workers:
        proc, port = start_service(store, n, settings)
        try:
            results += [{**r, "workers": n} for r in scenarios(port, label, spec, duration,
                                                               cpu_meters(proc, redis_port), per_process, rounds)]
        finally:
            proc.terminate()
            proc.wait(30)
    return results


def scenarios(port: int, label: str, spec: dict, duration: float, cpu: dict | None = None,
              per_process: tuple[int, ...] = (1,), rounds: int = 1) -> list[dict]:
    """1 and 50 entities per request, each to 4 clients (a process each) and 100 clients (``per_process``
    connections to a client process, each value in turn); ``rounds`` times, every other round in reverse order,
    each scenario reported as the median of its rounds (:func:`median_run`)."""
    cases = [(keys, clients, conns) for keys in (1, 50)
             for clients, conns in ((4, 1), *((100, n) for n in per_process))]
    runs: dict[tuple[int, int, int], list[dict]] = {case: [] for case in cases}
    for r in range(rounds):
        for keys, clients, conns in cases if r % 2 == 0 else cases[::-1]:
            print(f"http {label}: round {r + 1}/{rounds}, {clients} clients ({conns} per process), {keys} key(s) "
                  "per request ...", file=sys.stderr)
            runs[keys, clients, conns].append(run_clients(port, clients, {**spec, "keys": keys}, duration, cpu=cpu,
                                                          per_process=conns))
    return [{"what": label, **median_run(runs[case])} for case in cases]


def median_run(runs: list[dict]) -> dict:
    """One scenario's rounds as one result: the median of each figure, the errors of all rounds, the slowest
    request and connect of any, the load average's lowest before and highest after, and the spread of requests/s
    and p99 (``req_per_s_range``, ``p99_ms_range``: the lowest and highest round)."""
    out = {k: statistics.median(r[k] for r in runs) for k, v in runs[0].items() if isinstance(v, float)}
    out.update({k: runs[0][k] for k in ("clients", "procs", "keys")}, rounds=len(runs),
               requests=sum(r["requests"] for r in runs), errors=sum(r["errors"] for r in runs),
               max_ms=max(r["max_ms"] for r in runs), max_connect_ms=max(r["max_connect_ms"] for r in runs),
               load_avg_before=min(r["load_avg_before"] for r in runs),
               load_avg_after=max(r["load_avg_after"] for r in runs),
               req_per_s_range=(min(r["req_per_s"] for r in runs), max(r["req_per_s"] for r in runs)),
               p99_ms_range=(min(r["p99_ms"] for r in runs), max(r["p99_ms"] for r in runs)))
    return out


def load_users(store: ServingStore, users: int) -> None:
    """Version ``v1``: a top-10 list for each of ``users`` users."""
    import pyarrow as pa

    texts = [v.decode() for v in (encode_value([{"item_id": i, "score": round(s, 4)} for i, s in row])
                                  for row in value_pool())]
    store.begin_load("v1")
    for o in range(0, users, 10_000):
        ids = range(o, min(o + 10_000, users))
        store.write_arrow("v1", pa.array(ids, pa.int64()), pa.array([texts[i % len(texts)] for i in ids]))
    store.commit_load("v1", users)
    store.close()


def http_report(results: list[dict], users: int) -> None:
    rounds = results[0].get("rounds", 1) if results else 1
    print(f"lookup and online-score service (jobs/serve.py, workers: its uvicorn processes; lookups: {users:,} users' "
          f"top-10 lists); every client one keep-alive connection, procs: the client processes they share; "
          f"{os.cpu_count()} CPUs shared by all")
    print(f"every figure the median of {rounds} round(s) (every other one in reverse order); req/s and p99 also "
          "as the lowest-highest round; errors: all rounds; max: the slowest of any round")
    print("cores: CPU seconds per second of the measured window used by the service (all its processes), the "
          "redis-server and the client processes")
    print(f"{'what':14} {'workers':>7} {'keys/req':>8} {'clients':>7} {'procs':>5} {'req/s':>8} {'req/s range':>13} "
          f"{'keys/s':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'p99 range':>13} "
          f"{'max ms':>7} {'errors':>6} {'connect ms':>10} {'service':>7} {'redis':>5} {'clients':>7} {'load avg':>9}")
    for r in results:
        (rlo, rhi), (plo, phi) = r["req_per_s_range"], r["p99_ms_range"]
        print(f"{r['what']:14} {r['workers']:>7} {r['keys']:>8} {r['clients']:>7} {r['procs']:>5} "
              f"{r['req_per_s']:>8,.0f} "
              f"{f'{rlo:,.0f}-{rhi:,.0f}':>13} {r['keys_per_s']:>9,.0f} "
              f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {f'{plo:.1f}-{phi:.1f}':>13} {r['max_ms']:>7.1f} "
              f"{r['errors']:>6} "
              f"{r['max_connect_ms']:>10.1f} {r.get('service_cores', 0):>7.2f} {r.get('redis_cores', 0):>5.2f} "
              f"{r['client_cores']:>7.2f} {r['load_avg_before']:>4.1f}-{r['load_avg_after']:<4.1f}")
    for r in results:
        for label, ok in targets(r):
            verdict = "met" if ok else "MISSED"
            print(f"target {r['what']} ({r['workers']} workers) {r['keys']} key(s), {r['clients']} clients in "
                  f"{r['procs']} processes: {label}: {verdict}")


def targets(r: dict) -> list[tuple[str, bool]]:
    """The issue's targets that apply to one scenario's figures: ``[(what was compared, met)]``."""
    out = []
    if r["clients"] == 100:
        out.append((f"p99 {r['p99_ms']:.1f} ms <= {TARGET_P99_MS_100_CLIENTS:g} ms and 0 errors ({r['errors']})",
                    r["p99_ms"] <= TARGET_P99_MS_100_CLIENTS and r["errors"] == 0))
    if r["clients"] == 4 and r["keys"] == 1 and r["what"].startswith("lookup"):
        out.append((f"{r['req_per_s']:,.0f} req/s >= {TARGET_LOOKUPS_PER_S:,} (ratio "
                    f"{r['req_per_s'] / TARGET_LOOKUPS_PER_S:.2f})", r["req_per_s"] >= TARGET_LOOKUPS_PER_S))
    if r["clients"] == 4 and r["keys"] == 1 and r["what"].startswith("score"):
        out.append((f"p99 {r['p99_ms']:.2f} ms <= {TARGET_SCORE_P99_MS:g} ms and {r['req_per_s']:,.0f} req/s >= "
                    f"{TARGET_SCORES_PER_S:,} (ratio {r['req_per_s'] / TARGET_SCORES_PER_S:.2f})",
                    r["p99_ms"] <= TARGET_SCORE_P99_MS and r["req_per_s"] >= TARGET_SCORES_PER_S))
    return out


def online_lake(tmp: Path, redis_port: int, events: int, users: int, items: int) -> tuple[list[str], dict]:
    """The recommender's lake under ``tmp``: two days through datagen .. features, a trained ``@champion``, its
    feature sets materialized into Redis (``materialize``), all jobs of this process; returns the conf
    overrides the service starts with and the ids of the users and items with events (what clients ask for)."""
    import importlib

    from lakeloop.conf import load_conf
    from lakeloop.lake import Lake

    overrides = [f"warehouse={tmp / 'warehouse'}", f"landing={tmp / 'landing'}", f"datagen.events={events}",
                 f"datagen.users={users}", f"datagen.items={items}", "train.num_workers=1", "validate.enabled=false",
                 "serving.store=redis", f"serving.redis.port={redis_port}", "serve.online.models=[ranker]"]
    args = [x for o in overrides for x in ("--set", o)]
    for day in ONLINE_DAYS:
        for job in ("datagen", "ingest", "curate", "features") + (("train", "materialize")
                                                                  if day == ONLINE_DAYS[-1] else ()):
            print(f"online lake: {job} {day} ...", file=sys.stderr)
            if importlib.import_module(f"jobs.{job}").main(["--date", day, *args]) != 0:
                raise RuntimeError(f"{job} {day} failed (its log is above)")
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    events_df = Lake.from_conf(load_conf("local", overrides)).read(spark, "silver.events")
    ids = {c: sorted(r[0] for r in events_df.select(c).distinct().collect()) for c in ("user_id", "item_id")}
    spark.stop()  # the service and its clients get the CPUs
    return overrides, ids


def online_bench(workers: tuple[int, ...], duration: float, tmp: str, events: int, users: int, items: int,
                 per_process: tuple[int, ...] = (1,), rounds: int = 1,
                 variants: tuple[str, ...] | None = None) -> list[dict]:
    """``POST /v1/score/ranker`` of 1 and 50 (user, item) rows to 4 and 100 clients (:func:`scenarios`), for
    each of :data:`ONLINE_VARIANTS` (those labelled in ``variants`` when given)."""
    from lakeloop.conf import load_conf

    server = _redis_server_class()(Path(tmp) / "redis-online").start()
    try:
        overrides, ids = online_lake(Path(tmp) / "online", server.port, events, users, items)
        namespace = load_conf("local", overrides)["serving.namespace"]
        store = store_from_config(StoreSettings("redis", namespace, options={"port": server.port}))
        spec = {"kind": "score", "path": "/v1/score/ranker", "users": ids["user_id"], "items": ids["item_id"]}
        return [r for label, settings in ONLINE_VARIANTS if variants is None or label in variants
                for r in measure_service(store, workers, [*overrides, *settings], label, spec, duration,
                                         server.port, per_process, rounds)]
    finally:
        server.stop()


def in_process_bench(tmp: str, events: int, users: int, items: int, requests: int, passes: int,
                     sizes: tuple[int, ...] = (1, 50)) -> None:
    """``OnlineModel.score`` in this process over the recommender's lake (:func:`online_lake`), Redis on
    loopback, no feature cache: CPU µs per request of ``requests`` random (user, item) requests of each size,
    the median (lowest-highest) of ``passes`` passes after a warm-up pass of 200 requests. No HTTP, no clients:
    what one request costs the worker that scores it."""
    from lakeloop.conf import load_conf
    from lakeloop.serving import open_store
    from lakeloop.serving.server import ServeSettings, online_models

    server = _redis_server_class()(Path(tmp) / "redis-in-process").start()
    try:
        overrides, ids = online_lake(Path(tmp) / "online", server.port, events, users, items)
        conf = load_conf("local", [*overrides, "serve.online.cache_entries=0"])
        model = online_models(open_store(conf), ServeSettings.from_conf(conf))["ranker"]
        rng = random.Random(1)
        for n in sizes:
            batch = [[{"user_id": rng.choice(ids["user_id"]), "item_id": rng.choice(ids["item_id"])}
                      for _ in range(n)] for _ in range(requests)]
            for rows in batch[:200]:
                model.score(rows)
            cpu = []
            for _ in range(passes):
                start = time.process_time()
                for rows in batch:
                    model.score(rows)
                cpu.append((time.process_time() - start) / requests * 1e6)
            print(f"in process: {n} row(s) per request: {statistics.median(cpu):,.0f} us of CPU per request "
                  f"({min(cpu):,.0f}-{max(cpu):,.0f}; {statistics.median(cpu) / n:.1f} per row), "
                  f"{requests:,} requests x {passes} passes")
        model.stop()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--lookups", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--redis-port", type=int, default=None, help="use this running redis-server on 127.0.0.1")
    p.add_argument("--stores", default="redis,sqlite")
    p.add_argument("--users", type=int, default=100_000, help="HTTP part: users in the served version")
    p.add_argument("--workers", default="2", help="HTTP part: uvicorn worker processes (a comma-separated list: "
                   "each scenario is run against a service of each size)")
    p.add_argument("--online-variants", default=None, help="online part: the variants to run, by label, "
                   "comma-separated (default: all of " + ", ".join(label for label, _ in ONLINE_VARIANTS) + ")")
    p.add_argument("--duration", type=float, default=5.0, help="HTTP part: measured seconds per scenario")
    p.add_argument("--http-stores", default="redis,sqlite", help="HTTP part: stores the service reads")
    p.add_argument("--conns-per-process", default="1,25", help="HTTP part: the 100-client scenarios run once "
                   "for each of these numbers of connections per client process (1: 100 client processes)")
    p.add_argument("--rounds", type=int, default=3, help="HTTP part: rounds of every scenario (every other one in "
                   "reverse order), each figure the median of its rounds")
    p.add_argument("--skip-load", action="store_true", help="run the HTTP part only")
    p.add_argument("--skip-online", action="store_true", help="HTTP part: no online-score scenarios")
    p.add_argument("--online-events", type=int, default=20_000, help="online part: datagen events per day")
    p.add_argument("--skip-http", action="store_true", help="run the load part only")
    p.add_argument("--in-process", action="store_true", help="only OnlineModel.score in this process (no HTTP): "
                   "CPU per request of 1 and 50 rows")
    p.add_argument("--reader", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reader:
        print(json.dumps(read_latency(json.loads(args.reader[0]), int(args.reader[1]), int(args.reader[2]))))
        return 0
    per_process = tuple(int(x) for x in args.conns_per_process.split(","))
    workers = tuple(int(x) for x in args.workers.split(","))
    variants = tuple(args.online_variants.split(",")) if args.online_variants else None
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="bench-serving-in-process-") as tmp:
            in_process_bench(tmp, args.online_events, 2_000, 500, requests=1000, passes=5)
        return 0
    if not args.skip_http:
        with tempfile.TemporaryDirectory(prefix="bench-serving-http-") as tmp:
            results = [r for kind in filter(None, args.http_stores.split(","))
                       for r in http_bench(kind, args.users, workers, args.duration, tmp, per_process,
                                           args.rounds)]
            if not args.skip_online:
                results += online_bench(workers, args.duration, tmp, args.online_events, 2_000, 500,
                                        per_process, args.rounds, variants)
            http_report(results, args.users)
    if args.skip_load:
        return 0

    pool = value_pool()
    encoded_pool = [encode_value(v) for v in pool]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        server = None
        if "redis" in args.stores:
            port = args.redis_port
            if port is None:
                server = _redis_server_class()(Path(tmp) / "redis").start()
                port = server.port
            try:  # three loads, three versions kept: no version is deleted inside a timed commit
                store = store_from_config(StoreSettings("redis", "bench", keep_versions=3,
                                                        batch_size=args.batch_size, options={"port": port}))
                results["redis"] = bench_store("redis", store, args.keys, pool, encoded_pool, args.lookups, port)
                results["baseline"] = redis_baseline(port, args.keys, encoded_pool, args.batch_size)
            finally:
                if server is not None:
                    server.stop()
        if "sqlite" in args.stores:
            store = store_from_config(StoreSettings("sqlite", "bench", keep_versions=3, batch_size=args.batch_size,
                                                    options={"path": str(Path(tmp) / "serving.sqlite")}))
            results["sqlite"] = bench_store("sqlite", store, args.keys, pool, encoded_pool, args.lookups)
            store.close()
    report(results, args.keys)
    return 0


def report(results: dict[str, dict[str, float]], n: int) -> None:
    print(f"serving bench: {n:,} keys, top-10 lists (~{len(encode_value(value_pool()[0]))} B JSON each); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'store':7} {'arrow keys/s':>12} {'per CPU s':>10} {'json keys/s':>12} {'per CPU s':>10} "
          f"{'objects keys/s':>15} {'per CPU s':>10} {'commit s':>9} {'get p50/p99 us':>15} {'mget100 p50/p99 us':>19}")
    for name in ("redis", "sqlite"):
        if name not in results:
            continue
        r = results[name]
        print(f"{name:7} {r['arrow_keys_per_s']:>12,.0f} {r['arrow_keys_per_cpu_s']:>10,.0f} "
              f"{r['json_keys_per_s']:>12,.0f} {r['json_keys_per_cpu_s']:>10,.0f} "
              f"{r['objects_keys_per_s']:>15,.0f} {r['objects_keys_per_cpu_s']:>10,.0f} {r['commit_s']:>9.2f} "
              f"{r['get_p50_us']:>7.0f}/{r['get_p99_us']:<7.0f} {r['get_many100_p50_us']:>9.0f}/"
              f"{r['get_many100_p99_us']:<9.0f}")
    print("(arrow: write_arrow of Arrow batches of JSON text, the path Spark loads take; json: write_batch of"
          " values already JSON; objects: Python values encoded by the store;"
          " per CPU s: keys per CPU second of client + server)")
    for name in ("redis", "sqlite"):
        if name in results:
            r = results[name]
            print(f"{name} load CPU per key: arrow client {r['arrow_client_us_per_key']:.2f} us, "
                  f"server {r['arrow_server_us_per_key']:.2f} us; json client {r['client_us_per_key']:.2f} us, "
                  f"server {r['server_us_per_key']:.2f} us")
    if "redis" in results:
        r, b = results["redis"], results["baseline"]
        print(f"plain redis-py MSET pipeline: {b['keys_per_s']:,.0f} keys/s, {b['keys_per_cpu_s']:,.0f} per CPU s "
              f"(client {b['client_us_per_key']:.2f} us, server {b['server_us_per_key']:.2f} us per key)")
        for label, field in (("wall", "arrow_keys_per_s"), ("CPU", "arrow_keys_per_cpu_s")):
            base = "keys_per_s" if label == "wall" else "keys_per_cpu_s"
            print(f"ratio redis arrow load / target {TARGET_KEYS_PER_S:,} keys/s ({label}): "
                  f"{r[field] / TARGET_KEYS_PER_S:.2f}   / plain MSET pipeline ({label}): {r[field] / b[base]:.2f}")
    if "redis" in results and "sqlite" in results:
        print(f"ratio sqlite / redis arrow load (CPU): "
              f"{results['sqlite']['arrow_keys_per_cpu_s'] / results['redis']['arrow_keys_per_cpu_s']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
