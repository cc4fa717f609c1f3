"""Serving store benchmark: bulk-load throughput and lookup latency, Redis and SQLite.

    .venv/bin/python bench/serving.py [--keys 1000000] [--lookups 20000]

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
POOL = 10_000  # distinct values, cycled, so the benchmark does not hold 1M Python objects


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
    """Plain redis-py: pipelined MSET, transaction=False, no versioning, counting or checks."""
    import redis

    client = redis.Redis(port=port)
    meter = Meter(port)
    with meter:
        pipe = client.pipeline(transaction=False)
        for offset in range(0, n, batch):
            pipe.mset({f"baseline:user{i}": encoded_pool[i % len(encoded_pool)]
                       for i in range(offset, min(offset + batch, n))})
            if (offset // batch) % 8 == 7:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--lookups", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--redis-port", type=int, default=None, help="use this running redis-server on 127.0.0.1")
    p.add_argument("--stores", default="redis,sqlite")
    p.add_argument("--reader", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reader:
        print(json.dumps(read_latency(json.loads(args.reader[0]), int(args.reader[1]), int(args.reader[2]))))
        return 0

    pool = value_pool()
    encoded_pool = [encode_value(v) for v in pool]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        server = None
        if "redis" in args.stores:
            port = args.redis_port
            if port is None:
                from tests.redis_server import RedisServer

                server = RedisServer(Path(tmp) / "redis").start()
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
