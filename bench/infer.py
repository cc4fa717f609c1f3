"""Bulk inference benchmark: Spark scoring paths against single-process predict, the serving
bulk load into Redis, and lookup latency of the HTTP API.

    .venv/bin/python bench/infer.py [--rows 1000000] [--cores 2] [--keys 300000] [--lookups 5000]

One run, one data set (``--rows`` x the 16 training features, 5% missing values, written once to
parquet and cached in Spark), one xgboost model (100 trees, depth 6, the training backend's
defaults) saved as an MLflow model.  Measured:

* single process: ``Booster.inplace_predict`` on the float32 matrix with one thread (rows/s per core);
* Spark ``lakeloop.infer.score`` (``mapInArrow``, model cached per worker, ``local[cores]``);
* ``mlflow.pyfunc.spark_udf(env_manager="local")`` on the same frame;
* a row-at-a-time Python UDF (per-worker cached booster) on a slice, extrapolated;
* Redis bulk load through the serving store (``begin_load``/``write_batch``/``commit_load``) of
  ``--keys`` top-10 lists already JSON (what ``to_json`` hands over);
* lookup latency of ``jobs/serve.py`` (a separate process) from this process: ``--lookups``
  requests of random known users, 4 client threads with keep-alive connections.

Spark figures are per core (rows/s divided by ``--cores``) and each Spark path is timed after one
warm-up pass (workers started, model loaded), best of ``--repeat`` passes.  All ratios compare
figures measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import numpy as np  # noqa: E402
from lakeloop import infer  # noqa: E402
from lakeloop_apps.recommender.model import FEATURES, KEYS  # noqa: E402

TARGET_VS_SINGLE = 0.85
TARGET_VS_SPARK_UDF = 3.0
TARGET_KEYS_PER_S = 300_000


def make_data(rows: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.05] = np.nan
    logit = x[:, 0] - 0.5 * x[:, 1] + np.nan_to_num(x[:, 4]) * np.nan_to_num(x[:, 8]) + 0.3 * x[:, 12]
    label = (rng.uniform(size=rows) < 1 / (1 + np.exp(-np.nan_to_num(logit)))).astype(np.int32)
    return x, label


def train_model(x: np.ndarray, label: np.ndarray, path: Path):
    import mlflow.xgboost
    import xgboost as xgb

    sample = slice(0, min(len(x), 200_000))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2},
                        xgb.DMatrix(x[sample], label=label[sample], feature_names=FEATURES), num_boost_round=100)
    mlflow.xgboost.save_model(booster, str(path), model_format="ubj")
    return booster, infer.model_ref("bench", "1", str(path))


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of process ``root`` and all its descendants (reaped children included), from /proc."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime
    family, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier and pid not in family]
        family.update(frontier)
    return sum(cpu.get(pid, 0.0) for pid in family)


class Measure:
    """Best wall time of ``repeat`` runs and the CPU seconds of that run (of ``pid``'s process tree)."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid

    def cpu(self) -> float:
        return tree_cpu(self.pid) if self.pid else time.process_time()

    def run(self, fn, repeat: int) -> tuple[float, float]:
        best = (float("inf"), float("inf"))
        for _ in range(repeat):
            c0, t0 = self.cpu(), time.perf_counter()
            fn()
            wall, cpu = time.perf_counter() - t0, self.cpu() - c0
            best = min(best, (wall, cpu))
        return best


def single_process(booster, x: np.ndarray, repeat: int) -> tuple[float, float]:
    booster.set_param({"nthread": 1})
    booster.inplace_predict(x[:1000])
    wall, cpu = Measure().run(lambda: booster.inplace_predict(x, validate_features=False), repeat)
    return len(x) / wall, len(x) / cpu


def spark_session(cores: int, batch: int):
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{cores}]").appName("bench-infer")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g").config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch))
             .config("spark.sql.shuffle.partitions", str(cores * 4)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_frame(spark, x: np.ndarray, directory: Path, partitions: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"user_id": pa.array(np.arange(len(x), dtype=np.int64)),
            "item_id": pa.array(np.arange(len(x), dtype=np.int64) % 1000)}
    cols.update({name: pa.array(x[:, j].astype(np.float64), from_pandas=True) for j, name in enumerate(FEATURES)})
    pq.write_table(pa.table(cols), directory / "features.parquet")
    df = spark.read.parquet(str(directory / "features.parquet")).repartition(partitions).cache()
    df.count()
    return df


def timed_write(df, rows: int, cores: int, repeat: int) -> tuple[float, float]:
    """(rows/s per core, rows per CPU second of the Spark JVM and its Python workers)."""
    run = lambda: df.write.format("noop").mode("overwrite").save()  # noqa: E731
    run()  # warm-up: workers started, model loaded and cached
    wall, cpu = Measure(df.sparkSession.sparkContext._gateway.proc.pid).run(run, repeat)
    return rows / wall / cores, rows / cpu


def spark_paths(spark, df, ref, rows: int, cores: int, repeat: int,
                row_udf_rows: int) -> dict[str, tuple[float, float]]:
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    out = {"mapInArrow": timed_write(infer.score(df, ref, FEATURES, KEYS), rows, cores, repeat),
           "floor": timed_write(exchange_floor(df), rows, cores, repeat)}
    pyfunc = mlflow.pyfunc.spark_udf(spark, ref.artifact_uri, result_type="double", env_manager="local")
    udf_frame = df.select("user_id", "item_id", pyfunc(F.struct(*FEATURES)).alias("score"))
    out["spark_udf"] = timed_write(udf_frame, rows, cores, repeat)
    row_udf = F.udf(_RowScorer(ref), "double")
    sliced = df.limit(row_udf_rows).repartition(cores).cache()
    sliced.count()
    out["row_udf"] = timed_write(sliced.select("user_id", row_udf(*FEATURES).alias("score")), row_udf_rows, cores, 1)
    return out


def exchange_floor(df):
    """``infer.score``'s frames through ``mapInArrow`` with a constant score: what the JVM <-> Python
    exchange costs before any model runs."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StructField, StructType

    def constant(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays([*(batch.column(c) for c in KEYS),
                                              pa.array(np.zeros(batch.num_rows))], [*KEYS, infer.SCORE])

    inputs = df.select(*KEYS, *[F.col(c).cast("double").alias(c) for c in FEATURES])
    schema = StructType([*(inputs.schema[c] for c in KEYS), StructField(infer.SCORE, DoubleType())])
    return inputs.mapInArrow(constant, schema)


class _RowScorer:
    """Row-at-a-time UDF body with the same per-worker model cache as the mapInArrow path."""

    def __init__(self, ref) -> None:
        self.ref = ref

    def __call__(self, *values: float | None) -> float:
        scorer, _ = infer.load_scorer(self.ref, FEATURES)
        row = np.array([[np.nan if v is None else v for v in values]], dtype=np.float32)
        return float(scorer(row)[0])


def redis_load(keys: int) -> tuple[float, int]:
    from lakeloop.serving import StoreSettings, store_from_config

    from tests.redis_server import RedisServer

    rng = np.random.default_rng(5)
    pool = [json.dumps([{"item_id": int(i), "score": round(float(s), 6)}
                        for i, s in zip(rng.integers(0, 100_000, 10), rng.uniform(size=10), strict=True)]).encode()
            for _ in range(10_000)]
    server = RedisServer().start()
    store = store_from_config(StoreSettings("redis", "bench", options={"host": server.host, "port": server.port}))
    import pyarrow as pa

    texts = [v.decode() for v in pool]
    # Arrow batches of user ids and JSON text, as load_dataframe's mapInArrow tasks receive them
    batches = [(pa.array(range(o, min(o + 10_000, keys)), pa.int64()),
                pa.array([texts[u % len(texts)] for u in range(o, min(o + 10_000, keys))]))
               for o in range(0, keys, 10_000)]
    store.begin_load("v1")
    c0, t0 = time.process_time() + redis_cpu(server), time.perf_counter()
    for users, values in batches:
        store.write_arrow("v1", users, values)
    store.commit_load("v1", keys)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() + redis_cpu(server) - c0
    return (keys / elapsed, keys / cpu), server


def redis_cpu(server) -> float:
    import redis

    info = redis.Redis(host=server.host, port=server.port).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def lookup_latency(server, keys: int, lookups: int, threads: int = 4) -> dict[str, float]:
    from lakeloop_apps.recommender.serving import RecommenderClient

    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "serve.py"), "--port", "0",
                             "--set", "serving.store=redis", "--set", f"serving.redis.port={server.port}",
                             "--set", "serving.namespace=bench", "--set", "warehouse=/tmp", "--set", "landing=/tmp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        latencies: list[float] = []
        lock = threading.Lock()

        def worker(seed: int) -> None:
            rng = np.random.default_rng(seed)
            mine = []
            with RecommenderClient("127.0.0.1", port) as client:
                for user in rng.integers(0, keys, lookups // threads):
                    t0 = time.perf_counter()
                    status, _ = client.recommendations(int(user))
                    mine.append(time.perf_counter() - t0)
                    assert status == 200, status
            with lock:
                latencies.extend(mine)

        pool = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "requests_per_s": len(latencies) / wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--batch", type=int, default=10_000, help="Arrow batch size (infer.batch_size)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--row-udf-rows", type=int, default=20_000)
    p.add_argument("--keys", type=int, default=300_000)
    p.add_argument("--lookups", type=int, default=5_000)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        x, label = make_data(args.rows)
        booster, ref = train_model(x, label, Path(tmp) / "model")
        single = single_process(booster, x, args.repeat)
        spark = spark_session(args.cores, args.batch)
        df = spark_frame(spark, x, Path(tmp), args.cores * 4)
        paths = spark_paths(spark, df, ref, args.rows, args.cores, args.repeat, args.row_udf_rows)
        spark.stop()
        keys_per_s, server = redis_load(args.keys)
        try:
            latency = lookup_latency(server, args.keys, args.lookups)
        finally:
            server.stop()

    print(f"rows={args.rows} features={len(FEATURES)} cores={args.cores} batch={args.batch} "
          f"(load average {os.getloadavg()[0]:.1f}; wall rows/s per core, and rows per CPU second of all "
          "the processes doing the work)")
    print(f"single process inplace_predict, 1 thread: {single[0]:12,.0f} rows/s per core {single[1]:12,.0f} rows/cpu-s")
    for name, (wall, cpu) in paths.items():
        if name == "floor":
            continue
        print(f"spark {name:<11} local[{args.cores}]:         {wall:12,.0f} rows/s per core {cpu:12,.0f} rows/cpu-s")
    ratios = {
        "mapInArrow / single process": (paths["mapInArrow"], single, TARGET_VS_SINGLE),
        "mapInArrow / spark_udf": (paths["mapInArrow"], paths["spark_udf"], TARGET_VS_SPARK_UDF),
        "mapInArrow / row UDF": (paths["mapInArrow"], paths["row_udf"], None),
    }
    for name, (num, den, target) in ratios.items():
        wall, cpu = num[0] / den[0], num[1] / den[1]
        verdict = "" if target is None else f"  target >= {target}: {'met' if cpu >= target else 'MISSED'} (cpu)"
        print(f"{name:<30} wall {wall:8.2f}x  cpu {cpu:8.2f}x{verdict}")
    floor_us, predict_us = 1e6 / paths["floor"][1], 1e6 / single[1]
    print(f"exchange floor (constant model): {floor_us:.2f} us CPU per row; predict alone {predict_us:.2f} us; "
          f"so mapInArrow / single process cannot pass {predict_us / (floor_us + predict_us):.2f}x (cpu) "
          "with this model")
    print(f"redis bulk load through the store: {keys_per_s[0]:,.0f} keys/s wall, {keys_per_s[1]:,.0f} keys/cpu-s "
          f"(client + server)  target >= {TARGET_KEYS_PER_S:,}: "
          f"{'met' if keys_per_s[0] >= TARGET_KEYS_PER_S else 'MISSED'} (wall)")
    print(f"lookup API (jobs/serve.py, redis), {args.lookups} requests, 4 keep-alive clients: "
          f"p50 {latency['p50_ms']:.2f} ms  p99 {latency['p99_ms']:.2f} ms  {latency['requests_per_s']:,.0f} req/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
