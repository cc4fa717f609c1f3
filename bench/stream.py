"""Benchmark: the speed layer on this machine, in one run.

    .venv/bin/python bench/stream.py --events 100000 --files 20

1. Sustained throughput: ``--events`` generated events landed at once (one day, 4 files), processed
   by ``run_stream(trigger="availableNow")``: the bronze query alone, then the realtime query alone,
   then both side by side over a fresh copy of the files (what a cron run does); events/s of each,
   and the ratio of the bronze query's time to batch ingest (``ingest_source``) of the same files.
   Both paths are first warmed up once on a small day in the same session (JIT, code generation),
   so that neither pays the session's first-use costs for the other; the warm-up times are printed.
2. Freshness: with both queries running on a ``processingTime`` trigger (``--interval``), ``--files``
   small event files are landed one at a time, each the only events of a new user; the time from the
   file's rename into landing to that user's real-time view appearing in the serving store is
   measured.  Prints p50/p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers (the lakeloop_delta source) import lakeloop

from lakeloop.conf import load_conf  # noqa: E402
from lakeloop.datagen import generate_day  # noqa: E402
from lakeloop.ingest import ingest_source  # noqa: E402
from lakeloop.serving import open_store  # noqa: E402
from lakeloop.streaming import run_stream  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-11-01"


def session() -> SparkSession:
    spark = (SparkSession.builder.master("local[2]").appName("bench-stream")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.sql.session.timeZone", "UTC").config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def conf_at(root: Path, **extra: object):
    overrides = [f"warehouse={root / 'warehouse'}", f"landing={root / 'landing'}"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_conf("local", overrides, conf_dir=ROOT / "conf")


def _land_day(landing: Path, events: int, date: str = DATE) -> None:
    generate_day(landing, date, events=events, users=max(50, events // 100), items=300, seed=7, bad_fraction=0.02,
                 parts=4)


def warm_up(spark: SparkSession, root: Path, events: int = 500) -> dict[str, float]:
    """One small run of the stream and of batch ingest, so that neither measured run is the first."""
    stream_root, batch_root = root / "warmup-stream", root / "warmup-batch"
    _land_day(stream_root / "landing", events)
    shutil.copytree(stream_root / "landing", batch_root / "landing")
    start = time.perf_counter()
    run_stream(spark, conf_at(stream_root), "events", trigger="availableNow")
    stream_s = time.perf_counter() - start
    start = time.perf_counter()
    ingest_source(spark, conf_at(batch_root), "events", DATE)
    return {"events": events, "stream_s": stream_s, "batch_ingest_s": time.perf_counter() - start}


def throughput(spark: SparkSession, root: Path, events: int) -> dict[str, float]:
    stream_root, batch_root, both_root = root / "throughput-stream", root / "throughput-batch", root / "throughput-both"
    _land_day(stream_root / "landing", events)
    shutil.copytree(stream_root / "landing", batch_root / "landing")
    shutil.copytree(stream_root / "landing", both_root / "landing")
    conf = conf_at(stream_root)

    start = time.perf_counter()
    bronze_only = run_stream(spark, conf, "events", trigger="availableNow", realtime=False)
    bronze_s = time.perf_counter() - start
    start = time.perf_counter()
    run_stream(spark, conf, "events", trigger="availableNow")  # bronze has nothing new: the realtime query
    realtime_s = time.perf_counter() - start

    start = time.perf_counter()
    batch = ingest_source(spark, conf_at(batch_root), "events", DATE)
    batch_s = time.perf_counter() - start

    start = time.perf_counter()
    both = run_stream(spark, conf_at(both_root), "events", trigger="availableNow")
    both_s = time.perf_counter() - start
    assert batch.rows == bronze_only.bronze.rows == both.bronze.rows == events, (batch.rows, bronze_only.bronze.rows)
    return {"events": events, "bronze_s": bronze_s, "bronze_events_per_s": events / bronze_s,
            "realtime_s": realtime_s, "realtime_events_per_s": events / realtime_s,
            "both_queries_s": both_s, "end_to_end_events_per_s": events / both_s,
            "batch_ingest_s": batch_s, "stream_bronze_vs_batch_ingest": bronze_s / batch_s}


def _event_file(folder: Path, n: int, user: int, now: dt.datetime) -> Path:
    """Land ``n`` view events of ``user`` at ``now`` atomically (write hidden, rename)."""
    ts = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [json.dumps({"event_id": f"e{user * 1000 + i:016x}", "user_id": user, "item_id": 1 + i % 50,
                         "type": "view", "ts": ts}) for i in range(n)]
    tmp = folder / f".part-{user}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    final = folder / f"part-{user}.jsonl"
    tmp.rename(final)
    return final


def freshness(spark: SparkSession, root: Path, files: int, interval: str, per_file: int) -> dict[str, float]:
    now = dt.datetime.now(dt.UTC)
    base = root / "freshness"
    folder = base / "landing" / "events" / f"dt={now.date().isoformat()}"
    folder.mkdir(parents=True)
    conf = conf_at(base, **{"stream.interval": interval})
    stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            run_stream(spark, conf, "events", trigger="processingTime", stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    runner = threading.Thread(target=serve, daemon=True)
    runner.start()
    store = open_store(conf)
    # warm-up file: both queries have started and compiled their plans
    _event_file(folder, per_file, 9_000_000, now)
    _wait(store, 9_000_000, failure, 600)
    latencies = []
    for i in range(files):
        user = 9_000_001 + i
        landed = time.perf_counter()
        _event_file(folder, per_file, user, dt.datetime.now(dt.UTC))
        latencies.append(_wait(store, user, failure, 300) - landed)
    stop.set()
    runner.join(600)
    store.close()
    latencies.sort()
    return {"files": files, "events_per_file": per_file, "interval": interval,
            "p50_s": statistics.median(latencies),
            "p99_s": latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))],
            "max_s": latencies[-1]}


def _wait(store, user: int, failure: list, timeout: float) -> float:
    """When ``user`` appears in the real-time view (perf_counter seconds)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if failure:
            raise failure[0]
        if store.get_realtime(user) is not None:
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(f"user {user} never reached the real-time view")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--files", type=int, default=20, help="files landed one by one for the freshness figures")
    p.add_argument("--per-file", type=int, default=50, help="events per freshness file")
    p.add_argument("--interval", default="1 second")
    args = p.parse_args()
    spark = session()
    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        # each phase is printed as soon as it is measured
        print(json.dumps({"warm_up": warm_up(spark, root)}, indent=2), flush=True)
        print(json.dumps({"throughput": throughput(spark, root, args.events)}, indent=2), flush=True)
        print(json.dumps({"freshness": freshness(spark, root, args.files, args.interval, args.per_file)}, indent=2),
              flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
