"""GPU resource scheduling without GPUs: a separate Spark application on ``local-cluster[2,1,1024]``
whose two workers each discover one fake GPU (tests/fake_gpus.sh), with the GPU settings coming
from lakeloop's conf (``gpu.enabled``).  Every task must see its own GPU address and build its
device configuration from exactly that address; tuning trials must pin the scheduled GPU.

The application runs in a subprocess because the test suite's shared session is ``local[2]``
and a SparkContext cannot be reconfigured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lakeloop.train import gpu

ROOT = Path(__file__).resolve().parents[1]
FAKE_GPUS = ROOT / "tests" / "fake_gpus.sh"

CHILD = r'''
import json, sys, time, datetime as dt
import numpy as np
from pyspark import BarrierTaskContext, TaskContext
from lakeloop.conf import load_conf
from lakeloop.session import RunContext, build_session
from lakeloop.train import gpu, tuning
from lakeloop.train.base import TrainingData, get_backend

script, warehouse, out = sys.argv[1:4]
conf = load_conf("local", [
    "spark.master=local-cluster[2,1,1024]", "spark.executor.memory=512m", "spark.driver.memory=1g",
    "spark.executor.cores=1", "spark.scheduler.mode=FIFO", "spark.ui.enabled=false",
    "gpu.enabled=true", "gpu.executor_amount=1", "gpu.task_amount=1", f"gpu.discovery_script={script}",
    "spark.extra.spark.worker.resource.gpu.amount=1",
    f"spark.extra.spark.worker.resource.gpu.discoveryScript={script}",
    f"warehouse={warehouse}", f"landing={warehouse}/landing"])
spark = build_session(RunContext("gpu-test", conf, dt.date(2026, 11, 10)))
sc = spark.sparkContext
deadline = time.time() + 180
while sc._jsc.sc().getExecutorMemoryStatus().size() < 3:  # driver + 2 executors
    if time.time() > deadline:
        raise SystemExit("executors did not register")
    time.sleep(0.5)
backend = get_backend("xgboost")

def probe(_):
    ctx = BarrierTaskContext.get()
    ctx.barrier()  # both tasks run at the same time, so they hold different executors
    from xgboost.spark.utils import _get_gpu_id
    addresses = gpu.task_gpu_addresses()
    yield {"partition": ctx.partitionId(), "addresses": addresses,
           "xgboost_params": backend.device_params(gpu.task_device()),
           "xgboost_spark_gpu_id": _get_gpu_id(ctx), "torch": gpu.torch_device(),
           "tensorflow": gpu.tensorflow_env()}

tasks = sc.parallelize(range(2), 2).barrier().mapPartitions(probe).collect()
rng = np.random.default_rng(0)
rows = [(float(x), float(y), int(x + y + rng.normal() > 1)) for x, y in rng.uniform(size=(200, 2))]
frame = spark.createDataFrame(rows, "a double, b double, label int")
data = TrainingData(train=frame, valid=frame, features=["a", "b"])
trials = tuning.run_trials(spark, backend, data, {"n_estimators": 3, "random_state": 0},
                           [{"max_depth": 2}, {"max_depth": 3}], metric="auc", sample_rows=1000, seed=1)
json.dump({"tasks": tasks, "trials": [t.device for t in trials],
           "task_amount": sc.getConf().get("spark.task.resource.gpu.amount"),
           "executor_amount": sc.getConf().get("spark.executor.resource.gpu.amount")}, open(out, "w"))
spark.stop()
'''


def test_helpers_without_gpus_run_on_cpu():
    assert gpu.task_gpu_addresses() == []  # the driver is not a task
    assert gpu.task_device() == "cpu"
    assert gpu.xgboost_params() == {"device": "cpu"}
    assert gpu.torch_device([]) == "cpu"
    assert gpu.tensorflow_env([]) == {"CUDA_VISIBLE_DEVICES": ""}


def test_helpers_pin_the_given_address():
    assert gpu.task_device(["3"]) == "cuda:3"
    assert gpu.xgboost_params([" 1"]) == {"device": "cuda:1"}
    assert gpu.torch_device(["2", "5"]) == "cuda:2"
    assert gpu.tensorflow_env(["2", "5"]) == {"CUDA_VISIBLE_DEVICES": "2,5"}
    with pytest.raises(ValueError, match="not a device ordinal"):
        gpu.task_device(["GPU-1f2e"])


def test_fake_discovery_script_hands_out_distinct_addresses(tmp_path):
    env = {**os.environ, "FAKE_GPU_STATE_DIR": str(tmp_path / "claims")}
    first, second = (json.loads(subprocess.check_output([str(FAKE_GPUS)], env=env)) for _ in range(2))
    assert first == {"name": "gpu", "addresses": ["0"]}
    assert second == {"name": "gpu", "addresses": ["1"]}


@pytest.mark.slow
def test_each_task_pins_its_own_scheduled_gpu(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "FAKE_GPU_STATE_DIR": str(tmp_path / "claims"), "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(FAKE_GPUS), str(tmp_path / "wh"), str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["executor_amount"] == "1" and result["task_amount"] == "1"
    tasks = sorted(result["tasks"], key=lambda t: t["partition"])
    addresses = [t["addresses"] for t in tasks]
    assert sorted(a for (a,) in addresses) == ["0", "1"], addresses  # one GPU each, all distinct
    for task in tasks:
        (address,) = task["addresses"]
        assert task["xgboost_params"] == {"device": f"cuda:{address}"}
        assert task["xgboost_spark_gpu_id"] == int(address)  # what xgboost.spark itself would pin
        assert task["torch"] == f"cuda:{address}"
        assert task["tensorflow"] == {"CUDA_VISIBLE_DEVICES": address}
    # tuning trials ran in GPU-scheduled tasks and pinned a scheduled device, never the CPU default
    assert len(result["trials"]) == 2
    assert set(result["trials"]) <= {"cuda:0", "cuda:1"}
