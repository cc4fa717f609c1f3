"""Bulk inference benchmark: Spark scoring paths against single-process predict, the serving
bulk load into Redis, and lookup latency of the HTTP API.

    .venv/bin/python bench/infer.py [--rows 1000000] [--cores 2] [--repeat 5] [--keys 300000] [--lookup-seconds 3]

One run, one data set (``--rows`` x the 16 training features, 5% missing values) written once as a Delta
table of ``4 x --cores`` parquet files (the run date's partition of a scoring frame on disk), one xgboost
model (100 trees, depth 6, the training backend's defaults) saved as an MLflow model.  Every path reads
those same files:

* single process, one thread: pyarrow reads the files (keys and features), ``lakeloop.infer.feature_matrix``
  converts each batch, ``Booster.inplace_predict`` scores it (read + convert + predict; nothing written);
* file path (``lakeloop.score_files.write_scored``, what ``infer`` does for a ``features: rows`` table):
  Spark tasks read the files with pyarrow, score, write prediction files, the driver commits them to Delta;
* Spark ``lakeloop.infer.score`` (``mapInArrow``) over the table read by Spark, to the ``noop`` sink;
* ``mlflow.pyfunc.spark_udf(env_manager="local")`` on the same frame, to the ``noop`` sink;
* a constant model through ``mapInArrow`` (the JVM <-> Python exchange and the per-task cost, heap frozen);
* a row-at-a-time Python UDF (per-worker cached booster) on a cached slice, extrapolated;
* Redis bulk load through the serving store (``begin_load``/``write_arrow``/``commit_load``) of
  ``--keys`` top-10 lists already JSON, the Arrow batches built before the clock starts;
* lookup latency of ``jobs/serve.py`` (a separate process): random known users for ``--lookup-seconds`` per
  round, 4 keep-alive clients, each a process of its own (``bench/serving.py``'s client).

Each path runs once to warm up (workers started, model loaded, JIT compiling), then ``--repeat`` times
(at least 3); the figures are the median, with the spread (lowest..highest) of the repeats.  Spark figures
are per core (rows/s divided by ``--cores``); CPU figures count the JVM, its Python workers and this
(driver) process.  All ratios compare figures measured in this one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from checkout import ROOT, tests_module  # noqa: E402, F401 - first: this checkout's lakeloop, also in the workers
from lakeloop import infer, score_files, scoring  # noqa: E402
from lakeloop_apps.recommender.model import FEATURES, KEYS  # noqa: E402

TARGET_VS_SINGLE = 0.85
TARGET_VS_SPARK_UDF = 3.0
TARGET_KEYS_PER_S = 300_000
DAY = dt.date(2026, 11, 22)
FRAME = "gold.bench_scoring_frame"


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


class Figure:
    """Rows per second per core (wall) and rows per CPU second of ``repeat`` timed runs after a warm-up."""

    def __init__(self, rows: int, cores: int, walls: list[float], cpus: list[float]) -> None:
        self.per_core = [rows / w / cores for w in walls]
        self.per_cpu = [rows / c for c in cpus]

    @property
    def wall(self) -> float:
        return statistics.median(self.per_core)

    @property
    def cpu(self) -> float:
        return statistics.median(self.per_cpu)

    @staticmethod
    def spread(values: list[float]) -> str:
        return f"{min(values):,.0f}..{max(values):,.0f}"


def measure(fn, rows: int, cores: int, repeat: int, pid: int | None = None) -> Figure:
    """``fn`` once to warm up, then ``repeat`` timed runs; CPU of this process plus ``pid``'s process tree."""
    cpu = (lambda: tree_cpu(pid) + time.process_time()) if pid else time.process_time
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
    return Figure(rows, cores, walls, cpus)


def single_process(booster, files: list[str], rows: int, batch: int, repeat: int) -> Figure:
    """Read the files with pyarrow, convert each batch to the model's matrix, predict: one thread."""
    import pyarrow.parquet as pq

    booster.set_param({"nthread": 1})

    def run() -> None:
        for path in files:
            for part in pq.ParquetFile(path).iter_batches(batch, columns=[*KEYS, *FEATURES]):
                booster.inplace_predict(infer.feature_matrix(part, FEATURES), validate_features=False)

    return measure(run, rows, 1, repeat)


def spark_session(cores: int, batch: int):
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{cores}]").appName("bench-infer")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g").config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch))
             .config("spark.sql.shuffle.partitions", str(cores * 4)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def bench_conf(tmp: Path, batch: int):
    from lakeloop.conf import load_conf

    return load_conf("local", [f"warehouse={tmp / 'warehouse'}", f"landing={tmp / 'landing'}",
                               "infer.table=gold.bench_predictions", f"infer.batch_size={batch}",
                               "train.task=binary"], conf_dir=ROOT / "conf")


def bench_spec() -> scoring.ScoringSpec:
    """What a model spec with ``rows: {table: FRAME}``, ``features: rows`` declares."""
    return scoring.ScoringSpec(origin="bench", rows=scoring.RowsSpec("table", FRAME),
                               serving=scoring.ServingSpec(KEYS[0], "score"), features="rows")


def write_frame(spark, conf, x: np.ndarray, tmp: Path, files: int) -> None:
    """The run date's partition of the scoring frame on disk: keys and the features as doubles, ``files`` files."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from lakeloop.lake import Lake

    cols = {"user_id": pa.array(np.arange(len(x), dtype=np.int64)),
            "item_id": pa.array(np.arange(len(x), dtype=np.int64) % 1000)}
    cols.update({name: pa.array(x[:, j].astype(np.float64), from_pandas=True) for j, name in enumerate(FEATURES)})
    pq.write_table(pa.table(cols), tmp / "features.parquet")
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(tmp / "features.parquet")).withColumn("dt", F.lit(DAY.isoformat()))
    lake = Lake.from_conf(conf)
    lake.write(frame.repartition(files), lake.uri(FRAME), mode="overwrite", partition_by=["dt"])


def spark_paths(spark, conf, ref, rows: int, cores: int, repeat: int,
                row_udf_rows: int) -> dict[str, Figure]:
    import mlflow.pyfunc
    from lakeloop.lake import Lake
    from pyspark.sql import functions as F

    lake, pid = Lake.from_conf(conf), spark.sparkContext._gateway.proc.pid
    df = lake.read(spark, FRAME, where=f"dt = '{DAY.isoformat()}'")
    source = score_files.table_source(conf, bench_spec(), ref, DAY)[0]
    loads = spark.sparkContext.accumulator(0)

    def files() -> None:
        score_files.write_scored(spark, conf, bench_spec(), DAY, ref, loads, source, FEATURES, KEYS,
                                 infer.run_columns(ref, "bench"))

    def noop(frame):
        return lambda: frame.write.format("noop").mode("overwrite").save()

    out = {"file path": measure(files, rows, cores, repeat, pid),
           "mapInArrow": measure(noop(infer.score(df, ref, FEATURES, KEYS)), rows, cores, repeat, pid),
           "constant model": measure(noop(constant_model(df)), rows, cores, repeat, pid)}
    pyfunc = mlflow.pyfunc.spark_udf(spark, ref.artifact_uri, result_type="double", env_manager="local")
    udf_frame = df.select("user_id", "item_id", pyfunc(F.struct(*FEATURES)).alias("score"))
    out["spark_udf"] = measure(noop(udf_frame), rows, cores, repeat, pid)
    row_udf = F.udf(_RowScorer(ref), "double")
    sliced = df.limit(row_udf_rows).repartition(cores).cache()
    sliced.count()
    out["row UDF"] = measure(noop(sliced.select("user_id", row_udf(*FEATURES).alias("score"))), row_udf_rows,
                             cores, max(3, repeat // 2), pid)
    return out


class _Constant:
    """A model that outputs zeros, in a worker whose heap is frozen as a scoring worker's is."""

    def __call__(self, batches):
        import gc

        import pyarrow as pa

        gc.freeze()
        for batch in batches:
            yield pa.RecordBatch.from_arrays([*(batch.column(c) for c in KEYS), pa.array(np.zeros(batch.num_rows))],
                                             [*KEYS, infer.SCORE])


def constant_model(df):
    """``infer.score``'s frame through ``mapInArrow`` with a constant score: what the JVM <-> Python exchange
    and the per-task cost come to before any model runs."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StructField, StructType

    inputs = df.select(*KEYS, *[F.col(c).cast("double").alias(c) for c in FEATURES])
    schema = StructType([*(inputs.schema[c] for c in KEYS), StructField(infer.SCORE, DoubleType())])
    return inputs.mapInArrow(_Constant(), schema)


class _RowScorer:
    """Row-at-a-time UDF body with the same per-worker model cache as the mapInArrow path."""

    def __init__(self, ref) -> None:
        self.ref = ref

    def __call__(self, *values: float | None) -> float:
        scorer, _ = infer.load_scorer(self.ref, FEATURES)
        row = np.array([[np.nan if v is None else v for v in values]], dtype=np.float32)
        return float(scorer(row)[0])


def redis_load(keys: int, repeat: int) -> tuple[Figure, object]:
    """Keys per second (wall) and per CPU second of client and server of ``repeat`` loads after a warm-up."""
    import pyarrow as pa
    from lakeloop.serving import StoreSettings, store_from_config

    rng = np.random.default_rng(5)
    pool = [json.dumps([{"item_id": int(i), "score": round(float(s), 6)}
                        for i, s in zip(rng.integers(0, 100_000, 10), rng.uniform(size=10), strict=True)])
            for _ in range(10_000)]
    server = tests_module("redis_server").RedisServer().start()
    # Arrow batches of user ids and JSON text, as load_dataframe's mapInArrow tasks receive them
    batches = [(pa.array(range(o, min(o + 10_000, keys)), pa.int64()),
                pa.array([pool[u % len(pool)] for u in range(o, min(o + 10_000, keys))]))
               for o in range(0, keys, 10_000)]
    # one namespace per load, so that no load deletes an older version (serving.keep_versions) on the clock;
    # the last one is the one the lookups read
    namespaces = iter(["bench-warm-up", *(f"bench-{i}" for i in range(1, repeat)), "bench"])

    def load() -> None:
        store = store_from_config(StoreSettings("redis", next(namespaces),
                                                options={"host": server.host, "port": server.port}))
        store.begin_load("v1")
        for users, values in batches:
            store.write_arrow("v1", users, values)
        store.commit_load("v1", keys)

    walls, cpus = [], []
    load()
    for _ in range(repeat):
        c0, t0 = time.process_time() + redis_cpu(server), time.perf_counter()
        load()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() + redis_cpu(server) - c0)
    return Figure(keys, 1, walls, cpus), server


def redis_cpu(server) -> float:
    import redis

    info = redis.Redis(host=server.host, port=server.port).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def lookup_latency(server, keys: int, seconds: float, repeat: int, clients: int = 4) -> dict[str, list[float]]:
    """p50, p99 (ms) and requests/s of ``repeat`` rounds of ``seconds`` each (after a one-second warm-up),
    ``clients`` keep-alive clients, each a process of its own (``bench/serving.py``'s client), none in the
    benchmark's process or GIL."""
    from serving import run_clients

    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "serve.py"), "--port", "0",
                             "--set", "serving.store=redis", "--set", f"serving.redis.port={server.port}",
                             "--set", "serving.namespace=bench", "--set", "warehouse=/tmp", "--set", "landing=/tmp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    rounds: dict[str, list[float]] = {"p50_ms": [], "p99_ms": [], "requests_per_s": []}
    spec = {"kind": "lookup", "users": list(range(keys)), "keys": 1}
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        for _ in range(repeat):
            got = run_clients(port, clients, spec, seconds)
            if got["errors"]:
                raise RuntimeError(f"{got['errors']} lookups failed")
            rounds["p50_ms"].append(got["p50_ms"])
            rounds["p99_ms"].append(got["p99_ms"])
            rounds["requests_per_s"].append(got["req_per_s"])
    finally:
        proc.terminate()
        proc.wait(10)
    return rounds


def report(args, single: Figure, paths: dict[str, Figure], redis: Figure, latency: dict[str, list[float]],
           loads: tuple[float, float]) -> None:
    print(f"rows={args.rows} features={len(FEATURES)} cores={args.cores} batch={args.batch} files={args.cores * 4} "
          f"repeat={args.repeat} after a warm-up (load average {loads[0]:.2f} before, {loads[1]:.2f} after); "
          "median, with lowest..highest of the repeats")
    print(f"{'path':<52} {'rows/s per core (wall)':>24} {'spread':>22} {'rows per CPU s':>16} {'spread':>22}")
    for name, fig in [("single process (read + convert + predict, 1 thread)", single),
                      *((f"spark {n} local[{args.cores}]", f) for n, f in paths.items())]:
        print(f"{name:<52} {fig.wall:>24,.0f} {Figure.spread(fig.per_core):>22} {fig.cpu:>16,.0f} "
              f"{Figure.spread(fig.per_cpu):>22}")
    ratios = [("file path / single process", paths["file path"], single, TARGET_VS_SINGLE),
              ("file path / spark_udf", paths["file path"], paths["spark_udf"], TARGET_VS_SPARK_UDF),
              ("file path / mapInArrow", paths["file path"], paths["mapInArrow"], None),
              ("mapInArrow / single process", paths["mapInArrow"], single, TARGET_VS_SINGLE),
              ("mapInArrow / spark_udf", paths["mapInArrow"], paths["spark_udf"], TARGET_VS_SPARK_UDF),
              ("mapInArrow / row UDF", paths["mapInArrow"], paths["row UDF"], None)]
    for name, num, den, target in ratios:
        wall, cpu = num.wall / den.wall, num.cpu / den.cpu
        verdict = "" if target is None else (f"  target >= {target}: wall {'met' if wall >= target else 'MISSED'}, "
                                             f"cpu {'met' if cpu >= target else 'MISSED'}")
        print(f"{name:<30} wall {wall:6.2f}x  cpu {cpu:6.2f}x{verdict}")
    constant_us, predict_us = 1e6 / paths["constant model"].cpu, 1e6 / single.cpu
    print(f"constant model through mapInArrow: {constant_us:.2f} us CPU per row (JVM read + exchange + per-task "
          f"cost, heap frozen); single process read + convert + predict: {predict_us:.2f} us CPU per row")
    print(f"redis bulk load through the store: {redis.wall:,.0f} keys/s wall ({Figure.spread(redis.per_core)}), "
          f"{redis.cpu:,.0f} keys/cpu-s (client + server)  target >= {TARGET_KEYS_PER_S:,}: "
          f"{'met' if redis.wall >= TARGET_KEYS_PER_S else 'MISSED'} (wall)")
    med = {k: statistics.median(v) for k, v in latency.items()}
    spread = {k: f"{min(v):.2f}..{max(v):.2f}" for k, v in latency.items()}
    print(f"lookup API (jobs/serve.py, redis), {args.repeat} rounds of {args.lookup_seconds:g} s, 4 keep-alive "
          f"clients in processes of their own: p50 {med['p50_ms']:.2f} ms ({spread['p50_ms']})  "
          f"p99 {med['p99_ms']:.2f} ms ({spread['p99_ms']})  {med['requests_per_s']:,.0f} req/s "
          f"({min(latency['requests_per_s']):,.0f}..{max(latency['requests_per_s']):,.0f})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--batch", type=int, default=10_000, help="Arrow batch size (infer.batch_size)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs after the warm-up (at least 3)")
    p.add_argument("--row-udf-rows", type=int, default=20_000)
    p.add_argument("--keys", type=int, default=300_000)
    p.add_argument("--lookup-seconds", type=float, default=3.0, help="seconds of each lookup round")
    args = p.parse_args()
    if args.repeat < 3:
        p.error("--repeat: at least 3 (a median and a spread)")

    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        x, label = make_data(args.rows)
        booster, ref = train_model(x, label, Path(tmp) / "model")
        conf = bench_conf(Path(tmp), args.batch)
        spark = spark_session(args.cores, args.batch)
        write_frame(spark, conf, x, Path(tmp), args.cores * 4)
        del x, label
        source = score_files.table_source(conf, bench_spec(), ref, DAY)[0]
        files = [source.loc.fs_join(e.path) for e in source.entries]
        single = single_process(booster, files, args.rows, args.batch, args.repeat)
        paths = spark_paths(spark, conf, ref, args.rows, args.cores, args.repeat, args.row_udf_rows)
        spark.stop()
        redis, server = redis_load(args.keys, args.repeat)
        try:
            latency = lookup_latency(server, args.keys, args.lookup_seconds, args.repeat)
        finally:
            server.stop()
    report(args, single, paths, redis, latency, (before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
